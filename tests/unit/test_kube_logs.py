"""Which lines of a container's Corral log `kubectl logs` (and `--previous`, `--since`) shows, from the
instanceView Corral's API renders (its own models) and log lines as Corral serves them with timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from corral.api.render import render_group
from corral.control.groups import GroupView
from corral.kube.logs import NoPreviousRun, container_view, run_window, select, since_time
from corral.model.group import ContainerGroup
from corral.model.records import GroupMeta, GroupRecord
from corral.model.status import ContainerStateView, ContainerStatus, GroupStatus

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def group(status: ContainerStatus) -> dict:  # type: ignore[type-arg]
    spec = ContainerGroup.model_validate({"location": "local", "properties": {"osType": "Linux", "containers": [
        {"name": "app", "properties": {"image": "busybox", "resources": {"requests": {"cpu": 1, "memoryInGB": 1}}}}]}})
    meta = GroupMeta(uid="u1", subscription="s", resourceGroup="kube", name="g", createdAt=T0)
    st = GroupStatus(uid="u1", node="n1", state="Running", containers={"app": status})
    return render_group(GroupView(key="/groups/s/kube/g", version=1, record=GroupRecord(spec=spec, meta=meta),
                                  status=st))


def line(seconds: float, text: str) -> str:
    # as Corral serves `timestamps=true`: conmon's RFC 3339 time with nanoseconds, then the text
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%S.%f") + f"123Z {text}\n"


# three runs of one container: the second ended at 20.0 s, the third was recorded as started at 22.0 s,
# and its first line was written a moment before that record
LOG = line(1, "run 0 first") + line(9.9, "run 0 last") + line(11.2, "run 1 first") + line(19.9, "run 1 last") + \
    line(21.98, "run 2 first") + line(30, "run 2 later")
RESTARTED = ContainerStatus(
    restartCount=2, currentState=ContainerStateView(state="Running", startTime=at(22)),
    previousState=ContainerStateView(state="Terminated", startTime=at(11.25), finishTime=at(20), exitCode=1))


def test_the_current_run_and_the_previous_one() -> None:
    view = container_view(group(RESTARTED), "app")
    assert select(LOG, run_window(view, previous=False), False, None) == "run 2 first\nrun 2 later\n"
    assert select(LOG, run_window(view, previous=True), False, None) == "run 1 first\nrun 1 last\n"
    # with timestamps (as they came) and the tail of the run
    assert select(LOG, run_window(view, previous=False), True, 1) == line(30, "run 2 later")


def test_a_container_waiting_to_restart_shows_its_last_run() -> None:
    waiting = ContainerStatus(restartCount=2, currentState=ContainerStateView(state="Waiting", detailStatus="BackOff"),
                              previousState=RESTARTED.previousState)
    view = container_view(group(waiting), "app")
    text = LOG.replace(line(21.98, "run 2 first") + line(30, "run 2 later"), "")
    assert select(text, run_window(view, previous=False), False, None) == "run 1 first\nrun 1 last\n"
    assert select(text, run_window(view, previous=True), False, None) == "run 1 first\nrun 1 last\n"


def test_no_previous_run_and_since() -> None:
    first = ContainerStatus(currentState=ContainerStateView(state="Running", startTime=at(0.5)))
    view = container_view(group(first), "app")
    window = run_window(view, previous=False)
    assert window.everything  # nothing to cut: the log is passed on as Corral serves it
    with pytest.raises(NoPreviousRun):
        run_window(view, previous=True)
    since = since_time({"sinceSeconds": "15"}, now=at(30))
    assert select(LOG, window.since(since), False, None) == "run 1 last\nrun 2 first\nrun 2 later\n"
    assert since_time({"sinceTime": "2026-03-01T12:00:20Z"}) == at(20)
    with pytest.raises(ValueError):
        since_time({"sinceSeconds": "0"})
