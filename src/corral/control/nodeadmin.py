"""What an operator does with nodes: list and show them, cordon, uncordon, drain, remove.

Cordon and drain only write the node record; the scheduler skips cordoned nodes and the
node lifecycle controller (``corral.control.lifecycle``) moves a draining node's groups.
Removing a node forgets it: its record, lease and credentials go, its address blocks are
returned to their virtual networks, and whatever was still bound to it is rescheduled by the
lifecycle controller. A Ready node still running groups must be drained first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from corral.control.lifecycle import finished
from corral.control.netplane import NetworkControl
from corral.errors import Conflict, NotFound
from corral.model.group import total_requests
from corral.model.records import GROUPS, LEASES, NODE_CREDENTIALS, NODES, GroupRecord, NodeInfo, status_key
from corral.model.status import GroupStatus
from corral.store.base import Store
from corral.store.update import update_record


class NodeGroup(BaseModel):
    key: str
    name: str
    resourceGroup: str
    state: str


class NodeView(BaseModel):
    node: NodeInfo
    status: Literal["Ready", "NotReady"]
    lastHeartbeat: datetime | None  # the last lease renewal (remote agents)
    allocatedCpu: float = 0.0
    allocatedMemoryGB: float = 0.0
    groups: list[NodeGroup] = []


class NodeService:
    def __init__(self, store: Store, network: NetworkControl | None = None) -> None:
        self.store = store
        self.network = network

    def _groups(self) -> dict[str, list[tuple[str, GroupRecord]]]:
        out: dict[str, list[tuple[str, GroupRecord]]] = {}
        for rec in self.store.list(GROUPS):
            g = GroupRecord.model_validate(rec.value)
            if g.meta.node:
                out.setdefault(g.meta.node, []).append((rec.key, g))
        return out

    def _view(self, node: NodeInfo, groups: list[tuple[str, GroupRecord]], detail: bool) -> NodeView:
        lease = self.store.get(LEASES + node.name)
        beat = datetime.fromisoformat(lease.value["renewedAt"]) if lease else None
        view = NodeView(node=node, status="Ready" if node.ready else "NotReady", lastHeartbeat=beat)
        for key, g in groups:
            if g.meta.desiredState == "Running":
                cpu, mem = total_requests(g.spec.properties)
                view.allocatedCpu += cpu
                view.allocatedMemoryGB += mem
            state = "Pending"
            if detail:
                st = self.store.get(status_key(g.meta.uid))
                state = st.value.get("state", "Pending") if st else "Pending"
            view.groups.append(NodeGroup(key=key, name=g.meta.name, resourceGroup=g.meta.resourceGroup, state=state))
        view.allocatedCpu, view.allocatedMemoryGB = round(view.allocatedCpu, 3), round(view.allocatedMemoryGB, 3)
        return view

    def _node(self, name: str) -> NodeInfo:
        rec = self.store.get(NODES + name)
        if rec is None:
            raise NotFound(f"node '{name}' is not registered (see `corral node list`)")
        return NodeInfo.model_validate(rec.value)

    def list(self) -> list[NodeView]:
        groups = self._groups()
        nodes = [NodeInfo.model_validate(r.value) for r in self.store.list(NODES)]
        return [self._view(n, groups.get(n.name, []), detail=False) for n in sorted(nodes, key=lambda n: n.name)]

    def get(self, name: str) -> NodeView:
        return self._view(self._node(name), self._groups().get(name, []), detail=True)

    def _change(self, name: str, **fields: object) -> NodeView:
        def apply(n: NodeInfo | None) -> NodeInfo:
            assert n is not None
            for k, v in fields.items():
                setattr(n, k, v)
            return n

        update_record(self.store, NODES + name, NodeInfo, apply,
                      missing=lambda: NotFound(f"node '{name}' is not registered (see `corral node list`)"),
                      busy=f"node '{name}' is changing too often; retry")
        return self.get(name)

    def cordon(self, name: str) -> NodeView:
        """No new groups are placed on the node; those it runs stay."""
        return self._change(name, unschedulable=True)

    def uncordon(self, name: str) -> NodeView:
        """The node takes new groups again; a drain in progress stops (the group being moved still moves)."""
        return self._change(name, unschedulable=False, draining=False, evicting=None)

    def drain(self, name: str) -> NodeView:
        """Cordon the node and move its groups elsewhere, one at a time."""
        return self._change(name, unschedulable=True, draining=True)

    def delete(self, name: str) -> None:
        node = self._node(name)
        if node.leaseSeconds is None:
            raise Conflict(f"node '{name}' runs inside the server's own process (`corral up`); it cannot be removed")
        running = []
        for key, g in self._groups().get(name, []):
            st = self.store.get(status_key(g.meta.uid))
            status = GroupStatus.model_validate(st.value) if st else None
            if g.meta.desiredState == "Running" and not g.meta.deleting and not finished(g, status):
                running.append(key)
        if node.ready and running:
            raise Conflict(f"node '{name}' is Ready and runs {len(running)} group(s): drain it first "
                           f"(`corral node drain {name}`), or stop its agent")
        self.store.delete(NODES + name)
        self.store.delete(LEASES + name)
        self.store.delete(NODE_CREDENTIALS + name)  # revoked on every server within its cache time
        if self.network is not None:
            self.network.release_node(name)
