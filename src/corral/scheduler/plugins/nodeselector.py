"""Filter: the node carries every label of the group's ``placement.nodeSelector``."""

from __future__ import annotations

from corral.scheduler.nodes import Mask
from corral.scheduler.plugin import Context


class NodeSelector:
    name = "NodeSelector"

    def applies(self, ctx: Context) -> bool:
        return bool(ctx.demand.node_selector)

    def feasible(self, ctx: Context) -> Mask:
        return ctx.state.nodes.label_mask(ctx.demand.node_selector)

    def reason(self, ctx: Context) -> str:
        return "node selector mismatch"
