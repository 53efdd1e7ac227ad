"""Azure Monitor's metrics API for container groups (``Microsoft.Insights/metrics`` and ``metricDefinitions``).

Wire-compatible with what ``az monitor metrics list`` (api-version 2018-01-01) and azure-mgmt-monitor
(2024-02-01) send and parse: ``metricnames``, ``timespan``, ``interval`` (or FULL), ``aggregation``,
``$filter`` on ``containerName``, ``top``, ``orderby``, ``resultType``, ``metricnamespace``,
``AutoAdjustTimegrain``, ``ValidateDimensions``. See docs/api.md ("Metrics").
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request

from corral.api.deps import api_version, service
from corral.api.groups import P
from corral.api.render import group_id
from corral.control.groups import GroupService
from corral.control.metrics.definitions import CONTAINER_NAME, DEFINITIONS, NAMESPACE, MetricDefinition
from corral.control.metrics.history import MetricsHistory
from corral.control.metrics.query import (
    GRAINS,
    HistoryReader,
    bucket_starts,
    format_duration,
    format_time,
    parse_aggregations,
    parse_filter,
    parse_interval,
    parse_metric_names,
    parse_orderby,
    parse_timespan,
    parse_top,
    read_buckets,
    timeseries,
)
from corral.control.metrics.rollups import HOUR, HOUR_RETENTION, MINUTE_RETENTION
from corral.errors import InvalidMetricQuery

router = APIRouter(dependencies=[Depends(api_version)])

INSIGHTS = "/providers/Microsoft.Insights"


def _params(request: Request) -> dict[str, str]:
    """Query parameters by lowercase name (Azure's are case-insensitive)."""
    return {k.lower(): v for k, v in request.query_params.items()}


def _bool(q: dict[str, str], name: str, default: bool) -> bool:
    value = q.get(name.lower())
    if value is None:
        return default
    if value.lower() not in ("true", "false"):
        raise InvalidMetricQuery(f"'{name}' must be true or false, not '{value}'", target=name)
    return value.lower() == "true"


def _localized(value: str, localized: str | None = None) -> dict[str, str]:
    return {"value": value, "localizedValue": localized or value}


def _check_namespace(q: dict[str, str]) -> None:
    ns = q.get("metricnamespace")
    if ns and ns.lower() != NAMESPACE.lower():
        raise InvalidMetricQuery(f"'metricnamespace': '{ns}' is not a metric namespace of this resource; "
                                 f"use {NAMESPACE}", target="metricnamespace")


def _history(request: Request) -> MetricsHistory:
    return request.app.state.plane.metrics


def metrics_response(history: HistoryReader, uids: list[str], resource_id: str, location: str | None,
                     q: dict[str, str], now: datetime | None = None) -> dict[str, Any]:
    """The body of ``GET {resource_id}/providers/Microsoft.Insights/metrics`` over the groups ``uids``."""
    now = now or datetime.now(UTC)
    _check_namespace(q)
    metrics = parse_metric_names(q.get("metricnames"))
    start, end = parse_timespan(q.get("timespan"), now)
    interval = parse_interval(q.get("interval"), start, end, _bool(q, "AutoAdjustTimegrain", False))
    aggregations = parse_aggregations(q.get("aggregation"), metrics[0].primary)
    orderby = parse_orderby(q.get("orderby"), aggregations)
    top = parse_top(q.get("top"))
    result_type = (q.get("resulttype") or "Data").lower()
    if result_type not in ("data", "metadata"):
        raise InvalidMetricQuery(f"'resultType': '{q['resulttype']}' must be Data or Metadata", target="resultType")
    dims = tuple(sorted({d for m in metrics for d in m.dimensions})) or (CONTAINER_NAME,)
    validate = _bool(q, "ValidateDimensions", True)
    try:
        split = parse_filter(q.get("$filter"), dims)
    except InvalidMetricQuery:
        if validate:
            raise
        split = {}  # ValidateDimensions=false: a filter naming unknown dimensions is ignored
    starts = bucket_starts(start, end, interval)
    buckets = read_buckets(history, uids, starts, interval, now)
    value = [_metric(resource_id, m, timeseries(buckets, m, split, top, orderby), starts, aggregations,
                     metadata_only=result_type == "metadata")
             for m in metrics]
    body: dict[str, Any] = {
        "cost": len(starts) * len(metrics),
        "timespan": f"{format_time(start)}/{format_time(end)}",
        "interval": interval.label,
        "value": value,
        "namespace": NAMESPACE,
        "resourceregion": location or "",
    }
    if result_type == "metadata":
        del body["interval"]
    return body


def _metric(resource_id: str, m: MetricDefinition, series: list[Any], starts: list[int], aggregations: list[str],
            metadata_only: bool) -> dict[str, Any]:
    out = []
    for ts in series:
        element: dict[str, Any] = {"metadatavalues": [] if ts.dimension is None else [
            {"name": _localized(CONTAINER_NAME.lower(), CONTAINER_NAME), "value": ts.dimension}]}
        if not metadata_only:
            data = []
            for t, stats in zip(starts, ts.buckets, strict=True):
                point: dict[str, Any] = {"timeStamp": format_time(datetime.fromtimestamp(t, UTC))}
                for agg in aggregations:
                    v = stats.value(agg)
                    if v is not None:
                        point[agg.lower()] = round(v, 6)
                data.append(point)
            element["data"] = data
        out.append(element)
    return {
        "id": f"{resource_id}{INSIGHTS}/metrics/{m.name}",
        "type": "Microsoft.Insights/metrics",
        "name": _localized(m.name, m.display),
        "displayDescription": m.description,
        "unit": m.unit,
        "timeseries": out,
        "errorCode": "Success",
    }


def definitions_response(resource_id: str, q: dict[str, str]) -> dict[str, Any]:
    _check_namespace(q)
    availabilities = [
        {"timeGrain": grain, "retention": format_duration(HOUR_RETENTION if seconds >= HOUR else MINUTE_RETENTION)}
        for grain, seconds in GRAINS.items()
    ]
    value = []
    for d in DEFINITIONS:
        item: dict[str, Any] = {
            "id": f"{resource_id}{INSIGHTS}/metricdefinitions/{d.name}",
            "resourceId": resource_id,
            "namespace": NAMESPACE,
            "name": _localized(d.name, d.display),
            "displayDescription": d.description,
            "isDimensionRequired": False,
            "unit": d.unit,
            "primaryAggregationType": d.primary,
            "supportedAggregationTypes": ["None", "Average", "Minimum", "Maximum", "Total", "Count"],
            "metricAvailabilities": availabilities,
        }
        if d.dimensions:
            item["dimensions"] = [_localized(x) for x in d.dimensions]
        value.append(item)
    return {"value": value}


@router.get(P + INSIGHTS + "/metrics")
def group_metrics(sub: str, rg: str, name: str, request: Request, svc: GroupService = Depends(service)) -> Any:
    view = svc.get(sub, rg, name)
    meta = view.record.meta
    rid = group_id(meta.subscription, meta.resourceGroup, meta.name)
    return metrics_response(_history(request), [meta.uid], rid, view.record.spec.location, _params(request))


@router.get(P + INSIGHTS + "/metricDefinitions")
def group_metric_definitions(sub: str, rg: str, name: str, request: Request,
                             svc: GroupService = Depends(service)) -> Any:
    meta = svc.get(sub, rg, name).record.meta
    return definitions_response(group_id(meta.subscription, meta.resourceGroup, meta.name), _params(request))
