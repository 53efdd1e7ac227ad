"""One NGroup's next steps, decided from what is (its members) and what should be: a pure function.

``plan`` reads the NGroup's desired state, its members and the status it last
reported, and returns what to do now: members to create (at which revision),
members to move to a new phase (a drain before a delete, stop, restart or in-place
update), and the status to report (rollout, history, events). The reconciler
carries the actions out through the API; the next pass plans again from what
then is, so a crash or a failed call costs a pass, never a wrong state.

Rolling updates (replace mode) surge: a batch of ``maxBatchPercent`` new members is
created, and only once all of them are ready do as many old ones leave (drain,
then delete), so as many members serve as before at every moment. In-place mode
drains a batch, updates it, and lets it back in once ready. A batch with more
than ``maxUnhealthyPercent`` unhealthy members (failed, crash-looping, or not ready
within ``batchReadyTimeout``) rolls the NGroup back to the last good revision by
itself (Corral's automatic rollback), or, with it turned off, stops the rollout.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from corral.model.ngroup import HistoryEntry, NGroupStatus, RollingUpdateProfile, Rollout, record_event
from corral.orchestrator.members import DRAIN, Member

HISTORY = 20


@dataclass
class Desired:
    generation: int
    restart_generation: int
    revision: int  # the profile revision the spec names (resolved)
    count: int  # members wanted (autoscale's count when it is on)
    rolling: bool
    profile: RollingUpdateProfile
    maintain: bool
    running: bool = True
    deleting: bool = False


@dataclass
class Actions:
    create: list[int] = field(default_factory=list)  # one revision per member to create
    phase: dict[str, str] = field(default_factory=dict)  # member -> the phase it enters now
    start: list[str] = field(default_factory=list)  # stopped members to start

    def drain(self, m: Member, phase: str) -> None:
        self.phase[m.name] = phase


def batch_size(count: int, percent: int) -> int:
    return max(1, math.ceil(count * percent / 100))


def plan(d: Desired, members: list[Member], st: NGroupStatus, now: datetime) -> Actions:
    acts = Actions()
    active = [m for m in members if not m.leaving]
    st.observedGeneration = d.generation
    if d.deleting:
        for m in active:
            acts.drain(m, "drain-delete")
        st.phase = "Deleting"
        return acts
    if d.maintain and not _rollout_due(d, active, st):  # (a rollout judges its own failed members)
        for m in [m for m in active if m.failed and not m.phase]:
            record_event(st.events, "ReplacingMember", f"member {m.name} is {m.state.lower()} "
                         f"(provisioning {m.provisioning}); replacing it", "Warning")
            acts.drain(m, "drain-delete")
        active = [m for m in active if m.name not in acts.phase]
    if not d.running:
        for m in active:
            if m.phase not in ("stopped", "drain-stop"):
                acts.drain(m, "drain-stop")
        st.phase = "Stopped" if all(m.phase == "stopped" for m in active) else "Scaling"
        st.observedRestartGeneration = d.restart_generation
        return acts
    for m in active:
        if m.phase in ("stopped", "drain-stop"):
            acts.start.append(m.name)
    revision, rolling_out = _rollout(d, active, st, now, acts)
    if not rolling_out:
        _scale(d, [m for m in active if acts.phase.get(m.name) != "drain-delete"], revision, st, acts)
        _restart(d, active, st, acts)
    _summarize(d, active, st, acts, revision, rolling_out, leaving=len(active) < len(members))
    return acts


def _rollout(d: Desired, active: list[Member], st: NGroupStatus, now: datetime, acts: Actions) -> tuple[int, bool]:
    """The revision new members get, and whether a rollout is in progress (it then manages the count)."""
    ro = st.rollout
    if ro is not None and ro.generation == d.generation and ro.state != "Progressing":
        return (ro.fromRevision or d.revision) if ro.state in ("RolledBack", "Failed") else d.revision, False
    if ro is None or ro.generation != d.generation:
        stale = [m for m in active if not _at(m, d.revision)]
        if not d.rolling or not stale:
            return d.revision, False
        revisions = Counter(m.revision for m in stale if m.revision is not None)
        start = st.currentRevision or (revisions.most_common(1)[0][0] if revisions else None)
        ro = st.rollout = Rollout(generation=d.generation, fromRevision=start, toRevision=d.revision)
        record_event(st.events, "RollingUpdate", f"rolling {len(stale)} member(s) from revision {start} to "
                     f"{d.revision}, {batch_size(d.count, d.profile.maxBatchPercent)} at a time")
    p = d.profile
    target = ro.fromRevision if ro.rollingBack and ro.fromRevision else ro.toRevision
    n = d.count
    new = [m for m in active if _at(m, target)]
    old = [m for m in active if not _at(m, target)]
    pending = [m for m in new if not m.in_service]
    late = (ro.batchStartedAt is not None and ro.batchReadyAt is None and bool(pending)
            and (now - ro.batchStartedAt).total_seconds() > p.ready_timeout)
    unhealthy = [m for m in pending if m.unhealthy]
    allowed = n * p.maxUnhealthyPercent // 100
    if not ro.rollingBack and (late or len(unhealthy) > allowed or ro.failures + len(unhealthy) > allowed):
        names = ", ".join(sorted(m.name for m in (pending if late else unhealthy)))
        why = (f"batch {ro.batch} of revision {target} not ready within {p.ready_timeout:g} s ({names})" if late
               else f"{ro.failures + len(unhealthy)} member(s) of revision {target} unhealthy ({names}), more than "
                    f"maxUnhealthyPercent {p.maxUnhealthyPercent}% of {n} allows")
        if p.automaticRollback and ro.fromRevision is not None and ro.fromRevision != ro.toRevision:
            ro.rollingBack, ro.batchStartedAt, ro.batchReadyAt = True, None, None
            ro.message = f"rolled back to revision {ro.fromRevision}: {why}"
            record_event(st.events, "RollingBack", ro.message, "Warning")
            return ro.fromRevision, True
        _finish(d, st, ro, "Failed", now, f"rolling update stopped: {why}")
        return ro.fromRevision or d.revision, False
    # Failed members of the target revision go and are made again, within the same batch.
    for m in [m for m in pending if m.failed and not m.draining]:
        acts.drain(m, "drain-delete")
        if not ro.rollingBack:
            ro.failures += 1
    new = [m for m in new if m.name not in acts.phase]
    pending = [m for m in pending if m.name not in acts.phase]
    ready = [m for m in new if m.in_service]
    if not pending and ro.batchStartedAt is not None and ro.batchReadyAt is None:
        ro.batchReadyAt = now
    if p.inPlaceUpdate:
        return _in_place(d, st, ro, old, new, target, now, acts)
    if pending:
        return target, True
    # Surge: old members leave only as new ones are ready, so as many serve as before.
    excess = len(old) + len(ready) - n
    for m in sorted(old, key=lambda m: (m.in_service, m.name))[:max(0, excess)]:
        acts.drain(m, "drain-delete")
    if len(old) - max(0, excess) > 0 or len(new) < n:
        fresh = ro.batchStartedAt is None or ro.batchReadyAt is not None
        if fresh and ro.batchReadyAt is not None and (now - ro.batchReadyAt).total_seconds() < p.pause:
            return target, True
        k = min(batch_size(n, p.maxBatchPercent), n - len(new))
        if k > 0:
            acts.create += [target] * k
            if fresh:
                ro.batch += 1
                ro.batchStartedAt, ro.batchReadyAt = now, None
        return target, True
    _finish(d, st, ro, "RolledBack" if ro.rollingBack else "Complete", now, ro.message)
    return target, False


def _rollout_due(d: Desired, active: list[Member], st: NGroupStatus) -> bool:
    """Whether a rolling update is in progress, or about to start, for the current generation."""
    ro = st.rollout
    if ro is not None and ro.generation == d.generation:
        return ro.state == "Progressing"
    return d.rolling and any(not _at(m, d.revision) for m in active)


def _in_place(d: Desired, st: NGroupStatus, ro: Rollout, old: list[Member], new: list[Member], target: int,
              now: datetime, acts: Actions) -> tuple[int, bool]:
    p = d.profile
    busy = [m for m in new + old if m.phase.startswith(("drain-update", "updating"))]
    shortfall = d.count - len(new) - len([m for m in old if m.name not in acts.phase])
    acts.create += [target] * max(0, shortfall)  # replacements of failed members
    if busy or any(not m.in_service for m in new):
        return target, True
    if ro.batchReadyAt is not None and (now - ro.batchReadyAt).total_seconds() < p.pause:
        return target, True
    todo = sorted([m for m in old if not m.phase and m.name not in acts.phase], key=lambda m: (m.in_service, m.name))
    if not todo and len(new) >= d.count:
        _finish(d, st, ro, "RolledBack" if ro.rollingBack else "Complete", now, ro.message)
        return target, False
    for m in todo[:batch_size(d.count, p.maxBatchPercent)]:
        acts.drain(m, f"drain-update-{target}")
    if todo:
        ro.batch += 1
        ro.batchStartedAt, ro.batchReadyAt = now, None
    return target, True


def _finish(d: Desired, st: NGroupStatus, ro: Rollout, state: str, now: datetime, message: str) -> None:
    ro.state = state  # type: ignore[assignment]
    ro.finishedAt = now
    ro.message = message or {"Complete": f"every member runs revision {ro.toRevision}"}.get(state, "")
    if state == "Complete":
        st.currentRevision = ro.toRevision
    elif state == "RolledBack":
        st.currentRevision = ro.fromRevision
    st.history.append(HistoryEntry(revision=ro.toRevision, generation=ro.generation, result=ro.state, at=now,
                                   message=ro.message))
    del st.history[:-HISTORY]
    kind = "Normal" if state == "Complete" else "Warning"
    record_event(st.events, {"Complete": "RolledOut", "RolledBack": "RolledBack"}.get(state, "RolloutStopped"),
                 ro.message, kind)


def _at(m: Member, revision: int) -> bool:
    """Whether the member runs (or is being updated to) ``revision``."""
    if m.phase.startswith("drain-update-"):
        return m.phase == f"drain-update-{revision}"
    if m.phase.startswith("updating-"):
        return m.phase == f"updating-{revision}"
    return m.revision == revision


def _scale(d: Desired, active: list[Member], revision: int, st: NGroupStatus, acts: Actions) -> None:
    counted = active  # members on their way back (drained to restart or update) still count
    want = d.count
    shortfall = want - len(counted)
    if shortfall > 0 and (d.maintain or st.scaledFor != [d.generation, want]):
        acts.create += [revision] * shortfall
        record_event(st.events, "Scaling", f"creating {shortfall} member(s) of revision {revision} "
                     f"({len(counted)} -> {want})")
    elif shortfall < 0:
        # Leave first: members not serving, then those of another revision, then the last made.
        victims = sorted(counted, key=lambda m: (m.in_service, m.revision == revision, m.name))[:-shortfall]
        for m in victims:
            acts.drain(m, "drain-delete")
        record_event(st.events, "Scaling", f"removing {len(victims)} member(s) ({len(counted)} -> {want})")
    st.scaledFor = [d.generation, want]


def _restart(d: Desired, active: list[Member], st: NGroupStatus, acts: Actions) -> None:
    """NGroup restart: every member restarts once, a batch at a time; Manual mode updates old ones to the
    NGroup's revision on the way (that is when existing members take a new revision there)."""
    gen = d.restart_generation
    if st.observedRestartGeneration >= gen:
        return
    need = [m for m in active if m.restart_generation < gen and m.name not in acts.phase]
    busy = [m for m in active if m.phase.startswith(("drain-restart", "restarting", "starting", "drain-update",
                                                     "updating")) or m.name in acts.start]
    if not need and not busy:
        st.observedRestartGeneration = gen
        return
    room = batch_size(d.count, d.profile.maxBatchPercent) - len(busy)
    for m in [m for m in need if not m.phase][:max(0, room)]:
        acts.drain(m, f"drain-update-{d.revision}" if not d.rolling and m.revision != d.revision
                   else "drain-restart")


def _summarize(d: Desired, active: list[Member], st: NGroupStatus, acts: Actions, revision: int,
               rolling_out: bool, leaving: bool) -> None:
    serving = [m for m in active if m.in_service and m.name not in acts.phase]
    st.desiredCount = d.count
    st.readyCount = len(serving)
    st.targetRevision = revision
    if rolling_out:
        st.phase = "RollingBack" if st.rollout and st.rollout.rollingBack else "RollingOut"
        return
    # Settled (the operation done): the members it wants serve, and the others are gone, not still draining
    # or being deleted, so a client listing container groups then finds exactly the NGroup's members.
    settled = (not acts.create and not acts.phase and not acts.start and len(serving) == d.count and not leaving
               and all(not m.phase for m in active) and st.observedRestartGeneration >= d.restart_generation)
    st.phase = "Steady" if settled else "Scaling"
    if settled and all(m.revision == revision for m in serving) and st.currentRevision != revision:
        if st.currentRevision is None or not (st.rollout and st.rollout.generation == d.generation):
            st.history.append(HistoryEntry(revision=revision, generation=d.generation, result="Complete",
                                           message=f"{d.count} member(s) of revision {revision}"))
            del st.history[:-HISTORY]
        st.currentRevision = revision


def draining(m: Member) -> bool:
    return m.phase.startswith(DRAIN)
