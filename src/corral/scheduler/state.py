"""The scheduler's snapshot of the cluster, kept by deltas: nodes, subnets, and what each bound group holds.

``bind`` and ``release`` are the only writes of group accounting, so the arrays
are always the sum of the bound groups' footprints: applying the same deltas
in any order, or rebuilding from scratch, gives the same snapshot.
A bound group holds CPU, memory, GPUs, its public ports, an address of its
subnet on the node and a slot of the node's group capacity only while its
desired state is Running: a stopped group keeps its node but releases its
compute, as a stopped ACI group (or a finished Kubernetes pod) does.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.model.records import NodeInfo
from corral.scheduler.demand import Demand
from corral.scheduler.nodes import NodeArrays
from corral.scheduler.subnets import SubnetTable
from corral.scheduler.topology import Topology


@dataclass(slots=True)
class Bound:
    node: str
    demand: Demand
    idx: int = -1  # -1: its node is not registered (then it holds nothing until it is)


class ClusterState:
    def __init__(self, block_prefixlen: int = 24, max_groups_per_node: int = 250) -> None:
        self.nodes = NodeArrays()
        self.subnets = SubnetTable(self.nodes, block_prefixlen, max_groups_per_node)
        self.topology = Topology(self.nodes)
        self.bound: dict[str, Bound] = {}
        self._by_node: dict[str, set[str]] = {}

    # nodes -------------------------------------------------------------------
    def upsert_node(self, info: NodeInfo) -> bool:
        """A node registered or changed; whether it may take groups it could not take before."""
        known = info.name in self.nodes.index and self.nodes.present[self.nodes.index[info.name]]
        idx, grew = self.nodes.upsert(info)
        if not known:
            self.subnets.node_added(idx)
            for key in self._by_node.get(info.name, ()):  # groups bound to it before it (re-)registered
                b = self.bound[key]
                b.idx = idx
                self._hold(b.demand, idx, 1)
        return grew

    def remove_node(self, name: str) -> None:
        """A node left: its groups stay bound to it (failover is not the scheduler's call) but hold nothing."""
        idx = self.nodes.index.get(name)
        if idx is None or not self.nodes.present[idx]:
            return
        for key in self._by_node.get(name, ()):
            b = self.bound[key]
            self._hold(b.demand, idx, -1)
            b.idx = -1
        self.nodes.remove(name)

    # groups ------------------------------------------------------------------
    def bind(self, d: Demand, node: str) -> None:
        """Account ``d`` on ``node`` (replacing what the same key held before)."""
        self.release(d.key)
        idx = self.nodes.index.get(node, -1)
        if idx >= 0 and not self.nodes.present[idx]:
            idx = -1
        self.bound[d.key] = Bound(node, d, idx)
        self._by_node.setdefault(node, set()).add(d.key)
        if idx >= 0:
            self._hold(d, idx, 1)

    def release(self, key: str) -> Bound | None:
        b = self.bound.pop(key, None)
        if b is None:
            return None
        keys = self._by_node.get(b.node)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._by_node[b.node]
        if b.idx >= 0:
            self._hold(b.demand, b.idx, -1)
        return b

    def _hold(self, d: Demand, idx: int, sign: int) -> None:
        if not d.running:
            return
        nodes = self.nodes
        nodes.allocate(idx, sign * d.cpu, sign * d.mem, sign)
        for sku, n in d.gpus:
            nodes.gpu_table(sku, used=True)[idx] += sign * n
        for port in d.ports:
            nodes.port_table(port)[idx] += sign
        self.subnets.add(d.subnet, idx, sign)
        if sign > 0:
            self.topology.add(d, idx)
        else:
            self.topology.remove(d, idx)
