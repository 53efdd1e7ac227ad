"""Corral extension: metered usage of container groups (GET .../usageRecords).

Each row is one group over the window: billed seconds, requested core-seconds
and GB-seconds, and the cost under the installation's price sheet. Totals
are given per resource group and for the subscription.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from corral.api.deps import api_version
from corral.control.metering import Meter, UsageRow
from corral.errors import InvalidRequest

router = APIRouter(dependencies=[Depends(api_version)])

NS = "Microsoft.ContainerInstance"


def _time(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"'{name}' must be an ISO 8601 time such as 2026-11-22T00:00:00Z", target=name) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _total(rows: list[UsageRow]) -> dict[str, Any]:
    return {
        "groups": len(rows),
        "seconds": sum(r.seconds for r in rows),
        "coreSeconds": round(sum(r.coreSeconds for r in rows), 3),
        "gbSeconds": round(sum(r.gbSeconds for r in rows), 3),
        "cost": round(sum(r.cost for r in rows), 6),
    }


@router.get(f"/subscriptions/{{sub}}/providers/{NS}/usageRecords")
def usage_records(
    sub: str,
    request: Request,
    resource_group: str | None = Query(None, alias="resourceGroup"),
    start: str | None = Query(None, alias="from"),
    end: str | None = Query(None, alias="to"),
) -> Any:
    meter: Meter = request.app.state.plane.metering
    t0, t1 = _time(start, "from"), _time(end, "to")
    if t0 and t1 and t1 < t0:
        raise InvalidRequest("'to' is before 'from'", target="to")
    rows = meter.usage(sub, resource_group, t0, t1)
    by_rg: dict[str, list[UsageRow]] = {}
    for r in rows:
        by_rg.setdefault(r.resourceGroup, []).append(r)
    return {
        "value": [
            {"id": f"/subscriptions/{sub}/resourceGroups/{r.resourceGroup}/providers/{NS}/containerGroups/{r.name}",
             **r.model_dump(mode="json")}
            for r in rows
        ],
        "currency": meter.prices.currency,
        "prices": meter.prices.model_dump(mode="json"),
        "from": t0.isoformat() if t0 else None,
        "to": t1.isoformat() if t1 else None,
        "resourceGroups": {rg: _total(rs) for rg, rs in sorted(by_rg.items())},
        "total": _total(rows),
    }
