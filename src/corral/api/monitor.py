"""Azure Monitor's metrics API for container groups and NGroups (``Microsoft.Insights/metrics`` and
``metricDefinitions``).

Wire-compatible with what ``az monitor metrics list`` (api-version 2018-01-01) and azure-mgmt-monitor
(2024-02-01) send and parse: ``metricnames``, ``timespan``, ``interval`` (or FULL), ``aggregation``,
``$filter`` on ``containerName``, ``top``, ``orderby``, ``resultType``, ``metricnamespace``,
``AutoAdjustTimegrain``, ``ValidateDimensions``. See docs/api.md ("Metrics").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request

from corral.api.deps import api_version, service
from corral.api.groups import P
from corral.api.ngroups import P as NGROUP
from corral.api.ngroups import ngroups
from corral.api.render import group_id
from corral.control.groups import GroupService
from corral.control.metrics.definitions import (
    CONTAINER_NAME,
    DEFINITIONS,
    MEMBER_NAME,
    NAMESPACE,
    NGROUP_DEFINITIONS,
    NGROUP_NAMESPACE,
    MetricDefinition,
)
from corral.control.metrics.history import MetricsHistory
from corral.control.metrics.membership import ngroup_members
from corral.control.metrics.query import (
    GRAINS,
    HistoryReader,
    bucket_starts,
    format_duration,
    format_time,
    member_timeseries,
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
from corral.control.metrics.rollups import HOUR, HOUR_RETENTION, MINUTE, MINUTE_RETENTION
from corral.control.ngroups import NGroupService
from corral.errors import InvalidMetricQuery
from corral.model.armids import NGROUP_TYPE, resource_id

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


def _check_namespace(q: dict[str, str], namespace: str) -> None:
    ns = q.get("metricnamespace")
    if ns and ns.lower() != namespace.lower():
        raise InvalidMetricQuery(f"'metricnamespace': '{ns}' is not a metric namespace of this resource; "
                                 f"use {namespace}", target="metricnamespace")


def _history(request: Request) -> MetricsHistory:
    return request.app.state.plane.metrics


@dataclass(frozen=True)
class Subject:
    """What a query reads: a container group (one member, itself) or an NGroup (its members, by name)."""

    resource_id: str
    location: str | None
    members: Callable[[int, int], list[tuple[str, str]]]  # (name, uid) of those that ran within [start, end)
    ngroup: bool = False

    @property
    def namespace(self) -> str:
        return NGROUP_NAMESPACE if self.ngroup else NAMESPACE

    @property
    def definitions(self) -> tuple[MetricDefinition, ...]:
        return NGROUP_DEFINITIONS if self.ngroup else DEFINITIONS


def metrics_response(history: HistoryReader, subject: Subject, q: dict[str, str],
                     now: datetime | None = None) -> dict[str, Any]:
    """The body of ``GET {resource_id}/providers/Microsoft.Insights/metrics`` over the subject's groups."""
    now = now or datetime.now(UTC)
    _check_namespace(q, subject.namespace)
    metrics = parse_metric_names(q.get("metricnames"), subject.definitions, subject.namespace)
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
    members = subject.members(starts[0] - MINUTE, starts[-1] + interval.seconds)
    if subject.ngroup:
        uids: dict[str, list[str]] = {}  # by member name (a name used again later is the same member)
        for name, uid in members:
            uids.setdefault(name, []).append(uid)
        per_member = {name: read_buckets(history, u, starts, interval, now) for name, u in uids.items()}
        series = [member_timeseries(per_member, len(starts), m, split, top, orderby) for m in metrics]
    else:
        buckets = read_buckets(history, [uid for _, uid in members], starts, interval, now)
        series = [timeseries(buckets, m, split, top, orderby) for m in metrics]
    value = [_metric(subject.resource_id, m, ts, starts, aggregations, metadata_only=result_type == "metadata")
             for m, ts in zip(metrics, series, strict=True)]
    body: dict[str, Any] = {
        "cost": len(starts) * len(metrics),
        "timespan": f"{format_time(start)}/{format_time(end)}",
        "interval": interval.label,
        "value": value,
        "namespace": subject.namespace,
        "resourceregion": subject.location or "",
    }
    if result_type == "metadata":
        del body["interval"]
    return body


def _dimension(name: str, value: str) -> dict[str, Any]:
    return {"name": _localized(name.lower(), name), "value": value}


def _metric(resource_id: str, m: MetricDefinition, series: list[Any], starts: list[int], aggregations: list[str],
            metadata_only: bool) -> dict[str, Any]:
    out = []
    for ts in series:
        meta = [] if ts.member is None else [_dimension(MEMBER_NAME, ts.member)]
        if ts.dimension is not None:
            meta.append(_dimension(CONTAINER_NAME, ts.dimension))
        element: dict[str, Any] = {"metadatavalues": meta}
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


def definitions_response(subject: Subject, q: dict[str, str]) -> dict[str, Any]:
    _check_namespace(q, subject.namespace)
    availabilities = [
        {"timeGrain": grain, "retention": format_duration(HOUR_RETENTION if seconds >= HOUR else MINUTE_RETENTION)}
        for grain, seconds in GRAINS.items()
    ]
    value = []
    for d in subject.definitions:
        item: dict[str, Any] = {
            "id": f"{subject.resource_id}{INSIGHTS}/metricdefinitions/{d.name}",
            "resourceId": subject.resource_id,
            "namespace": subject.namespace,
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


def _group(sub: str, rg: str, name: str, svc: GroupService) -> Subject:
    view = svc.get(sub, rg, name)
    meta = view.record.meta
    return Subject(group_id(meta.subscription, meta.resourceGroup, meta.name), view.record.spec.location,
                   lambda start, end: [(meta.name, meta.uid)])


def _ngroup(sub: str, rg: str, name: str, request: Request, svc: NGroupService) -> Subject:
    record = svc.get(sub, rg, name)
    meta, store = record.meta, request.app.state.plane.store
    return Subject(resource_id(meta.subscription, meta.resourceGroup, NGROUP_TYPE, meta.name), record.spec.location,
                   lambda start, end: ngroup_members(store, meta, start, end), ngroup=True)


@router.get(P + INSIGHTS + "/metrics")
def group_metrics(sub: str, rg: str, name: str, request: Request, svc: GroupService = Depends(service)) -> Any:
    return metrics_response(_history(request), _group(sub, rg, name, svc), _params(request))


@router.get(P + INSIGHTS + "/metricDefinitions")
def group_metric_definitions(sub: str, rg: str, name: str, request: Request,
                             svc: GroupService = Depends(service)) -> Any:
    return definitions_response(_group(sub, rg, name, svc), _params(request))


@router.get(NGROUP + INSIGHTS + "/metrics")
def ngroup_metrics(sub: str, rg: str, name: str, request: Request, svc: NGroupService = Depends(ngroups)) -> Any:
    """An NGroup's metrics: its members' (those that ran within the timespan, deleted ones too), pooled or
    split by ``containerGroupName``."""
    return metrics_response(_history(request), _ngroup(sub, rg, name, request, svc), _params(request))


@router.get(NGROUP + INSIGHTS + "/metricDefinitions")
def ngroup_metric_definitions(sub: str, rg: str, name: str, request: Request,
                              svc: NGroupService = Depends(ngroups)) -> Any:
    return definitions_response(_ngroup(sub, rg, name, request, svc), _params(request))
