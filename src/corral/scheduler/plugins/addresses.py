"""Filter: the node has a free address for the group in its block of the group's subnet
(or the subnet can still grant the node a block)."""

from __future__ import annotations

import numpy as np

from corral.scheduler.nodes import Mask
from corral.scheduler.plugin import Context


class Addresses:
    name = "Addresses"

    def applies(self, ctx: Context) -> bool:
        return True

    def feasible(self, ctx: Context) -> Mask:
        room = ctx.state.subnets.room(ctx.demand.subnet)
        # A subnet the scheduler has not seen (being re-created): the node's network reports any shortage.
        return np.ones(ctx.n, dtype=bool) if room is None else room

    def reason(self, ctx: Context) -> str:
        return f"no free address in subnet {ctx.demand.subnet.rsplit('/', 1)[-1]}"
