"""Filter: a group with ``zones`` (ACI's field) only goes to nodes in one of them."""

from __future__ import annotations

from corral.scheduler.nodes import Mask
from corral.scheduler.plugin import Context


class Zones:
    name = "Zones"

    def applies(self, ctx: Context) -> bool:
        return bool(ctx.demand.zones)

    def feasible(self, ctx: Context) -> Mask:
        assert ctx.demand.zones
        return ctx.state.nodes.zone_mask(ctx.demand.zones)

    def reason(self, ctx: Context) -> str:
        return "zone mismatch"
