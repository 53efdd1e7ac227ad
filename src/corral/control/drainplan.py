"""Where the groups of a node being drained would go: the scheduler is asked before anything is evicted.

A drain evicts a group only once the scheduler can place it on another node. ``DrainPlanner.plan``
answers for all of a node's groups at once, on a snapshot of the cluster (the binder's own, read
from the store by ``Binder.load``), with the node itself cordoned: each group is placed in turn and
bound there in the snapshot, so two groups never count on the same room, and required
anti-affinity, spread, zones, selectors and the rest apply exactly as the binder will apply them.
A group that fits on no other node stays where it runs (``kubectl drain`` refuses likewise,
unless forced).

The node lifecycle's planner ``follows`` the store (it is handed the controller's events, as
the binder is), so a drain step costs the node's groups, not a read of the whole cluster; every
plan is undone in the snapshot afterwards. Others (the API's refusal check, on any server) read
a fresh snapshot per plan.
"""

from __future__ import annotations

from corral.control.binder import Binder
from corral.model.network import NetworkSettings
from corral.model.records import NODES, NodeInfo
from corral.scheduler.demand import Demand
from corral.scheduler.pipeline import SchedulerSettings, Unschedulable
from corral.store.base import Event, Store


class DrainPlanner:
    def __init__(self, store: Store, settings: SchedulerSettings | None = None,
                 network: NetworkSettings | None = None, default_subnet_id: str | None = None,
                 follows: bool = False) -> None:
        self.store = store
        self.settings = settings
        self.network = network
        self.default_subnet_id = default_subnet_id
        self.follows = follows
        self._snapshot: Binder | None = None

    def reset(self) -> None:
        """Forget the followed snapshot (a resync): the next plan reads the store again."""
        self._snapshot = None

    def follow(self, events: list[Event]) -> None:
        if self._snapshot is not None:
            self._snapshot.apply(events)

    def _snapshot_now(self) -> Binder:
        if self._snapshot is not None:
            return self._snapshot
        snapshot = Binder(self.store, self.settings, self.network, self.default_subnet_id)
        snapshot.load()
        if self.follows:
            self._snapshot = snapshot
        return snapshot

    def plan(self, node: str, keys: list[str]) -> dict[str, str | None]:
        """For each group key (bound to ``node``, in the order they would move): None if another node can
        take it, else the scheduler's reason (``0/3 nodes are available: ...``)."""
        if not keys:
            return {}
        snapshot = self._snapshot_now()
        state, pipeline = snapshot.state, snapshot.pipeline
        rec = self.store.get(NODES + node)
        info = NodeInfo.model_validate(rec.value) if rec is not None else None
        if info is not None:
            state.upsert_node(info.model_copy(update={"unschedulable": True}))  # as the drain leaves it
        out: dict[str, str | None] = {}
        moved: list[Demand] = []
        try:
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
                moved.append(bound.demand)
                out[key] = None
        finally:  # a plan changes nothing: every simulated move goes back (bind and release are exact inverses)
            for d in moved:
                state.bind(d, node)
            if info is not None:
                state.upsert_node(info)
        return out
