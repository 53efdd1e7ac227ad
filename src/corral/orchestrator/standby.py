"""Standby pools: keep ``maxReadyCapacity`` groups of the pool's profile revision created and ready.

Pooled groups are ordinary container groups in the pool's resource group, tagged
``corral-standby-pool: <pool id>`` and named ``<pool>-<12 hex>``. A create that takes
one over (the control plane's claim) moves it out of the pool, so the pool simply
sees one fewer and makes another. Groups of another revision, or failed ones, are
replaced; groups of a pool that is gone are deleted.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from corral.cli.client import ApiError
from corral.model.armids import POOL_TAG, same_id
from corral.orchestrator.api import OrchestratorApi
from corral.orchestrator.members import parse_member

log = logging.getLogger(__name__)


def pooled_name(pool: str) -> str:
    return f"{pool.lower()[:50]}-{uuid.uuid4().hex[:12]}"


class StandbyPools:
    def __init__(self, api: OrchestratorApi) -> None:
        self.api = api

    def reconcile(self, pools: list[dict[str, Any]], groups: list[dict[str, Any]]) -> None:
        by_pool: dict[str, list[dict[str, Any]]] = {}
        for g in groups:
            tag = (g.get("tags") or {}).get(POOL_TAG)
            if tag:
                by_pool.setdefault(tag.lower(), []).append(g)
        known = {p["id"].lower() for p in pools}
        for tag, members in by_pool.items():
            if tag not in known:
                for g in members:
                    self._delete(g, f"its standby pool {tag} is gone")
        for pool in pools:
            try:
                self._fill(pool, by_pool.get(pool["id"].lower(), []))
            except ApiError as exc:
                log.warning("standby pool %s: %s", pool["name"], exc.message)

    def _fill(self, pool: dict[str, Any], groups: list[dict[str, Any]]) -> None:
        props = pool["properties"]
        want = int(props["elasticityProfile"]["maxReadyCapacity"])
        cgp = props["containerGroupProperties"]
        ref = cgp["containerGroupProfile"]
        live = []
        for g in groups:
            m = parse_member(g)
            if m.provisioning == "Deleting":
                continue
            if m.revision != ref.get("revision") or m.failed:
                self._delete(g, "it is of another profile revision" if not m.failed else "it failed")
                continue
            live.append(m)
        if len(live) > want:
            for m in sorted(live, key=lambda m: (m.ready, m.name))[:len(live) - want]:
                self._delete(m.body, "the pool holds fewer now")
        rg = pool["id"].split("/")[4]
        for _ in range(want - len(live)):
            body: dict[str, Any] = {
                "location": pool.get("location"), "tags": {POOL_TAG: pool["id"]},
                "properties": {"containerGroupProfile": {"id": ref["id"], "revision": ref.get("revision")}},
            }
            if cgp.get("subnetIds"):
                body["properties"]["subnetIds"] = [{"id": s["id"]} for s in cgp["subnetIds"]]
            self.api.put_group(rg, pooled_name(pool["name"]), body)

    def _delete(self, group: dict[str, Any], why: str) -> None:
        log.info("standby pool: deleting %s: %s", group["name"], why)
        try:
            self.api.delete_group(group["id"].split("/")[4], group["name"])
        except ApiError as exc:
            log.warning("could not delete pooled group %s: %s", group["name"], exc.message)


def is_pooled(group: dict[str, Any], pool_id: str) -> bool:
    return same_id((group.get("tags") or {}).get(POOL_TAG), pool_id)
