"""What each node has allocated, as the scheduler accounts it: for the read routes (capacity, metrics,
portal) that report it from a listing of the store."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, Field

from corral.model.records import GROUPS, GroupRecord, NodeInfo
from corral.scheduler.demand import demand_of
from corral.scheduler.state import ClusterState


class NodeLoad(BaseModel):
    node: NodeInfo
    cpu: float = 0.0
    memoryGB: float = 0.0
    groups: int = 0
    gpus: dict[str, int] = Field(default_factory=dict)  # SKU (upper case) -> GPUs allocated


def loads(nodes: Iterable[NodeInfo], groups: Iterable[GroupRecord]) -> dict[str, NodeLoad]:
    """Per registered node, the requests of the groups bound to it that hold them (desired Running:
    a stopped group holds nothing), summed by the same ``ClusterState`` the binder keeps."""
    infos = list(nodes)
    state = ClusterState()
    for n in infos:
        state.upsert_node(n)
    for g in groups:
        if g.meta.node is not None:
            m = g.meta
            state.bind(demand_of(f"{GROUPS}{m.subscription}/{m.resourceGroup}/{m.name}".lower(), g.dump(), ""),
                       m.node)
    arr = state.nodes
    out = {}
    for n in infos:
        i = arr.index[n.name]
        out[n.name] = NodeLoad(node=n, cpu=round(float(arr.cpu_used[i]), 9), memoryGB=round(float(arr.mem_used[i]), 9),
                               groups=int(arr.count[i]),
                               gpus={sku: int(used[i]) for sku, used in arr.gpu_used.items() if used[i]})
    return out
