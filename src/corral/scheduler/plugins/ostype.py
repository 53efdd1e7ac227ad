"""Filter: the node runs the group's osType."""

from __future__ import annotations

from corral.scheduler.nodes import Mask
from corral.scheduler.plugin import Context


class OsType:
    name = "OsType"

    def applies(self, ctx: Context) -> bool:
        return True

    def feasible(self, ctx: Context) -> Mask:
        linux = ctx.state.nodes.linux[: ctx.n]
        return linux if ctx.demand.os == "Linux" else ~linux

    def reason(self, ctx: Context) -> str:
        return f"osType {ctx.demand.os} not supported"
