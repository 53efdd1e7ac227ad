"""Affinity between groups (Kubernetes inter-pod affinity, by tags): a required term is a filter (the
node's domain must hold a group carrying the tags), a preferred one (``required: false``, with a
``weight``) adds to the score; preferred anti-affinity terms subtract from it."""

from __future__ import annotations

import numpy as np

from corral.scheduler.nodes import Mask
from corral.scheduler.plugin import Context


class RequiredAffinity:
    name = "RequiredAffinity"

    def applies(self, ctx: Context) -> bool:
        return bool(ctx.demand.affinity)

    def feasible(self, ctx: Context) -> Mask:
        d, topo = ctx.demand, ctx.state.topology
        ok = np.ones(ctx.n, dtype=bool)
        for term in d.affinity:
            counts = topo.node_counts(term.selector)
            if not counts and term.selector.matches(d.scope, d.tags):
                continue  # the first of a set that wants to be together goes anywhere (as in Kubernetes)
            ok &= topo.presence(counts, term.key)
        return ok

    def reason(self, ctx: Context) -> str:
        return "affinity not satisfied"


class PreferredAffinity:
    name = "PreferredAffinity"
    weight = 2.0

    def applies(self, ctx: Context) -> bool:
        return bool(ctx.demand.preferences)

    def score(self, ctx: Context, feasible: Mask) -> np.ndarray:
        topo = ctx.state.topology
        total = np.zeros(ctx.n)
        norm = 0
        for p in ctx.demand.preferences:
            total += p.weight * topo.presence(topo.node_counts(p.term.selector), p.term.key)
            norm += abs(p.weight)
        return (total / norm + 1) / 2
