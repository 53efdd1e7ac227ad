"""What an operator does with nodes: list and show them, cordon, uncordon, drain, remove.

Cordon and drain only write the node record; the scheduler skips cordoned nodes and the
node lifecycle controller (``corral.control.lifecycle``) moves a draining node's groups. A
drain first asks the scheduler where each running group would go (``corral.control.drainplan``)
and refuses, changing nothing, when some fit on no other node, unless forced: then those stay.
Removing a node forgets it: its record, lease and credentials go, its address blocks are
returned to their virtual networks, and whatever was still bound to it is rescheduled by the
lifecycle controller. A Ready node still running groups must be drained first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from corral.control.drainplan import DrainPlanner
from corral.control.lifecycle import finished, update_node
from corral.control.netplane import NetworkControl
from corral.errors import Conflict, NotFound
from corral.model.records import GROUPS, LEASES, NODE_CREDENTIALS, NODES, GroupRecord, NodeInfo, status_key
from corral.model.status import GroupStatus
from corral.scheduler.allocation import NodeLoad, loads
from corral.store.base import Store


class NodeGroup(BaseModel):
    key: str
    name: str
    resourceGroup: str
    state: str


class UnmovableGroup(NodeGroup):
    reason: str  # the scheduler's: why no other node can take it


class NodeView(BaseModel):
    node: NodeInfo
    status: Literal["Ready", "NotReady"]
    lastHeartbeat: datetime | None  # the last lease renewal (remote agents)
    allocatedCpu: float = 0.0
    allocatedMemoryGB: float = 0.0
    groups: list[NodeGroup] = []
    unmovable: list[UnmovableGroup] = []  # what a drain leaves on the node: it fits on no other


class NodeService:
    def __init__(self, store: Store, network: NetworkControl | None = None,
                 planner: DrainPlanner | None = None) -> None:
        self.store = store
        self.network = network
        self.planner = planner or DrainPlanner(store)

    def _groups(self) -> dict[str, list[tuple[str, GroupRecord]]]:
        out: dict[str, list[tuple[str, GroupRecord]]] = {}
        for rec in self.store.list(GROUPS):
            g = GroupRecord.model_validate(rec.value)
            if g.meta.node:
                out.setdefault(g.meta.node, []).append((rec.key, g))
        return out

    def _view(self, node: NodeInfo, groups: list[tuple[str, GroupRecord]], load: NodeLoad, detail: bool) -> NodeView:
        lease = self.store.get(LEASES + node.name)
        beat = datetime.fromisoformat(lease.value["renewedAt"]) if lease else None
        view = NodeView(node=node, status="Ready" if node.ready else "NotReady", lastHeartbeat=beat,
                        allocatedCpu=round(load.cpu, 3), allocatedMemoryGB=round(load.memoryGB, 3))
        for key, g in groups:
            state = "Pending"
            if detail:
                st = self.store.get(status_key(g.meta.uid))
                state = st.value.get("state", "Pending") if st else "Pending"
            view.groups.append(NodeGroup(key=key, name=g.meta.name, resourceGroup=g.meta.resourceGroup, state=state))
            if key in node.drainBlocked:
                view.unmovable.append(UnmovableGroup(key=key, name=g.meta.name, resourceGroup=g.meta.resourceGroup,
                                                     state=state, reason=node.drainBlocked[key]))
        return view

    def _node(self, name: str) -> NodeInfo:
        rec = self.store.get(NODES + name)
        if rec is None:
            raise NotFound(f"node '{name}' is not registered (see `corral node list`)")
        return NodeInfo.model_validate(rec.value)

    def list(self) -> list[NodeView]:
        groups = self._groups()
        nodes = sorted((NodeInfo.model_validate(r.value) for r in self.store.list(NODES)), key=lambda n: n.name)
        # What each node has allocated, as the scheduler accounts it (the capacity and metrics routes read the same).
        by_node = loads(nodes, (g for bound in groups.values() for _, g in bound))
        return [self._view(n, groups.get(n.name, []), by_node[n.name], detail=False) for n in nodes]

    def get(self, name: str) -> NodeView:
        node, groups = self._node(name), self._groups().get(name, [])
        return self._view(node, groups, loads([node], (g for _, g in groups))[name], detail=True)

    def _change(self, name: str, **fields: object) -> NodeView:
        update_node(self.store, name, lambda: NotFound(f"node '{name}' is not registered (see `corral node list`)"),
                    f"node '{name}' is changing too often; retry", **fields)
        return self.get(name)

    def cordon(self, name: str) -> NodeView:
        """No new groups are placed on the node; those it runs stay."""
        return self._change(name, unschedulable=True)

    def uncordon(self, name: str) -> NodeView:
        """The node takes new groups again; a drain in progress stops (the group being moved still moves)."""
        return self._change(name, unschedulable=False, draining=False, evicting=None, drainBlocked={})

    def drain(self, name: str, force: bool = False) -> NodeView:
        """Cordon the node and move its groups elsewhere, one at a time. If some of its running groups fit on
        no other node, refuse (nothing changes), or with ``force`` drain the others and leave those."""
        self._node(name)
        groups = sorted(self._groups().get(name, []), key=lambda kg: kg[0])
        plan = self.planner.plan(name, [key for key, g in groups if self._runs(g)])
        blocked = {key: why for key, why in plan.items() if why}
        if blocked and not force:
            names = {key: f"{g.meta.resourceGroup}/{g.meta.name}" for key, g in groups}
            raise Conflict(
                f"node '{name}' cannot be drained: {len(blocked)} of its groups fit on no other node: "
                + "; ".join(f"{names[k]} ({why})" for k, why in blocked.items())
                + ". Make room for them (add or uncordon nodes, stop or shrink groups), or drain with force "
                f"(`corral node drain {name} --force`) to move the others and leave these on the node")
        return self._change(name, unschedulable=True, draining=True, drainBlocked=blocked)

    def _runs(self, g: GroupRecord) -> bool:
        """Meant to run and not ended for good: a drain must find it another node."""
        if g.meta.desiredState != "Running" or g.meta.deleting:
            return False
        st = self.store.get(status_key(g.meta.uid))
        return not finished(g, GroupStatus.model_validate(st.value) if st else None)

    def delete(self, name: str) -> None:
        node = self._node(name)
        if node.leaseSeconds is None:
            raise Conflict(f"node '{name}' runs inside the server's own process (`corral up`); it cannot be removed")
        running = [key for key, g in self._groups().get(name, []) if self._runs(g)]
        if node.ready and running:
            raise Conflict(f"node '{name}' is Ready and runs {len(running)} group(s): drain it first "
                           f"(`corral node drain {name}`), or stop its agent")
        self.store.delete(NODES + name)
        self.store.delete(LEASES + name)
        self.store.delete(NODE_CREDENTIALS + name)  # revoked on every server within its cache time
        if self.network is not None:
            self.network.release_node(name)
