"""filter -> score -> select: where one group goes, given the snapshot. Binding is the binder's.

``Pipeline.place`` is a pure function of the snapshot (``ClusterState``) and
the group's demand: it reads arrays and changes nothing, so it can be tested
alone and the binder decides when a choice becomes a bind.
"""

from __future__ import annotations

from collections import Counter
from typing import Literal

import numpy as np
from pydantic import BaseModel

from corral.scheduler.demand import Demand
from corral.scheduler.plugin import Context, FilterPlugin, ScorePlugin
from corral.scheduler.plugins.addresses import Addresses
from corral.scheduler.plugins.affinity import PreferredAffinity, RequiredAffinity
from corral.scheduler.plugins.antiaffinity import RequiredAntiAffinity
from corral.scheduler.plugins.binpack import ResourceAllocation
from corral.scheduler.plugins.capacity import GroupCapacity
from corral.scheduler.plugins.health import NodeReady, NodeSchedulable
from corral.scheduler.plugins.nodeselector import NodeSelector
from corral.scheduler.plugins.ostype import OsType
from corral.scheduler.plugins.ports import PublicPorts
from corral.scheduler.plugins.resources import Cpu, Gpu, Memory
from corral.scheduler.plugins.spread import SpreadFilter, SpreadScore
from corral.scheduler.plugins.zones import Zones
from corral.scheduler.state import ClusterState

Applied = list[tuple[FilterPlugin, np.ndarray]]  # each filter that applied, with its verdict per node


class SchedulerSettings(BaseModel):
    # binpack: fill the busiest node that fits (fewest nodes used); spread: the least allocated.
    strategy: Literal["binpack", "spread"] = "spread"


class Unschedulable(Exception):
    """No node can take the group; the message counts the nodes per reason (each under its first)."""

    def __init__(self, reasons: Counter[str], total: int) -> None:
        self.reasons = reasons
        self.total = total
        detail = ", ".join(f"{n:,} {r}" for r, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
        super().__init__(f"0/{total:,} nodes are available: {detail or 'no nodes registered'}")


def default_filters() -> list[FilterPlugin]:
    # Cheap node attributes first, so a node is counted under the reason an operator acts on first.
    return [NodeReady(), NodeSchedulable(), OsType(), Zones(), NodeSelector(), Cpu(), Memory(), Gpu(),
            GroupCapacity(), Addresses(), PublicPorts(), RequiredAffinity(), RequiredAntiAffinity(), SpreadFilter()]


def default_scores(settings: SchedulerSettings) -> list[ScorePlugin]:
    return [ResourceAllocation(settings.strategy), PreferredAffinity(), SpreadScore()]


class Pipeline:
    def __init__(self, settings: SchedulerSettings | None = None, filters: list[FilterPlugin] | None = None,
                 scores: list[ScorePlugin] | None = None) -> None:
        self.settings = settings or SchedulerSettings()
        self.filters = filters if filters is not None else default_filters()
        self.scores = scores if scores is not None else default_scores(self.settings)

    def _filter(self, d: Demand, state: ClusterState) -> tuple[Context, np.ndarray, Applied]:
        """Every filter's verdict over the nodes, and their AND."""
        nodes = state.nodes
        ctx = Context(d, state, nodes.n)
        feasible = nodes.present[: ctx.n].copy()
        applied: Applied = []
        for f in self.filters:
            if f.applies(ctx):
                ok = f.feasible(ctx)
                applied.append((f, ok))
                feasible &= ok
        return ctx, feasible, applied

    def misfit(self, d: Demand, state: ClusterState, node: str) -> str | None:
        """Why ``node`` cannot take the group now (the first filter it fails), or None if it can."""
        idx = state.nodes.index.get(node)
        if idx is None or not state.nodes.present[idx]:
            return "node not registered"
        ctx, _, applied = self._filter(d, state)
        return next((f.reason(ctx) for f, ok in applied if not ok[idx]), None)

    def place(self, d: Demand, state: ClusterState) -> str:
        """The node the group should go to; raises Unschedulable with the reasons when none can."""
        nodes = state.nodes
        ctx, feasible, applied = self._filter(d, state)
        if not feasible.any():
            raise self._unschedulable(ctx, applied)
        scores = [s for s in self.scores if s.applies(ctx)]
        if len(scores) == 1:
            total = scores[0].score(ctx, feasible)
        else:
            total = sum(s.weight * s.score(ctx, feasible) for s in scores)
        return nodes.names[int(np.argmax(np.where(feasible, total, -np.inf)))]

    @staticmethod
    def _unschedulable(ctx: Context, applied: Applied) -> Unschedulable:
        nodes = ctx.state.nodes
        remaining = nodes.present[: ctx.n].copy()
        reasons: Counter[str] = Counter()
        for f, ok in applied:
            rejected = int(np.count_nonzero(remaining & ~ok))
            if rejected:
                reasons[f.reason(ctx)] += rejected
                remaining &= ok
        return Unschedulable(reasons, int(np.count_nonzero(nodes.present[: nodes.n])))
