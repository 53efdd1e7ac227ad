"""ARM routes of ``Microsoft.ContainerInstance/ngroups``: long-running PUT/PATCH/DELETE/start/restart, and
the Corral-only status route the orchestrator reports through."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from corral.api.deps import api_version
from corral.api.groups import json_body
from corral.api.lro import lro_headers
from corral.control.ngroups import READ_ONLY, NGroupOperation, NGroupService, provisioning_state
from corral.errors import NotFound
from corral.model.armids import NGROUP_TYPE, resource_id
from corral.model.group import TagsPatch
from corral.model.ngroup import NGroupRecord, NGroupSpec, NGroupStatus

router = APIRouter(dependencies=[Depends(api_version)])

RG = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerInstance/ngroups"
P = RG + "/{name}"


class StatusReport(BaseModel):
    uid: str
    status: NGroupStatus


def ngroups(request: Request) -> NGroupService:
    return request.app.state.plane.orchestration.ngroups


def _dt(v: Any) -> str:
    return v.isoformat().replace("+00:00", "Z")


def render_ngroup(record: NGroupRecord) -> dict[str, Any]:
    m = record.meta
    spec = record.spec.model_dump(mode="json", exclude_none=True)
    props = spec["properties"]
    for stub in props.get("containerGroupProfiles", []):
        stub["revision"] = stub.get("revision") or m.revision
        for vol in (stub.get("containerGroupProperties") or {}).get("volumes") or []:
            if isinstance(vol.get("azureFile"), dict):
                vol["azureFile"].pop("storageAccountKey", None)
    props["provisioningState"] = provisioning_state(record)
    # Corral extensions (read-only): what the orchestrator works from, and what it reports
    # (members, rollout, history, autoscale, events).
    props.update({"resourceGuid": m.uid, "generation": m.generation, "restartGeneration": m.restartGeneration,
                  "desiredState": m.desiredState})
    props["status"] = record.status.model_dump(mode="json", exclude_none=True)
    out: dict[str, Any] = {
        "id": resource_id(m.subscription, m.resourceGroup, NGROUP_TYPE, m.name), "name": m.name,
        "type": NGROUP_TYPE, "location": spec.get("location"), "tags": spec.get("tags") or {}, "properties": props,
        "systemData": {"createdAt": _dt(m.createdAt)},
    }
    for k in ("zones", "identity"):
        if spec.get(k) is not None:
            out[k] = spec[k]
    return out


def _location(record: NGroupRecord) -> str:
    return record.spec.location or "local"


def _accepted(request: Request, sub: str, record: NGroupRecord, op: NGroupOperation) -> Response:
    """202 for a long-running action (delete, start, restart), with the headers pollers follow."""
    headers = lro_headers(request, sub, _location(record), op, location_header=True)  # type: ignore[arg-type]
    return Response(status_code=202, headers=headers)


@router.put(P)
def put(sub: str, rg: str, name: str, request: Request, body: dict[str, Any] = Depends(json_body),
        svc: NGroupService = Depends(ngroups)) -> Response:
    props = body.get("properties")
    if isinstance(props, dict):  # read-only fields a client may echo back
        body = {**body, "properties": {k: v for k, v in props.items() if k not in READ_ONLY}}
    record, created, op = svc.put(sub, rg, name, NGroupSpec.model_validate(body))
    return JSONResponse(render_ngroup(record), status_code=201 if created else 200,
                        headers=lro_headers(request, sub, _location(record), op))  # type: ignore[arg-type]


@router.patch(P)
def patch(sub: str, rg: str, name: str, request: Request, body: dict[str, Any] = Depends(json_body),
          svc: NGroupService = Depends(ngroups)) -> Response:
    if set(body) <= {"tags"}:
        record = svc.update_tags(sub, rg, name, TagsPatch.model_validate(body).tags)
        return JSONResponse(render_ngroup(record))
    record, op = svc.patch(sub, rg, name, body)
    return JSONResponse(render_ngroup(record), headers=lro_headers(request, sub, _location(record), op))  # type: ignore[arg-type]


@router.get(P)
def get(sub: str, rg: str, name: str, svc: NGroupService = Depends(ngroups)) -> Any:
    return render_ngroup(svc.get(sub, rg, name))


@router.get(RG)
def list_in_group(sub: str, rg: str, svc: NGroupService = Depends(ngroups)) -> Any:
    return {"value": [render_ngroup(r) for r in svc.list(sub, rg)]}


@router.get("/subscriptions/{sub}/providers/Microsoft.ContainerInstance/ngroups")
def list_in_subscription(sub: str, svc: NGroupService = Depends(ngroups)) -> Any:
    return {"value": [render_ngroup(r) for r in svc.list(sub)]}


@router.delete(P)
def delete(sub: str, rg: str, name: str, request: Request, svc: NGroupService = Depends(ngroups)) -> Response:
    try:
        record = svc.get(sub, rg, name)
    except NotFound:
        return Response(status_code=204)
    op = svc.delete(sub, rg, name)
    if op is None:
        return Response(status_code=204)
    return _accepted(request, sub, record, op)


@router.post(P + "/start")
def start(sub: str, rg: str, name: str, request: Request, svc: NGroupService = Depends(ngroups)) -> Response:
    return _accepted(request, sub, svc.get(sub, rg, name), svc.start(sub, rg, name))


@router.post(P + "/stop")
def stop(sub: str, rg: str, name: str, svc: NGroupService = Depends(ngroups)) -> Response:
    svc.stop(sub, rg, name)
    return Response(status_code=204)


@router.post(P + "/restart")
def restart(sub: str, rg: str, name: str, request: Request, svc: NGroupService = Depends(ngroups)) -> Response:
    return _accepted(request, sub, svc.get(sub, rg, name), svc.restart(sub, rg, name))


@router.put(P + "/status")
def report_status(sub: str, rg: str, name: str, body: dict[str, Any] = Depends(json_body),
                  svc: NGroupService = Depends(ngroups)) -> Response:
    """Corral extension, for the orchestrator: what it observed and did. 204 once a deleted NGroup is gone."""
    report = StatusReport.model_validate(body)
    record = svc.report_status(sub, rg, name, report.uid, report.status)
    if record is None:
        return Response(status_code=204)
    return JSONResponse(render_ngroup(record))
