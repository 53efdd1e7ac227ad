"""One NGroup's reconcile pass: read, plan, act through the API, keep pools and status in step.

``plan`` decides; this module does: creates members, moves them through their
phases (a drain ends when the member's removal from the load balancers is in
force on every node and the pool's drain period has passed; then the member is
deleted, stopped, restarted or updated in place), writes the backend pools, runs
autoscale, and reports the NGroup's status (which the DNS server reads).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from corral.cli.client import ApiError
from corral.model.armids import NGROUP_TAG
from corral.model.ngroup import (
    DEFAULT_DRAIN,
    AutoscaleStatus,
    MemberStatus,
    NGroupSpec,
    NGroupStatus,
    member_prefix,
    record_event,
)
from corral.orchestrator.api import OrchestratorApi
from corral.orchestrator.autoscale import Autoscaler, UsageMeter, average, by_member, usage_of
from corral.orchestrator.lbsync import PoolSync
from corral.orchestrator.members import PHASE_TAG, RESTART_TAG, UID_TAG, Member, member_of, parse_member
from corral.orchestrator.plan import Desired, plan

log = logging.getLogger(__name__)

METRICS_PERIOD = 5.0  # seconds between autoscale's readings of the members' usage (agents sample every 5 s)
# The last two minutes at the API's finest grain, the minute in progress included: two readings a period
# apart always overlap, and their difference is the samples that arrived in between (autoscale.UsageMeter).
METRICS_TIMESPAN = "PT2M"
METRICS_INTERVAL = "PT1M"
MAX_SERIES = 20000  # top: every member's series (at most 1,000 members, and those that left within the span)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Pass:
    """What one pass knows of the NGroup it works on."""

    ng_id: str
    uid: str
    rg: str
    name: str
    spec: NGroupSpec
    desired: Desired
    st: NGroupStatus


class NGroupReconciler:
    def __init__(self, api: OrchestratorApi, pools: PoolSync) -> None:
        self.api = api
        self.pools = pools
        self._drained_since: dict[str, float] = {}  # member -> monotonic time its removal was in force
        # By NGroup uid (forgotten with the NGroup):
        self._autoscalers: dict[str, Autoscaler] = {}
        self._metrics_at: dict[str, float] = {}
        self._meters: dict[str, dict[str, UsageMeter]] = {}  # -> member -> its recent usage
        self._reported: dict[str, str] = {}

    def reconcile(self, ng: dict[str, Any], groups: list[dict[str, Any]]) -> float:
        """One pass over one NGroup; seconds until it wants another pass (at the latest)."""
        props = ng["properties"]
        ng_id, uid, rg, name = ng["id"], props["resourceGuid"], ng["id"].split("/")[4], ng["name"]
        spec = NGroupSpec.model_validate({k: ng.get(k) for k in ("location", "tags", "zones", "identity", "properties")
                                          if ng.get(k) is not None})
        st = NGroupStatus.model_validate(props.get("status") or {})
        previous = {m.name: m for m in st.members}
        members: list[Member] = []
        for g in groups:
            if not member_of(g, ng_id):
                continue
            m = parse_member(g)
            if m.tags.get(UID_TAG) != uid:  # a member of an earlier NGroup of that name
                self._delete(m, st, "it belongs to an earlier NGroup of this name")
                continue
            members.append(m)
        p = spec.properties
        deleting = props.get("provisioningState") == "Deleting"
        count = self._count(ng_id, uid, spec, st, members)
        desired = Desired(
            generation=int(props["generation"]), restart_generation=int(props["restartGeneration"]),
            revision=int(p.profile.revision or 0), count=count, rolling=p.updateProfile.updateMode == "Rolling",
            profile=p.rolling, maintain=bool(p.elasticProfile.maintainDesiredCount),
            running=props.get("desiredState", "Running") == "Running", deleting=deleting)
        ctx = Pass(ng_id=ng_id, uid=uid, rg=rg, name=name, spec=spec, desired=desired, st=st)
        rollout_before = st.rollout.model_dump_json() if st.rollout else None
        acts = plan(desired, members, st, _now())
        if (st.rollout.model_dump_json() if st.rollout else None) != rollout_before and not self._report(
                rg, name, uid, st):
            # A rollout step (a batch begun, a rollback) is on record before it is acted on: an orchestrator
            # that dies between the two leaves its successor the batch and its deadline, never members of a
            # batch it knows nothing of. Not recorded: not acted on; the next pass plans again.
            return 1.0
        by_name = {m.name: m for m in members}
        for mname, phase in acts.phase.items():
            self._set_phase(by_name[mname], phase, st)
        for mname in acts.start:
            m = by_name[mname]
            if self._call(st, m, "start", lambda m=m: self.api.group_action(m.rg, m.name, "start")):
                self._set_phase(m, "starting", st)
        for revision in acts.create:
            self._create(ctx, revision, members)
        # The pools: our members that serve, no others.
        serving = {m.name: m.ip for m in members if m.in_service and m.ip and not deleting and desired.running}
        pool_state = self.pools.sync(p.profile.pool_ids(), member_prefix(name, spec), serving)
        drain = next(d for d in (p.updateProfile.drain, pool_state.drain_seconds, DEFAULT_DRAIN) if d is not None)
        wake = 1.0
        for m in list(members):
            out = pool_state.in_force and m.name not in pool_state.members
            # A drain waits for whatever may have been sent to the member: it is ready (established
            # connections, DNS answers, whoever put it in service), or the pools or the last status name it.
            # Nothing kept in memory decides this, so a new orchestrator (a new leader) drains as fully.
            before = previous.get(m.name)
            served = m.ready or m.name in pool_state.listed or (before is not None and before.inService)
            wake = min(wake, self._advance(ctx, m, out, served, drain))
        st.members = [MemberStatus(name=m.name, revision=m.revision, state=m.state, ready=m.ready, ip=m.ip,
                                   inService=m.name in serving) for m in members if m.provisioning != "Deleting"]
        if deleting and not members:
            st.released = True
        self._report(rg, name, uid, st)
        return max(0.05, wake)

    # count and autoscale ----------------------------------------------------------
    def _count(self, ng_id: str, uid: str, spec: NGroupSpec, st: NGroupStatus, members: list[Member]) -> int:
        elastic = spec.properties.elasticProfile
        a = elastic.autoscale
        if a is None:
            st.autoscale = None
            return elastic.desiredCount
        if st.autoscale is None:
            st.autoscale = AutoscaleStatus(desiredCount=elastic.desiredCount)
        due = time.monotonic() - self._metrics_at.get(uid, 0.0) >= METRICS_PERIOD
        if due:
            self._metrics_at[uid] = time.monotonic()
            usages = []
            names = {m.name for m in members}
            meters = self._meters[uid] = {n: u for n, u in self._meters.get(uid, {}).items() if n in names}
            serving = [m for m in members if m.in_service]
            per_member: dict[str, dict[str, Any]] = {}
            if serving:
                try:  # one query for the NGroup, a series per member (members that left lately too)
                    per_member = by_member(self.api.metrics(
                        ng_id, ["CpuUsage", "MemoryUsage"], METRICS_TIMESPAN, METRICS_INTERVAL, "Total,Count",
                        **{"$filter": "containerGroupName eq '*'", "top": str(MAX_SERIES)}))
                except ApiError as exc:
                    log.debug("metrics of NGroup %s: %s", ng_id, exc.message)
            for m in serving:
                if m.name in per_member:
                    usages.append(usage_of(m.body, meters.setdefault(m.name, UsageMeter()).update(per_member[m.name])))
            before = st.autoscale.desiredCount
            st.autoscale = self._autoscalers.setdefault(uid, Autoscaler()).decide(a, st.autoscale, average(usages),
                                                                                  _now())
            if st.autoscale.desiredCount != before:
                record_event(st.events, "Autoscaled", st.autoscale.message)
        return max(a.minCount, min(a.maxCount, st.autoscale.desiredCount))

    # acting -----------------------------------------------------------------------
    def _call(self, st: NGroupStatus, m: Member | None, what: str, fn: Any) -> bool:
        try:
            fn()
            return True
        except ApiError as exc:
            who = f" member {m.name}" if m else ""
            record_event(st.events, "ActionFailed", f"could not {what}{who}: {exc.message}", "Warning")
            log.warning("NGroup: could not %s%s: %s", what, who, exc.message)
            return False

    def _set_phase(self, m: Member, phase: str, st: NGroupStatus, extra: dict[str, str] | None = None) -> None:
        tags = {k: v for k, v in m.tags.items() if k != PHASE_TAG}
        if phase:
            tags[PHASE_TAG] = phase
        tags.update(extra or {})
        if self._call(st, m, f"mark ({phase or 'in service'})", lambda: self.api.set_group_tags(m.rg, m.name, tags)):
            m.tags = tags

    def _delete(self, m: Member, st: NGroupStatus, why: str) -> None:
        log.info("NGroup: deleting member %s: %s", m.name, why)
        self._call(st, m, "delete", lambda: self.api.delete_group(m.rg, m.name))
        self._drained_since.pop(m.name, None)

    @staticmethod
    def _body(ctx: Pass, revision: int, tags: dict[str, str], zones: list[str] | None) -> dict[str, Any]:
        """A member's PUT body: the profile revision, with what the NGroup sets on its members."""
        stub = ctx.spec.properties.profile
        props: dict[str, Any] = {"containerGroupProfile": {"id": stub.resource.id, "revision": revision}}
        if stub.containerGroupProperties is not None:
            props.update(stub.containerGroupProperties.model_dump(mode="json", exclude_none=True))
        placement = ctx.spec.properties.placementProfile
        if placement is not None and (placement.faultDomainCount or 0) > 1:
            # Fault domains are nodes: the members (one family, by the NGroup's uid tag) spread evenly over them.
            props["placement"] = {"spread": [{"tag": UID_TAG, "topologyKey": "node", "maxSkew": 1}]}
        body: dict[str, Any] = {"location": ctx.spec.location, "tags": tags, "properties": props}
        if zones:
            body["zones"] = zones
        return body

    def _create(self, ctx: Pass, revision: int, members: list[Member]) -> None:
        zones = None
        if ctx.spec.zones:  # the zone with the fewest members
            used = Counter(z for m in members for z in (m.body.get("zones") or []))
            zones = [min(ctx.spec.zones, key=lambda z: (used[z], z))]
        tags = {**(ctx.spec.tags or {}), NGROUP_TAG: ctx.ng_id, UID_TAG: ctx.uid,
                RESTART_TAG: str(ctx.desired.restart_generation)}
        member = f"{member_prefix(ctx.name, ctx.spec)}{uuid.uuid4()}"
        try:
            g = self.api.put_group(ctx.rg, member, self._body(ctx, revision, tags, zones))
        except ApiError as exc:
            record_event(ctx.st.events, "CreateFailed", f"could not create a member of revision {revision}: "
                         f"{exc.message}", "Warning")
            return
        members.append(parse_member(g))

    def _advance(self, ctx: Pass, m: Member, out_of_pools: bool, served: bool, drain: float) -> float:
        """Move one member along its phase; seconds until it may move again."""
        st, d = ctx.st, ctx.desired
        phase = m.phase
        if not phase or m.provisioning == "Deleting":
            return 1.0
        if phase.startswith("drain-"):
            if served:
                if not out_of_pools:
                    return 0.2  # the pools still name it, or a node has yet to apply the change
                since = self._drained_since.setdefault(m.name, time.monotonic())
                left = drain - (time.monotonic() - since)
                if left > 0:
                    return left
            self._drained_since.pop(m.name, None)
            action = phase[len("drain-"):]
            if action == "delete":
                self._delete(m, st, "it is leaving the NGroup")
            elif action == "stop":
                if self._call(st, m, "stop", lambda: self.api.group_action(m.rg, m.name, "stop")):
                    self._set_phase(m, "stopped", st)
            elif action == "restart":
                if self._call(st, m, "restart", lambda: self.api.group_action(m.rg, m.name, "restart")):
                    self._set_phase(m, "restarting", st)
            elif action.startswith("update-"):
                self._update_in_place(ctx, m, int(action[len("update-"):]))
            return 0.2
        if phase in ("restarting", "starting") or phase.startswith("updating-"):
            want = int(phase[len("updating-"):]) if phase.startswith("updating-") else None
            if m.ready and (want is None or m.revision == want):
                self._set_phase(m, "", st, {RESTART_TAG: str(max(m.restart_generation, d.restart_generation))})
            return 0.5
        return 1.0

    def _update_in_place(self, ctx: Pass, m: Member, revision: int) -> None:
        tags = {**m.tags, PHASE_TAG: f"updating-{revision}"}
        try:
            self.api.put_group(m.rg, m.name, self._body(ctx, revision, tags, m.body.get("zones")))
            m.tags = tags
        except ApiError as exc:
            record_event(ctx.st.events, "InPlaceUpdateFailed", f"member {m.name} cannot be updated in place to "
                         f"revision {revision} ({exc.message}); replacing it", "Warning")
            self._delete(m, ctx.st, "it could not be updated in place")

    def _report(self, rg: str, name: str, uid: str, st: NGroupStatus) -> bool:
        """Write the status (unless it is what was written last); whether it is on record."""
        text = st.model_dump_json()
        if self._reported.get(uid) == text:
            return True
        try:
            self.api.report_ngroup(rg, name, uid, st.model_dump(mode="json", exclude_none=True))
            self._reported[uid] = text
            return True
        except ApiError as exc:
            if exc.status != 404:
                log.warning("NGroup %s: status not reported: %s", name, exc.message)
            return False

    def forget(self, live_uids: set[str]) -> None:
        """Drop what is kept for NGroups that are gone."""
        kept: dict[str, Any]
        for kept in (self._reported, self._autoscalers, self._metrics_at, self._meters):
            for uid in [u for u in kept if u not in live_uids]:
                del kept[uid]
