"""Filter: required anti-affinity, both ways. The group keeps out of domains (node or zone) holding a
group its own terms name, and out of domains where a bound group's required term names it."""

from __future__ import annotations

import numpy as np

from corral.scheduler.nodes import Mask
from corral.scheduler.plugin import Context


class RequiredAntiAffinity:
    name = "RequiredAntiAffinity"

    def applies(self, ctx: Context) -> bool:
        # A bound group's term may name any newcomer.
        against = ctx.state.topology.anti_terms_against(ctx.demand) if ctx.state.topology.anti else []
        ctx.scratch["anti_against"] = against
        return bool(ctx.demand.anti_affinity or against)

    def feasible(self, ctx: Context) -> Mask:
        d, topo = ctx.demand, ctx.state.topology
        ok = np.ones(ctx.n, dtype=bool)
        for term in d.anti_affinity:
            topo.mark(ok, topo.node_counts(term.selector), term.key, False)
        for term, holders in ctx.scratch["anti_against"]:
            topo.mark(ok, holders, term.key, False)
        return ok

    def reason(self, ctx: Context) -> str:
        return "anti-affinity conflict"
