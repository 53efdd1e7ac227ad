"""Filters: a node must be ready (its heartbeat is current) and not cordoned to take new groups."""

from __future__ import annotations

from corral.scheduler.nodes import Mask
from corral.scheduler.plugin import Context


class NodeReady:
    name = "NodeReady"

    def applies(self, ctx: Context) -> bool:
        return True

    def feasible(self, ctx: Context) -> Mask:
        return ctx.state.nodes.ready[: ctx.n]

    def reason(self, ctx: Context) -> str:
        return "node not ready"


class NodeSchedulable:
    name = "NodeSchedulable"

    def applies(self, ctx: Context) -> bool:
        return True

    def feasible(self, ctx: Context) -> Mask:
        return ctx.state.nodes.schedulable()

    def reason(self, ctx: Context) -> str:
        return "node cordoned"
