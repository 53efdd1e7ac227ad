"""Corral extension: the cluster's nodes (``/providers/Corral/nodes``): list, show, cordon, uncordon, drain, remove."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from corral.api.deps import api_version
from corral.control.nodeadmin import NodeService, NodeView

router = APIRouter(dependencies=[Depends(api_version)])
NODES = "/providers/Corral/nodes"


def _svc(request: Request) -> NodeService:
    return request.app.state.plane.node_admin


def render_node(view: NodeView) -> dict[str, Any]:
    n = view.node
    out = {
        "name": n.name,
        "properties": {
            "status": view.status,
            "schedulable": not n.unschedulable,
            "draining": n.draining,
            "evicting": n.evicting,
            "address": n.address,
            "endpoint": n.endpoint,
            "zone": n.zone,
            "labels": n.labels,
            "osType": n.osType,
            "osImage": n.osImage,
            "capacity": {"cpu": n.cpu, "memoryInGB": n.memoryGB, "groups": n.maxGroups, "gpus": n.gpus},
            "allocated": {"cpu": view.allocatedCpu, "memoryInGB": view.allocatedMemoryGB, "groups": len(view.groups)},
            "leaseSeconds": n.leaseSeconds,
            "registeredAt": n.lastHeartbeat.isoformat(),
            "lastHeartbeat": view.lastHeartbeat.isoformat() if view.lastHeartbeat else None,
            "groups": [g.model_dump() for g in view.groups],
            "unmovable": [g.model_dump() for g in view.unmovable],
        },
    }
    return out


@router.get(NODES)
def list_nodes(request: Request) -> Any:
    return {"value": [render_node(v) for v in _svc(request).list()]}


@router.get(NODES + "/{name}")
def show(name: str, request: Request) -> Any:
    return render_node(_svc(request).get(name))


@router.post(NODES + "/{name}/cordon")
def cordon(name: str, request: Request) -> Any:
    return render_node(_svc(request).cordon(name))


@router.post(NODES + "/{name}/uncordon")
def uncordon(name: str, request: Request) -> Any:
    return render_node(_svc(request).uncordon(name))


@router.post(NODES + "/{name}/drain")
def drain(name: str, request: Request, force: bool = False) -> Any:
    return render_node(_svc(request).drain(name, force=force))


@router.delete(NODES + "/{name}")
def delete(name: str, request: Request) -> Response:
    _svc(request).delete(name)
    return Response(status_code=204)
