"""ARM routes of ``Microsoft.ContainerInstance/containerGroups``."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from corral.api.deps import api_version, nodes, read_store, rendered, service
from corral.api.lro import lro_headers
from corral.api.readcache import RenderedGroups
from corral.api.render import render_group
from corral.control.groups import GroupService
from corral.control.nodes import NodeDirectory
from corral.errors import InvalidRequest, NotFound
from corral.model.group import ContainerGroup, TagsPatch

router = APIRouter(dependencies=[Depends(api_version)])

class ExecSyncRequest(BaseModel):
    command: list[str] = Field(min_length=1)
    timeoutSeconds: float | None = Field(default=None, gt=0)


RG = "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.ContainerInstance/containerGroups"
P = RG + "/{name}"


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    return body


def zone(request: Request) -> str:
    return request.app.state.plane.dns_zone


@router.put(P)
def create_or_update(
    sub: str, rg: str, name: str, request: Request, body: dict[str, Any] = Depends(json_body),
    svc: GroupService = Depends(service),
) -> Response:
    body = request.app.state.plane.orchestration.profiles.expand_group_body(body)  # made from a profile?
    group = ContainerGroup.model_validate(body)
    view, created, op = svc.create_or_update(sub, rg, name, group)
    headers = lro_headers(request, sub, view.record.spec.location or "local", op)
    return JSONResponse(render_group(view, zone(request)), status_code=201 if created else 200, headers=headers)


@router.patch(P)
def update_tags(
    sub: str, rg: str, name: str, request: Request, body: dict[str, Any] = Depends(json_body),
    svc: GroupService = Depends(service),
) -> Any:
    patch = TagsPatch.model_validate(body)
    return render_group(svc.update_tags(sub, rg, name, patch.tags), zone(request))


@router.get(P)
async def get(sub: str, rg: str, name: str, request: Request, svc: GroupService = Depends(service),
              cache: RenderedGroups = Depends(rendered)) -> Response:
    zone_ = zone(request)
    return _json(await read_store(svc.store, lambda: cache.body(svc, svc.record(sub, rg, name), zone_)))


@router.get(RG)
async def list_in_group(sub: str, rg: str, request: Request, svc: GroupService = Depends(service),
                        cache: RenderedGroups = Depends(rendered)) -> Response:
    zone_ = zone(request)
    return _json(await read_store(svc.store, lambda: cache.listing(svc, svc.records(sub, rg), zone_)))


@router.get("/subscriptions/{sub}/providers/Microsoft.ContainerInstance/containerGroups")
async def list_in_subscription(sub: str, request: Request, svc: GroupService = Depends(service),
                               cache: RenderedGroups = Depends(rendered)) -> Response:
    zone_ = zone(request)
    return _json(await read_store(svc.store, lambda: cache.listing(svc, svc.records(sub), zone_)))


def _json(body: bytes) -> Response:
    # Already encoded: handing FastAPI a dict would walk it through jsonable_encoder again.
    return Response(content=body, media_type="application/json")


@router.delete(P)
def delete(sub: str, rg: str, name: str, request: Request, svc: GroupService = Depends(service)) -> Response:
    try:
        view = svc.get(sub, rg, name)
    except NotFound:
        return Response(status_code=204)
    op = svc.delete(sub, rg, name)
    if op is None:
        return Response(status_code=204)
    try:  # the node may finish the delete (record gone) at any moment
        body = render_group(svc.get(sub, rg, name), zone(request))
    except NotFound:
        body = None
    headers = lro_headers(request, sub, view.record.spec.location or "local", op, location_header=True)
    return JSONResponse(body, status_code=202, headers=headers)


@router.post(P + "/restart")
def restart(sub: str, rg: str, name: str, svc: GroupService = Depends(service)) -> Response:
    op = svc.restart(sub, rg, name)
    # 204 once the node has restarted the group (ACI answers when it is done).
    svc.wait_carried_out(svc.get(sub, rg, name), lambda st: st.observedRestartGeneration >= op.restartGeneration)
    return Response(status_code=204)


@router.post(P + "/stop")
def stop(sub: str, rg: str, name: str, svc: GroupService = Depends(service)) -> Response:
    view = svc.stop(sub, rg, name)
    # 204 once the node has stopped it, so a `show` right after reads Stopped.
    svc.wait_carried_out(view, lambda st: st.state == "Stopped")
    return Response(status_code=204)


@router.post(P + "/start")
def start(sub: str, rg: str, name: str, request: Request, svc: GroupService = Depends(service)) -> Response:
    view = svc.get(sub, rg, name)
    op = svc.start(sub, rg, name)
    return Response(status_code=202, headers=lro_headers(request, sub, view.record.spec.location or "local", op))


@router.get(P + "/containers/{container}/logs")
def logs(
    sub: str, rg: str, name: str, container: str, tail: int | None = None, timestamps: bool = False,
    follow: bool = False, svc: GroupService = Depends(service), directory: NodeDirectory = Depends(nodes),
) -> Any:
    view = svc.get(sub, rg, name)
    names = {c.name for c in view.record.spec.properties.containers}
    names |= {c.name for c in view.record.spec.properties.initContainers or []}
    if container not in names:
        raise NotFound(f"container '{container}' is not part of container group '{name}'")
    if tail is not None and tail < 0:
        raise InvalidRequest("tail must be zero or a positive number of lines", target="tail")
    node = directory.get(view.record.meta.node) if view.record.meta.node else None
    if follow and node is not None:
        from corral.api.access import follow_response  # Corral extension, see docs/api.md

        return follow_response(svc, view, node, container, tail, timestamps)
    if node is None:
        return {"content": ""}
    return {"content": node.logs(view.record.meta.uid, container, tail, timestamps)}


@router.post(P + "/containers/{container}/execSync")
def exec_sync(
    sub: str, rg: str, name: str, container: str, body: dict[str, Any] = Depends(json_body),
    svc: GroupService = Depends(service), directory: NodeDirectory = Depends(nodes),
) -> Any:
    """Corral extension: run a command to completion and return its output and exit code."""
    req = ExecSyncRequest.model_validate(body)
    view = svc.get(sub, rg, name)
    if container not in {c.name for c in view.record.spec.properties.containers}:
        raise NotFound(f"container '{container}' is not part of container group '{name}'")
    node = directory.get(view.record.meta.node)
    code, out, err = node.exec(view.record.meta.uid, container, req.command, req.timeoutSeconds)
    return {"exitCode": code, "stdout": out.decode(errors="replace"), "stderr": err.decode(errors="replace")}
