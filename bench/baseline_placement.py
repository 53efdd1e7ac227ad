"""Pick a node for a group: filter the feasible nodes, then score them.

Small on purpose: each filter says why it rejects a node, so an unplaceable
group gets a reason per cause ("0/1 nodes: 1 insufficient memory").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

from pydantic import BaseModel

from corral.model.group import total_requests
from corral.model.records import GroupRecord, NodeInfo


class NodeLoad(BaseModel):
    node: NodeInfo
    cpu: float = 0.0
    memoryGB: float = 0.0
    groups: int = 0


Filter = Callable[[GroupRecord, NodeLoad], str | None]


def fits_os(group: GroupRecord, load: NodeLoad) -> str | None:
    want = group.spec.properties.osType
    return None if want == load.node.osType else f"osType {want} not supported"


def fits_cpu(group: GroupRecord, load: NodeLoad) -> str | None:
    cpu, _ = total_requests(group.spec.properties)
    return None if load.cpu + cpu <= load.node.cpu + 1e-9 else "insufficient cpu"


def fits_memory(group: GroupRecord, load: NodeLoad) -> str | None:
    _, mem = total_requests(group.spec.properties)
    return None if load.memoryGB + mem <= load.node.memoryGB + 1e-9 else "insufficient memory"


def fits_count(group: GroupRecord, load: NodeLoad) -> str | None:
    return None if load.groups < load.node.maxGroups else "too many groups"


FILTERS: list[Filter] = [fits_os, fits_cpu, fits_memory, fits_count]


def least_allocated(group: GroupRecord, load: NodeLoad) -> float:
    cpu, mem = total_requests(group.spec.properties)
    return ((load.node.cpu - load.cpu - cpu) / load.node.cpu + (load.node.memoryGB - load.memoryGB - mem)
            / load.node.memoryGB)


class Unschedulable(Exception):
    def __init__(self, reasons: Counter[str], total: int) -> None:
        detail = ", ".join(f"{n} {r}" for r, n in reasons.most_common())
        super().__init__(f"0/{total} nodes are available: {detail or 'no nodes registered'}")


def loads(nodes: Iterable[NodeInfo], groups: Iterable[GroupRecord]) -> dict[str, NodeLoad]:
    out = {n.name: NodeLoad(node=n) for n in nodes}
    for g in groups:
        if g.meta.node in out and g.meta.desiredState == "Running":
            cpu, mem = total_requests(g.spec.properties)
            load = out[g.meta.node]
            load.cpu += cpu
            load.memoryGB += mem
            load.groups += 1
    return out


def place(group: GroupRecord, node_loads: dict[str, NodeLoad]) -> str:
    reasons: Counter[str] = Counter()
    feasible = []
    for load in node_loads.values():
        why = next((r for f in FILTERS if (r := f(group, load))), None)
        if why:
            reasons[why] += 1
        else:
            feasible.append(load)
    if not feasible:
        raise Unschedulable(reasons, len(node_loads))
    return max(feasible, key=lambda ld: least_allocated(group, ld)).node.name
