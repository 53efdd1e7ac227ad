"""Topology spread (Kubernetes topology spread constraints): the groups of one family (same value of
the constraint's tag) spread over nodes or zones, no domain more than ``maxSkew`` above the emptiest.

The domains counted are those of the nodes that pass the node-attribute filters (health, osType,
zones, node selector), full or not, so a full zone holds its siblings back rather than being skipped.
``DoNotSchedule`` is a filter; ``ScheduleAnyway`` a score favouring the emptier domains.
"""

from __future__ import annotations

import numpy as np

from corral.scheduler.demand import NODE, Spread
from corral.scheduler.nodes import Mask
from corral.scheduler.plugin import Context


def _domain_counts(ctx: Context, s: Spread) -> tuple[np.ndarray, int, int]:
    """Per node, the family's groups in its domain; and the least and most over the counted domains."""
    topo = ctx.state.topology
    counts = topo.node_counts(s.family)
    per_node = topo.domain_counts(counts, s.key)
    seen = per_node[ctx.eligible()] if s.key == NODE else topo.zone_counts(counts)[ctx.eligible_zones()]
    if seen.size == 0:
        return per_node, 0, 0
    return per_node, int(seen.min()), int(seen.max())


class SpreadFilter:
    name = "TopologySpread"

    def applies(self, ctx: Context) -> bool:
        return any(s.hard for s in ctx.demand.spread)

    def feasible(self, ctx: Context) -> Mask:
        # Domain counts are tiny next to the node arrays (a family sits on few nodes, in few zones):
        # work on them, and touch the node arrays once per constraint.
        ok = np.ones(ctx.n, dtype=bool)
        topo, nodes = ctx.state.topology, ctx.state.nodes
        for s in ctx.demand.spread:
            if not s.hard:
                continue
            counts = topo.node_counts(s.family)
            if s.key == NODE:
                eligible = ctx.eligible()
                held = [c for i, c in counts.items() if eligible[i]]
                least = min(held) if held and len(held) == ctx.eligible_count() else 0
                # A node holding none is always within maxSkew (0 + 1 - least <= 1 <= maxSkew).
                ok[[i for i, c in counts.items() if c + 1 - least > s.max_skew]] = False
            else:
                per_zone = topo.zone_counts(counts)
                seen = per_zone[ctx.eligible_zones()]
                least = int(seen.min()) if seen.size else 0
                allowed = np.flatnonzero(per_zone[:-1] + 1 - least <= s.max_skew)
                ok &= nodes.zone_ids_mask(tuple(allowed.tolist()))  # a node in no zone is in no domain
        return ok

    def reason(self, ctx: Context) -> str:
        return "topology spread not satisfied"


class SpreadScore:
    name = "TopologySpreadScore"
    weight = 2.0

    def applies(self, ctx: Context) -> bool:
        return any(not s.hard for s in ctx.demand.spread)

    def score(self, ctx: Context, feasible: Mask) -> np.ndarray:
        total = np.zeros(ctx.n)
        soft = [s for s in ctx.demand.spread if not s.hard]
        for s in soft:
            per_node, least, most = _domain_counts(ctx, s)
            total += 1 - (per_node - least) / (most - least + 1)
        return total / len(soft)
