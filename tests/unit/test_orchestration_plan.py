"""The NGroup planner: scaling, surge rolling updates, automatic rollback, Manual mode, in place, stop, delete."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from corral.model.ngroup import NGroupStatus, RollingUpdateProfile
from corral.orchestrator.members import PHASE_TAG, RESTART_TAG, Member
from corral.orchestrator.plan import Desired, plan

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def member(name: str, revision: int = 1, ready: bool = True, failed: bool = False, phase: str = "",
           restarts: int = 0, restart_gen: int = 0) -> Member:
    tags = {RESTART_TAG: str(restart_gen)}
    if phase:
        tags[PHASE_TAG] = phase
    state = "Failed" if failed else "Running" if ready else "Pending"
    return Member(name=name, rg="rg", revision=revision, state=state,
                  provisioning="Succeeded" if ready else "Creating", ready=ready, failed=failed, restarts=restarts,
                  ip=f"10.0.0.{len(name)}", tags=tags)


def desired(count: int = 4, revision: int = 1, rolling: bool = True, **kw: object) -> Desired:
    profile = kw.pop("profile", RollingUpdateProfile(maxBatchPercent=50, maxUnhealthyPercent=25))
    return Desired(generation=int(kw.pop("generation", 1)), restart_generation=int(kw.pop("restart", 0)),
                   revision=revision, count=count, rolling=rolling, profile=profile,  # type: ignore[arg-type]
                   maintain=bool(kw.pop("maintain", True)), **kw)  # type: ignore[arg-type]


def test_a_new_ngroup_creates_its_members_and_becomes_steady_with_history() -> None:
    st = NGroupStatus()
    acts = plan(desired(3), [], st, T0)
    assert acts.create == [1, 1, 1] and st.phase == "Scaling" and st.observedGeneration == 1
    acts = plan(desired(3), [member(f"m{i}") for i in range(3)], st, T0)
    assert not acts.create and not acts.phase and st.phase == "Steady" and st.readyCount == 3
    assert st.currentRevision == 1 and [(h.revision, h.result) for h in st.history] == [(1, "Complete")]


def test_scale_down_removes_members_not_serving_first() -> None:
    st = NGroupStatus()
    ms = [member("a"), member("b"), member("c", ready=False), member("d")]
    acts = plan(desired(2), ms, st, T0)
    assert acts.phase["c"] == "drain-delete" and len(acts.phase) == 2 and set(acts.phase.values()) == {"drain-delete"}


def test_the_ngroup_is_steady_only_once_leaving_members_are_gone() -> None:
    st = NGroupStatus()
    plan(desired(2), [member("a"), member("b"), member("c", phase="drain-delete")], st, T0)
    assert st.phase == "Scaling" and st.readyCount == 2  # "c" drains: the operation is not done yet
    plan(desired(2), [member("a"), member("b")], st, T0)
    assert st.phase == "Steady"


def test_failed_members_are_replaced_only_with_maintain_desired_count() -> None:
    ms = [member("a"), member("b", failed=True)]
    acts = plan(desired(2), ms, NGroupStatus(), T0)
    assert acts.phase == {"b": "drain-delete"} and acts.create == [1]
    st = NGroupStatus(scaledFor=[1, 2])
    acts = plan(desired(2, maintain=False), [member("a")], st, T0)  # one vanished: not made again
    assert not acts.create and not acts.phase


def test_rolling_update_surges_a_batch_and_drains_old_members_only_once_it_is_ready() -> None:
    st = NGroupStatus(currentRevision=1)
    old = [member(f"old{i}") for i in range(4)]
    d = desired(4, revision=2, generation=2)
    acts = plan(d, old, st, T0)
    assert acts.create == [2, 2] and not acts.phase and st.phase == "RollingOut"
    assert st.rollout is not None and st.rollout.fromRevision == 1 and st.rollout.toRevision == 2
    pending = [member("new0", 2, ready=False), member("new1", 2, ready=False)]
    acts = plan(d, old + pending, st, T0 + timedelta(seconds=1))
    assert not acts.create and not acts.phase  # the batch is not ready: nothing old leaves
    ready = [member("new0", 2), member("new1", 2)]
    acts = plan(d, old + ready, st, T0 + timedelta(seconds=2))
    assert sorted(acts.phase) == ["old0", "old1"] and acts.create == [2, 2] and st.rollout.batch == 2
    rest = old[2:] + ready + [member("new2", 2), member("new3", 2)]
    acts = plan(d, rest, st, T0 + timedelta(seconds=3))
    assert sorted(acts.phase) == ["old2", "old3"] and not acts.create
    acts = plan(d, [m for m in rest if m.revision == 2], st, T0 + timedelta(seconds=4))
    assert st.rollout.state == "Complete" and st.currentRevision == 2 and st.phase == "Steady"
    assert [(h.revision, h.result) for h in st.history] == [(2, "Complete")]


def test_pause_between_batches_is_kept() -> None:
    d = desired(2, revision=2, generation=2, profile=RollingUpdateProfile(maxBatchPercent=50,
                                                                          pauseTimeBetweenBatches="PT30S"))
    st = NGroupStatus(currentRevision=1)
    old = [member("a"), member("b")]
    plan(d, old, st, T0)
    ms = old + [member("n0", 2)]
    acts = plan(d, ms, st, T0 + timedelta(seconds=1))
    assert acts.phase == {"a": "drain-delete"} and not acts.create  # the pause has just begun
    acts = plan(d, [old[1], member("n0", 2)], st, T0 + timedelta(seconds=31))
    assert acts.create == [2]


def test_unhealthy_members_beyond_max_unhealthy_roll_back_by_themselves() -> None:
    d = desired(4, revision=2, generation=2)  # 25% of 4: one unhealthy member allowed
    st = NGroupStatus(currentRevision=1)
    old = [member(f"old{i}") for i in range(4)]
    plan(d, old, st, T0)
    broken = [member("b0", 2, ready=False, failed=True), member("b1", 2, ready=False, restarts=3)]
    acts = plan(d, old + broken, st, T0 + timedelta(seconds=5))
    assert st.rollout is not None and st.rollout.rollingBack and st.phase == "RollingBack"
    assert "rolled back to revision 1" in st.rollout.message and st.events[-1].name == "RollingBack"
    acts = plan(d, old + broken, st, T0 + timedelta(seconds=6))
    assert sorted(acts.phase) == ["b0", "b1"]  # the broken ones go; the old ones never stopped serving
    plan(d, old, st, T0 + timedelta(seconds=7))
    assert st.rollout.state == "RolledBack" and st.currentRevision == 1 and st.phase == "Steady"
    assert st.history[-1].revision == 2 and st.history[-1].result == "RolledBack"
    acts = plan(d, old[1:], st, T0 + timedelta(seconds=8))  # later members are made at the good revision
    assert acts.create == [1]


def test_a_batch_not_ready_within_the_deadline_rolls_back() -> None:
    d = desired(2, revision=2, generation=2, profile=RollingUpdateProfile(maxBatchPercent=50,
                                                                          batchReadyTimeout="PT10S"))
    st = NGroupStatus(currentRevision=1)
    old = [member("a"), member("b")]
    plan(d, old, st, T0)
    slow = [member("s", 2, ready=False)]
    plan(d, old + slow, st, T0 + timedelta(seconds=5))
    assert st.rollout is not None and not st.rollout.rollingBack
    plan(d, old + slow, st, T0 + timedelta(seconds=11))
    assert st.rollout.rollingBack and "not ready within 10 s" in st.rollout.message


def test_without_automatic_rollback_a_breach_stops_the_rollout() -> None:
    d = desired(2, revision=2, generation=2, profile=RollingUpdateProfile(maxBatchPercent=50, maxUnhealthyPercent=0,
                                                                          automaticRollback=False))
    st = NGroupStatus(currentRevision=1)
    old = [member("a"), member("b")]
    plan(d, old, st, T0)
    acts = plan(d, old + [member("x", 2, ready=False, failed=True)], st, T0)
    assert st.rollout is not None and st.rollout.state == "Failed" and not st.rollout.rollingBack
    assert not acts.create and "stopped" in st.rollout.message


def test_manual_mode_makes_new_members_at_the_new_revision_and_restart_updates_the_old_ones() -> None:
    d = desired(3, revision=2, rolling=False, generation=2)
    st = NGroupStatus(currentRevision=1)
    old = [member("a"), member("b")]
    acts = plan(d, old, st, T0)
    assert acts.create == [2] and not acts.phase and st.rollout is None
    ms = old + [member("c", 2)]
    plan(d, ms, st, T0)
    assert st.phase == "Steady" and st.currentRevision == 1  # mixed revisions: still the old good one
    d.restart_generation = 1
    acts = plan(d, ms, st, T0)
    assert acts.phase == {"a": "drain-update-2", "b": "drain-update-2"}  # batch of 50% of 3: 2
    assert not acts.create
    acts = plan(d, [member("a", 2, restart_gen=1), member("b", 2, restart_gen=1), ms[2]], st, T0)
    assert acts.phase == {"c": "drain-restart"}


def test_in_place_rolling_update_drains_and_updates_a_batch_of_the_same_members() -> None:
    d = desired(2, revision=2, generation=2, profile=RollingUpdateProfile(maxBatchPercent=50, inPlaceUpdate=True))
    st = NGroupStatus(currentRevision=1)
    old = [member("a"), member("b")]
    acts = plan(d, old, st, T0)
    assert acts.phase == {"a": "drain-update-2"} and not acts.create
    acts = plan(d, [member("a", 2, ready=False, phase="updating-2"), old[1]], st, T0)
    assert not acts.phase  # one batch at a time
    acts = plan(d, [member("a", 2), old[1]], st, T0 + timedelta(seconds=1))
    assert acts.phase == {"b": "drain-update-2"}
    plan(d, [member("a", 2), member("b", 2)], st, T0 + timedelta(seconds=2))
    assert st.rollout is not None and st.rollout.state == "Complete" and st.currentRevision == 2


def test_stop_start_and_delete() -> None:
    st = NGroupStatus()
    ms = [member("a"), member("b")]
    acts = plan(desired(2, running=False), ms, st, T0)
    assert acts.phase == {"a": "drain-stop", "b": "drain-stop"} and st.phase == "Scaling"
    stopped = [member("a", ready=False, phase="stopped"), member("b", ready=False, phase="stopped")]
    plan(desired(2, running=False), stopped, st, T0)
    assert st.phase == "Stopped"
    acts = plan(desired(2, restart=1), stopped, st, T0)
    assert sorted(acts.start) == ["a", "b"] and not acts.create
    acts = plan(desired(2, deleting=True), ms, NGroupStatus(), T0)
    assert acts.phase == {"a": "drain-delete", "b": "drain-delete"}
