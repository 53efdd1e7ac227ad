"""Long-running operation headers and the operation status route.

The Azure SDK's ARM poller follows ``Azure-AsyncOperation`` first; without
``Retry-After`` it sleeps 30 s between polls, so every LRO answer sets it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from corral.api.deps import api_version, service
from corral.control.groups import GroupService, Operation, OperationStatus

router = APIRouter(dependencies=[Depends(api_version)])

RETRY_AFTER = "1"


def operation_url(request: Request, sub: str, location: str, op: Operation) -> str:
    base = str(request.base_url).rstrip("/")
    version = request.query_params.get("api-version", "")
    return (
        f"{base}/subscriptions/{sub}/providers/Microsoft.ContainerInstance/locations/{location}"
        f"/operations/{op.id}?api-version={version}"
    )


def lro_headers(request: Request, sub: str, location: str, op: Operation, location_header: bool = False):
    url = operation_url(request, sub, location, op)
    headers = {"Azure-AsyncOperation": url, "Retry-After": RETRY_AFTER}
    if location_header:
        headers["Location"] = url.replace("/operations/", "/operationResults/")
    return headers


def _status(request: Request, svc: GroupService, op_id: str) -> OperationStatus:
    """A container group's operation, or an NGroup's (corral.control.ngroups keeps those apart)."""
    return request.app.state.plane.orchestration.ngroups.operation_status(op_id) or svc.operation_status(op_id)


@router.get("/subscriptions/{sub}/providers/Microsoft.ContainerInstance/locations/{loc}/operations/{op_id}")
def operation_status(sub: str, loc: str, op_id: str, request: Request, svc: GroupService = Depends(service)) -> Any:
    st = _status(request, svc, op_id)
    body: dict[str, Any] = {"id": op_id, "name": op_id, "status": st.status}
    if st.error:
        body["error"] = {"code": "DeploymentFailed", "message": st.error}
    # The poller reads Retry-After on every answer: without it, az waits 30 s before the next poll.
    return JSONResponse(body, headers={"Retry-After": RETRY_AFTER} if st.status == "InProgress" else None)


@router.get("/subscriptions/{sub}/providers/Microsoft.ContainerInstance/locations/{loc}/operationResults/{op_id}")
def operation_result(sub: str, loc: str, op_id: str, request: Request, svc: GroupService = Depends(service)) -> Any:
    from fastapi.responses import Response

    st = _status(request, svc, op_id)
    if st.status == "InProgress":
        return Response(status_code=202, headers={"Retry-After": RETRY_AFTER})
    return Response(status_code=204)
