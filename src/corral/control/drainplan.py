"""Where the groups of a node being drained would go: the scheduler is asked before anything is evicted.

A drain evicts a group only once the scheduler can place it on another node. ``DrainPlanner.plan``
answers for all of a node's groups at once, on a snapshot of the cluster read from the store (the
binder's own ``load``), with the node itself cordoned: each group is placed in turn and bound there
in the snapshot, so two groups never count on the same room, and required anti-affinity, spread,
zones, selectors and the rest apply exactly as the binder will apply them. A group that fits on no
other node stays where it runs (``kubectl drain`` refuses likewise, unless forced).
"""

from __future__ import annotations

from corral.control.binder import Binder
from corral.model.network import NetworkSettings
from corral.model.records import NODES, NodeInfo
from corral.scheduler.pipeline import SchedulerSettings, Unschedulable
from corral.store.base import Store


class DrainPlanner:
    def __init__(self, store: Store, settings: SchedulerSettings | None = None,
                 network: NetworkSettings | None = None, default_subnet_id: str | None = None) -> None:
        self.store = store
        self.settings = settings
        self.network = network
        self.default_subnet_id = default_subnet_id

    def plan(self, node: str, keys: list[str]) -> dict[str, str | None]:
        """For each group key (bound to ``node``, in the order they would move): None if another node can
        take it, else the scheduler's reason (``0/3 nodes are available: ...``)."""
        if not keys:
            return {}
        snapshot = Binder(self.store, self.settings, self.network, self.default_subnet_id)
        snapshot.load()
        state, pipeline = snapshot.state, snapshot.pipeline
        rec = self.store.get(NODES + node)
        if rec is not None:
            info = NodeInfo.model_validate(rec.value)
            info.unschedulable = True  # as the drain leaves it
            state.upsert_node(info)
        out: dict[str, str | None] = {}
        for key in keys:
            bound = state.bound.get(key)
            if bound is None or bound.node != node or not bound.demand.running:
                out[key] = None  # holds nothing there (not placed yet, stopped): nothing to find room for
                continue
            state.release(key)
            try:
                target = pipeline.place(bound.demand, state)
            except Unschedulable as exc:
                state.bind(bound.demand, node)  # it stays
                out[key] = str(exc)
                continue
            state.bind(bound.demand, target)
            out[key] = None
        return out
