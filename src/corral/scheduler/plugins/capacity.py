"""Filter: the node runs fewer groups than its capacity (``maxGroups``, 250 by default)."""

from __future__ import annotations

from corral.scheduler.nodes import Mask
from corral.scheduler.plugin import Context


class GroupCapacity:
    name = "GroupCapacity"

    def applies(self, ctx: Context) -> bool:
        return True

    def feasible(self, ctx: Context) -> Mask:
        return ctx.state.nodes.slots[: ctx.n] > 0

    def reason(self, ctx: Context) -> str:
        return "too many groups"
