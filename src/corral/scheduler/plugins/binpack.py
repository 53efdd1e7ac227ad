"""Score: bin-packing (most allocated: fill busy nodes, keep others empty) or spreading (least
allocated: balance the load), the cluster's choice. Both read CPU and memory as allocated after
the group is placed, averaged."""

from __future__ import annotations

import numpy as np

from corral.scheduler.nodes import Mask
from corral.scheduler.plugin import Context


class ResourceAllocation:
    name = "ResourceAllocation"
    weight = 1.0

    def __init__(self, strategy: str = "spread") -> None:
        self.most = strategy == "binpack"

    def applies(self, ctx: Context) -> bool:
        return True

    def score(self, ctx: Context, feasible: Mask) -> np.ndarray:
        nodes, n, d = ctx.state.nodes, ctx.n, ctx.demand
        used = nodes.inv_cpu[:n] * d.cpu
        used += nodes.inv_mem[:n] * d.mem
        used += nodes.util[:n]
        used *= 0.5
        return used if self.most else 1 - used
