"""ARM routes of ``Microsoft.StandbyPool/standbyContainerGroupPools`` and their runtime views.

Changes are done when answered (``provisioningState: Succeeded``); the
orchestrator fills and drains the pool's groups from there.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from corral.api.deps import api_version
from corral.api.groups import json_body
from corral.control.standbypools import StandbyPoolService, pool_id
from corral.errors import NotFound
from corral.model.armids import POOL_TYPE
from corral.model.standbypool import PoolRecord, StandbyPool

router = APIRouter(dependencies=[Depends(api_version)])

RG = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.StandbyPool/standbyContainerGroupPools"
P = RG + "/{name}"


def pools(request: Request) -> StandbyPoolService:
    return request.app.state.plane.orchestration.standby_pools


def _dt(v: Any) -> str:
    return v.isoformat().replace("+00:00", "Z")


def render_pool(record: PoolRecord) -> dict[str, Any]:
    m = record.meta
    spec = record.spec.model_dump(mode="json", exclude_none=True)
    props = spec["properties"]
    ref = props["containerGroupProperties"]["containerGroupProfile"]
    ref["revision"] = ref.get("revision") or m.revision
    props["provisioningState"] = "Succeeded"
    return {"id": pool_id(m.subscription, m.resourceGroup, m.name), "name": m.name, "type": POOL_TYPE,
            "location": spec.get("location"), "tags": spec.get("tags") or {}, "properties": props,
            "systemData": {"createdAt": _dt(m.createdAt)}}


def render_runtime_view(record: PoolRecord, counts: dict[str, int]) -> dict[str, Any]:
    m = record.meta
    want = record.spec.properties.elasticityProfile.maxReadyCapacity
    healthy = counts["Running"] >= want
    return {
        "id": f"{pool_id(m.subscription, m.resourceGroup, m.name)}/runtimeViews/latest", "name": "latest",
        "type": f"{POOL_TYPE}/runtimeViews",
        "properties": {
            "instanceCountSummary": [{"instanceCountsByState": [{"state": s, "count": c} for s, c in counts.items()]}],
            "status": {"code": "HealthState/healthy" if healthy else "HealthState/degraded",
                       "message": f"{counts['Running']} of {want} container groups ready"},
            "provisioningState": "Succeeded",
        },
    }


@router.put(P)
def put(sub: str, rg: str, name: str, body: dict[str, Any] = Depends(json_body),
        svc: StandbyPoolService = Depends(pools)) -> Response:
    props = body.get("properties")
    if isinstance(props, dict):
        body = {**body, "properties": {k: v for k, v in props.items() if k != "provisioningState"}}
    record, created = svc.put(sub, rg, name, StandbyPool.model_validate(body))
    return JSONResponse(render_pool(record), status_code=201 if created else 200, headers={"Retry-After": "1"})


@router.patch(P)
def patch(sub: str, rg: str, name: str, body: dict[str, Any] = Depends(json_body),
          svc: StandbyPoolService = Depends(pools)) -> Any:
    return render_pool(svc.patch(sub, rg, name, body))


@router.get(P)
def get(sub: str, rg: str, name: str, svc: StandbyPoolService = Depends(pools)) -> Any:
    return render_pool(svc.get(sub, rg, name))


@router.get(RG)
def list_in_group(sub: str, rg: str, svc: StandbyPoolService = Depends(pools)) -> Any:
    return {"value": [render_pool(r) for r in svc.list(sub, rg)]}


@router.get("/subscriptions/{sub}/providers/Microsoft.StandbyPool/standbyContainerGroupPools")
def list_in_subscription(sub: str, svc: StandbyPoolService = Depends(pools)) -> Any:
    return {"value": [render_pool(r) for r in svc.list(sub)]}


@router.delete(P)
def delete(sub: str, rg: str, name: str, svc: StandbyPoolService = Depends(pools)) -> Response:
    svc.delete(sub, rg, name)
    return Response(status_code=204)  # done: the orchestrator removes the pool's groups


@router.get(P + "/runtimeViews")
def list_runtime_views(sub: str, rg: str, name: str, svc: StandbyPoolService = Depends(pools)) -> Any:
    return {"value": [render_runtime_view(svc.get(sub, rg, name), svc.runtime_view(sub, rg, name))]}


@router.get(P + "/runtimeViews/{view}")
def get_runtime_view(sub: str, rg: str, name: str, view: str, svc: StandbyPoolService = Depends(pools)) -> Any:
    if view != "latest":
        raise NotFound(f"standby pool '{name}' has only the runtime view 'latest', not '{view}'")
    return render_runtime_view(svc.get(sub, rg, name), svc.runtime_view(sub, rg, name))
