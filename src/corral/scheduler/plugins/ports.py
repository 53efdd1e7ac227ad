"""Filter: none of the group's public (host) ports is taken on the node by another group."""

from __future__ import annotations

import numpy as np

from corral.scheduler.nodes import Mask
from corral.scheduler.plugin import Context


class PublicPorts:
    name = "PublicPorts"

    def applies(self, ctx: Context) -> bool:
        return bool(ctx.demand.ports)

    def feasible(self, ctx: Context) -> Mask:
        nodes, n = ctx.state.nodes, ctx.n
        ok = np.ones(n, dtype=bool)
        for port in ctx.demand.ports:
            held = nodes.ports.get(port)
            if held is not None:
                ok &= held[:n] == 0
        return ok

    def reason(self, ctx: Context) -> str:
        ports = ", ".join(f"{p}/{proto}" for p, proto in ctx.demand.ports)
        return f"public port {ports} in use" if len(ctx.demand.ports) == 1 else f"public ports {ports} in use"
