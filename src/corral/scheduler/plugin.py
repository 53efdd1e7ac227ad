"""The one interface every placement check implements: a filter (which nodes may take the group, and
why the others may not) or a score (how much each feasible node is preferred).

Both work on whole arrays over the nodes at once; ``applies`` lets the pipeline
skip a plugin the group does not need (no GPUs asked, no affinity, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from corral.scheduler.demand import Demand
from corral.scheduler.nodes import Mask
from corral.scheduler.state import ClusterState


@dataclass(slots=True)
class Context:
    """One placement: the group, the snapshot, and what plugins computed for it (shared between them)."""

    demand: Demand
    state: ClusterState
    n: int
    scratch: dict[str, Any] = field(default_factory=dict)

    def eligible(self) -> Mask:
        """Nodes that pass the node-attribute filters (health, osType, zones, node selector): the domains
        a spread counts, whether or not they have room."""
        d, nodes = self.demand, self.state.nodes

        def compute() -> Mask:
            n = nodes.n
            m = nodes.present[:n] & nodes.ready[:n] & ~nodes.cordoned[:n]
            m &= nodes.linux[:n] if d.os == "Linux" else ~nodes.linux[:n]
            if d.zones:
                m &= nodes.zone_mask(d.zones)
            if d.node_selector:
                m &= nodes.label_mask(d.node_selector)
            return m
        return nodes.memo(("eligible", d.static_key), compute)

    def eligible_count(self) -> int:
        return int(self.state.nodes.memo(("eligible count", self.demand.static_key),
                                          lambda: np.count_nonzero(self.eligible())))

    def eligible_zones(self) -> np.ndarray:
        """The zone ids of the eligible nodes."""
        nodes = self.state.nodes

        def compute() -> np.ndarray:
            zone = nodes.zone[: nodes.n]
            return np.unique(zone[self.eligible() & (zone >= 0)])
        return nodes.memo(("eligible zones", self.demand.static_key), compute)


class FilterPlugin(Protocol):
    name: str

    def applies(self, ctx: Context) -> bool:
        """Whether the group needs this check at all (it may stash what it found in ``ctx.scratch``)."""
        ...

    def feasible(self, ctx: Context) -> Mask:
        """True for the nodes this check lets the group go to."""
        ...

    def reason(self, ctx: Context) -> str:
        """Why a node this check rejects cannot take the group, in the words of the FailedScheduling event."""
        ...


class ScorePlugin(Protocol):
    name: str
    weight: float

    def applies(self, ctx: Context) -> bool: ...

    def score(self, ctx: Context, feasible: Mask) -> np.ndarray:
        """A preference per node, about 0..1 (higher is better); only the feasible nodes' values matter."""
        ...
