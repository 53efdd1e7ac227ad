"""Provider-level ARM routes: operations list, location usages, capabilities, cached images."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from corral.api.deps import api_version, nodes, service
from corral.control.groups import GroupService
from corral.control.nodes import NodeDirectory
from corral.link.protocol import NodeUnavailable
from corral.model.group import total_requests

router = APIRouter(dependencies=[Depends(api_version)])

NS = "Microsoft.ContainerInstance"


@router.get(f"/providers/{NS}/operations")
def operations() -> Any:
    ops = [
        ("containerGroups/read", "Get container group"),
        ("containerGroups/write", "Create or update container group"),
        ("containerGroups/delete", "Delete container group"),
        ("containerGroups/restart/action", "Restart container group"),
        ("containerGroups/stop/action", "Stop container group"),
        ("containerGroups/start/action", "Start container group"),
        ("containerGroups/containers/logs/read", "Get container logs"),
    ]
    return {"value": [
        {"name": f"{NS}/{n}", "display": {"provider": NS, "resource": "containerGroups", "operation": d,
                                           "description": d}, "origin": "User"}
        for n, d in ops
    ]}


@router.get(f"/subscriptions/{{sub}}/providers/{NS}/locations/{{loc}}/usages")
def usages(sub: str, loc: str, request: Request, svc: GroupService = Depends(service)) -> Any:
    groups = [v for v in svc.list(sub) if (v.record.spec.location or "").lower() == loc.lower()]
    # Cores count while a group holds them: not once it is stopped, finished or being deleted.
    active = [v for v in groups if not v.record.meta.deleting and v.record.meta.desiredState != "Stopped"
              and not (v.status and v.status.state in ("Stopped", "Succeeded", "Failed"))]
    cpu = sum(total_requests(v.record.spec.properties)[0] for v in active)
    quota = request.app.state.plane.quota
    rows = [
        ("ContainerGroups", "Container Groups", len(groups), quota.groups),
        ("StandardCores", "Standard Cores", int(cpu + 0.999), quota.cores),
    ]
    return {"value": [
        {"id": f"/subscriptions/{sub}/providers/{NS}/locations/{loc}/usages/{n}", "unit": "Count",
         "currentValue": cur, "limit": lim, "name": {"value": n, "localizedValue": d}}
        for n, d, cur, lim in rows
    ]}


@router.get(f"/subscriptions/{{sub}}/providers/{NS}/locations/{{loc}}/capabilities")
def capabilities(sub: str, loc: str) -> Any:
    return {"value": [{
        "resourceType": "containerGroups", "osType": "Linux", "location": loc, "ipAddressType": "Public",
        "gpu": "None", "capabilities": {"maxMemoryInGB": 16.0, "maxCpu": 4.0, "maxGpuCount": 0.0},
    }]}


@router.get(f"/subscriptions/{{sub}}/providers/{NS}/locations/{{loc}}/cachedImages")
def cached_images(sub: str, loc: str, directory: NodeDirectory = Depends(nodes)) -> Any:
    images: set[str] = set()
    for node in directory.all():
        try:
            images.update(node.cached_images())
        except NodeUnavailable:
            continue  # a node that does not answer now: the others' images still count
    return {"value": [{"osType": "Linux", "image": ref} for ref in sorted(images)]}
