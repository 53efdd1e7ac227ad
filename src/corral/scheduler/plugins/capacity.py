"""Filter: the node runs fewer groups than its capacity (``maxGroups``, 250 by default)."""

from __future__ import annotations

from corral.scheduler.demand import Demand
from corral.scheduler.nodes import Mask
from corral.scheduler.plugin import Context


class GroupCapacity:
    name = "GroupCapacity"

    def applies(self, d: Demand) -> bool:
        return True

    def feasible(self, ctx: Context) -> Mask:
        nodes, n = ctx.state.nodes, ctx.n
        return nodes.count[:n] < nodes.max_groups[:n]

    def reason(self, ctx: Context) -> str:
        return "too many groups"
