"""Filter: required anti-affinity, both ways. The group keeps out of domains (node or zone) holding a
group its own terms name, and out of domains where a bound group's required term names it."""

from __future__ import annotations

import numpy as np

from corral.scheduler.demand import Demand
from corral.scheduler.nodes import Mask
from corral.scheduler.plugin import Context


class RequiredAntiAffinity:
    name = "RequiredAntiAffinity"

    def applies(self, d: Demand) -> bool:
        return True  # a bound group's term may name any newcomer

    def feasible(self, ctx: Context) -> Mask:
        d, topo = ctx.demand, ctx.state.topology
        ok: Mask | None = None
        for term in d.anti_affinity:
            clash = topo.presence(topo.node_counts(term.selector), term.key)
            ok = ~clash if ok is None else ok & ~clash
        for term, holders in topo.anti_terms_against(d):
            clash = topo.presence(holders, term.key)
            ok = ~clash if ok is None else ok & ~clash
        return np.ones(ctx.n, dtype=bool) if ok is None else ok

    def reason(self, ctx: Context) -> str:
        return "anti-affinity conflict"
