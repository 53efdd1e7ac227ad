"""Filters: the node has the group's requested CPU, memory and GPUs (by SKU) free."""

from __future__ import annotations

import numpy as np

from corral.scheduler.nodes import Mask
from corral.scheduler.plugin import Context

EPSILON = 1e-9  # requests are decimal fractions; their float sums drift


class Cpu:
    name = "Cpu"

    def applies(self, ctx: Context) -> bool:
        return True

    def feasible(self, ctx: Context) -> Mask:
        return ctx.state.nodes.cpu_free[: ctx.n] >= ctx.demand.cpu - EPSILON

    def reason(self, ctx: Context) -> str:
        return "insufficient cpu"


class Memory:
    name = "Memory"

    def applies(self, ctx: Context) -> bool:
        return True

    def feasible(self, ctx: Context) -> Mask:
        return ctx.state.nodes.mem_free[: ctx.n] >= ctx.demand.mem - EPSILON

    def reason(self, ctx: Context) -> str:
        return "insufficient memory"


class Gpu:
    name = "Gpu"

    def applies(self, ctx: Context) -> bool:
        return bool(ctx.demand.gpus)

    def feasible(self, ctx: Context) -> Mask:
        nodes, n = ctx.state.nodes, ctx.n
        ok = np.ones(n, dtype=bool)
        for sku, count in ctx.demand.gpus:
            if sku not in nodes.gpu_cap:
                return np.zeros(n, dtype=bool)
            ok &= nodes.gpu_cap[sku][:n] - nodes.gpu_table(sku, used=True)[:n] >= count
        return ok

    def reason(self, ctx: Context) -> str:
        return "insufficient gpu " + "+".join(sku for sku, _ in ctx.demand.gpus)
