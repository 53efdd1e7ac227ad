"""Corral extension: what the installation can still run, read-only (``GET .../locations/{loc}/capacity``).

Computed as the scheduler sees it (``scheduler.allocation.loads``): every registered node's capacity,
what the groups bound to it request (GPUs too, by SKU in upper case), and what is left on nodes that take
new groups (ready and not cordoned). Outside connectors (the Kubernetes virtual node) size themselves from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Depends, Request

from corral.api.deps import api_version
from corral.model.records import GROUPS, NODES, GroupRecord, NodeInfo
from corral.scheduler.allocation import loads

router = APIRouter(dependencies=[Depends(api_version)])


def _amounts(cpu: float, mem: float, groups: int, gpus: dict[str, int]) -> dict[str, Any]:
    return {"cpu": round(cpu, 3), "memoryInGB": round(mem, 3), "groups": groups, "gpus": gpus}


def _sum(counts: Iterable[dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in counts:
        for sku, n in c.items():
            out[sku] = out.get(sku, 0) + n
    return out


def _gpus(node: NodeInfo) -> dict[str, int]:
    return {sku.upper(): n for sku, n in node.gpus.items()}  # SKUs compare without case, as the scheduler's


@router.get("/subscriptions/{sub}/providers/Microsoft.ContainerInstance/locations/{loc}/capacity")
def capacity(sub: str, loc: str, request: Request) -> Any:
    store = request.app.state.plane.store
    nodes = [NodeInfo.model_validate(r.value) for r in store.list(NODES)]
    groups = [GroupRecord.model_validate(r.value) for r in store.list(GROUPS)]
    by_node = loads(nodes, groups).values()
    usable = [ld for ld in by_node if ld.node.ready and not ld.node.unschedulable]
    free = [(max(0.0, ld.node.cpu - ld.cpu), max(0.0, ld.node.memoryGB - ld.memoryGB),
             max(0, ld.node.maxGroups - ld.groups),
             {sku: max(0, n - ld.gpus.get(sku, 0)) for sku, n in _gpus(ld.node).items()}) for ld in usable]
    pending = sum(1 for g in groups if g.meta.node is None and not g.meta.deleting)
    largest = max(free, key=lambda f: (f[0], f[1]), default=(0.0, 0.0, 0, {}))
    return {
        "nodes": len(nodes),
        "readyNodes": len(usable),
        "osTypes": sorted({ld.node.osType for ld in usable}),
        "total": _amounts(sum(n.cpu for n in nodes), sum(n.memoryGB for n in nodes),
                          sum(n.maxGroups for n in nodes), _sum(_gpus(n) for n in nodes)),
        "allocated": _amounts(sum(ld.cpu for ld in by_node), sum(ld.memoryGB for ld in by_node),
                              sum(ld.groups for ld in by_node), _sum(ld.gpus for ld in by_node)),
        "free": _amounts(sum(f[0] for f in free), sum(f[1] for f in free), sum(f[2] for f in free),
                         _sum(f[3] for f in free)),
        # The most one new group can get: what is free on the emptiest node.
        "largestFree": {"cpu": round(largest[0], 3), "memoryInGB": round(largest[1], 3)},
        "pendingGroups": pending,
    }
