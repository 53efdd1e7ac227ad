"""Corral extension: what the installation can still run, read-only (``GET .../locations/{loc}/capacity``).

Computed as the scheduler sees it (``scheduler.allocation.loads``): every registered node's capacity,
what the groups bound to it request, and what is left on nodes that take new groups (ready and not
cordoned). Outside connectors (the Kubernetes virtual node) size themselves from it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from corral.api.deps import api_version
from corral.model.records import GROUPS, NODES, GroupRecord, NodeInfo
from corral.scheduler.allocation import loads

router = APIRouter(dependencies=[Depends(api_version)])


def _amounts(cpu: float, mem: float, groups: int, gpus: dict[str, int]) -> dict[str, Any]:
    return {"cpu": round(cpu, 3), "memoryInGB": round(mem, 3), "groups": groups, "gpus": gpus}


@router.get("/subscriptions/{sub}/providers/Microsoft.ContainerInstance/locations/{loc}/capacity")
def capacity(sub: str, loc: str, request: Request) -> Any:
    store = request.app.state.plane.store
    nodes = [NodeInfo.model_validate(r.value) for r in store.list(NODES)]
    groups = [GroupRecord.model_validate(r.value) for r in store.list(GROUPS)]
    by_node = loads(nodes, groups)
    usable = [ld for ld in by_node.values() if ld.node.ready and not ld.node.unschedulable]
    gpus_total: dict[str, int] = {}
    gpus_used: dict[str, int] = {}
    for ld in by_node.values():
        for sku, n in ld.node.gpus.items():
            gpus_total[sku] = gpus_total.get(sku, 0) + n
    for g in groups:
        if g.meta.node in by_node and g.meta.desiredState == "Running":
            for c in g.spec.properties.containers:
                gpu = c.properties.resources.requests.gpu
                if gpu is not None:
                    gpus_used[gpu.sku] = gpus_used.get(gpu.sku, 0) + gpu.count
    free = [(max(0.0, ld.node.cpu - ld.cpu), max(0.0, ld.node.memoryGB - ld.memoryGB),
             max(0, ld.node.maxGroups - ld.groups)) for ld in usable]
    usable_gpus: dict[str, int] = {}
    for ld in usable:
        for sku, n in ld.node.gpus.items():
            usable_gpus[sku] = usable_gpus.get(sku, 0) + n
    pending = sum(1 for g in groups if g.meta.node is None and not g.meta.deleting)
    largest = max(free, key=lambda f: (f[0], f[1]), default=(0.0, 0.0, 0))
    return {
        "nodes": len(nodes),
        "readyNodes": len(usable),
        "osTypes": sorted({ld.node.osType for ld in usable}),
        "total": _amounts(sum(n.cpu for n in nodes), sum(n.memoryGB for n in nodes),
                          sum(n.maxGroups for n in nodes), gpus_total),
        "allocated": _amounts(sum(ld.cpu for ld in by_node.values()), sum(ld.memoryGB for ld in by_node.values()),
                              sum(ld.groups for ld in by_node.values()), gpus_used),
        "free": _amounts(sum(f[0] for f in free), sum(f[1] for f in free), sum(f[2] for f in free),
                         {s: max(0, n - gpus_used.get(s, 0)) for s, n in usable_gpus.items()}),
        # The most one new group can get: what is free on the emptiest node.
        "largestFree": {"cpu": round(largest[0], 3), "memoryInGB": round(largest[1], 3)},
        "pendingGroups": pending,
    }
