"""An NGroup's members as the orchestrator sees them through the API, and the tags it keeps on them.

A member is an ordinary container group. What the orchestrator must remember
about one survives its own restarts because it is on the group, as tags:

* ``corral-ngroup`` / ``corral-ngroup-uid``: whose member it is;
* ``corral-ngroup-phase``: what is being done to it (empty: in service when ready):
  ``drain-delete``, ``drain-stop``, ``drain-restart``, ``drain-update-<rev>`` (leaving the
  load balancer before that), then ``restarting``, ``updating-<rev>``, ``stopped``, ``starting``;
* ``corral-ngroup-restart``: the NGroup restart generation it has been (re)started for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from corral.model.armids import NGROUP_TAG, same_id

UID_TAG = "corral-ngroup-uid"
PHASE_TAG = "corral-ngroup-phase"
RESTART_TAG = "corral-ngroup-restart"
DRAIN = "drain-"


@dataclass
class Member:
    name: str
    rg: str
    revision: int | None
    state: str  # instanceView.state
    provisioning: str  # provisioningState
    ready: bool  # Running, caught up with its spec, every container ready
    failed: bool  # finished for good, or could not be provisioned (waiting for room on a node is not failing)
    restarts: int
    ip: str | None
    tags: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)  # the group as the API rendered it

    @property
    def phase(self) -> str:
        return self.tags.get(PHASE_TAG, "")

    @property
    def draining(self) -> bool:
        return self.phase.startswith(DRAIN)

    @property
    def leaving(self) -> bool:
        """On its way out for good: not counted as a member any more."""
        return self.phase == "drain-delete" or self.provisioning == "Deleting"

    @property
    def in_service(self) -> bool:
        return self.ready and not self.phase

    @property
    def restart_generation(self) -> int:
        try:
            return int(self.tags.get(RESTART_TAG, "0"))
        except ValueError:
            return 0

    @property
    def unhealthy(self) -> bool:
        """Failed, or crash-looping: its containers restarted and it is not ready."""
        return self.failed or (self.restarts > 0 and not self.ready)


def member_of(group: dict[str, Any], ngroup_id: str) -> bool:
    return same_id((group.get("tags") or {}).get(NGROUP_TAG), ngroup_id)


def parse_member(group: dict[str, Any]) -> Member:
    props = group.get("properties") or {}
    iv = props.get("instanceView") or {}
    state = str(iv.get("state") or "Pending")
    prov = str(props.get("provisioningState") or "Pending")
    containers = props.get("containers") or []
    ready_all = bool(containers) and all(
        (c.get("properties") or {}).get("instanceView", {}).get("ready") is True for c in containers)
    restarts = sum(int((c.get("properties") or {}).get("instanceView", {}).get("restartCount") or 0)
                   for c in containers)
    ref = props.get("containerGroupProfile") or {}
    revision = ref.get("revision")
    ip = iv.get("privateIp") or (props.get("ipAddress") or {}).get("ip")
    events = iv.get("events") or []
    unplaced = state == "Pending" and bool(events) and events[-1].get("name") == "FailedScheduling"
    return Member(
        name=str(group["name"]), rg=str(group["id"]).split("/")[4], revision=int(revision) if revision else None,
        state=state, provisioning=prov,
        ready=state == "Running" and prov == "Succeeded" and ready_all,
        failed=state in ("Failed", "Succeeded") or (prov == "Failed" and not unplaced),
        restarts=restarts, ip=ip, tags=dict(group.get("tags") or {}), body=group,
    )
