"""An NGroup's members in its load balancers' backend pools: in when ready, out before they stop.

The NGroup owns the pool addresses named after its members (``<prefix><guid>``);
others in the same pool are left alone. Each pool is written with the load
balancer's etag (``If-Match``), so a concurrent edit is never lost: the loser
re-reads and writes again next pass. A removal is *in force* once no node is
left to apply it (``pendingNodes`` empty): only then does a member's drain
period start.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from corral.cli.client import ApiError
from corral.model.armids import LB_TYPE, ResourceRef, parse_child_id
from corral.orchestrator.api import OrchestratorApi

log = logging.getLogger(__name__)


@dataclass
class PoolState:
    members: set[str] = field(default_factory=set)  # our members in any of the pools now
    listed: set[str] = field(default_factory=set)  # ... and as this pass read them, before any change
    in_force: bool = True  # every node applies what the pools say
    drain_seconds: float | None = None  # the longest drainPeriodInSeconds of the pools


class PoolSync:
    def __init__(self, api: OrchestratorApi) -> None:
        self.api = api
        self._lbs: dict[ResourceRef, dict[str, Any]] = {}

    def begin_pass(self) -> None:
        self._lbs.clear()  # read each load balancer once per pass

    def _lb(self, ref: ResourceRef) -> dict[str, Any]:
        if ref not in self._lbs:
            self._lbs[ref] = self.api.get_lb(ref)
        return self._lbs[ref]

    def sync(self, pool_ids: list[str], prefix: str, wanted: dict[str, str]) -> PoolState:
        """Make our addresses in every pool exactly ``wanted`` (member -> address)."""
        ours = re.compile(rf"^{re.escape(prefix)}[0-9a-f-]{{36}}$")
        state = PoolState()
        for pool_id in pool_ids:
            lb_ref, pool_name = parse_child_id(pool_id, LB_TYPE, "backendAddressPools")
            try:
                lb = self._lb(ResourceRef(*lb_ref))
            except ApiError as exc:
                if exc.status == 404:  # a pool that is gone sends nothing to anyone: nothing to wait for
                    continue
                log.warning("load balancer of pool %s: %s", pool_id, exc.message)
                state.in_force = False
                continue
            pool = next((p for p in lb["properties"]["backendAddressPools"]
                         if p["name"].lower() == pool_name.lower()), None)
            if pool is None:
                continue
            props = pool.get("properties") or {}
            if props.get("drainPeriodInSeconds") is not None:
                state.drain_seconds = max(state.drain_seconds or 0.0, float(props["drainPeriodInSeconds"]))
            current = props.get("loadBalancerBackendAddresses") or []
            kept = [a for a in current if not ours.match(str(a.get("name", "")))]
            mine = {str(a["name"]): (a.get("properties") or {}).get("ipAddress") for a in current
                    if ours.match(str(a.get("name", "")))}
            state.listed |= set(mine)
            if mine != wanted:
                addresses = kept + [{"name": n, "properties": {"ipAddress": ip}} for n, ip in sorted(wanted.items())]
                body = {"properties": {k: v for k, v in props.items() if k in ("drainPeriodInSeconds",)}}
                body["properties"]["loadBalancerBackendAddresses"] = addresses
                try:
                    self.api.put_pool(pool_id, body, lb.get("etag"))
                    mine = dict(wanted)
                except ApiError as exc:  # 412: someone else wrote first; next pass reads again
                    log.info("backend pool %s not updated (%s); retrying", pool_id, exc.message)
                self._lbs.pop(ResourceRef(*lb_ref), None)
                state.in_force = False  # just changed: nodes have yet to apply it
            elif lb["properties"].get("pendingNodes"):
                state.in_force = False
            state.members |= set(mine)
        return state
