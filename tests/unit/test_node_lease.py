"""A remote agent's lease: containers start only in a confirmed session; a lapse fences and ends the session."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from corral.node import fence
from corral.node.lease import NodeLease


class Link:
    """The server side of heartbeats, up or down as the test says (no network involved)."""

    def __init__(self) -> None:
        self.up = True
        self.holds: list[float] = []

    def heartbeat(self, hold: float = 0.0) -> None:
        if not self.up:
            raise ConnectionError("server unreachable")
        if hold:
            self.holds.append(hold)


def until(pred: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.fixture
def lease(tmp_path: Path):  # type: ignore[no-untyped-def]
    link = Link()
    events: list[str] = []
    sessions: list[int] = []
    lease = NodeLease(link.heartbeat, tmp_path, interval=0.05, fence_after=0.3)
    lease.start(on_lapse=lambda: events.append(f"lapse {lease.session}"),
                on_regain=lambda s: sessions.append(s))
    try:
        yield lease, link, events, sessions
    finally:
        lease.stop()


def test_no_start_before_the_session_is_confirmed(lease, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lease, link, events, sessions = lease
    until(lambda: sessions == [0])
    with lease.starting(0) as ok:
        assert not ok  # acknowledged, but the assignments are not listed yet
    assert lease.confirm(0)
    with lease.starting(0) as ok:
        assert ok
    age = fence.lease_age(tmp_path)
    assert age is not None and age < 0.3  # the watchdog reads the same lease


def test_a_lapse_fences_and_a_new_session_needs_a_new_listing(lease) -> None:  # type: ignore[no-untyped-def]
    lease, link, events, sessions = lease
    until(lambda: sessions == [0])
    lease.confirm(0)
    link.up = False
    until(lambda: events == ["lapse 1"])
    with lease.starting(0) as ok:
        assert not ok  # a record of the old session may be stale: never again
    with lease.starting(1) as ok:
        assert not ok  # not held
    link.up = True
    until(lambda: sessions == [0, 1])
    with lease.starting(1) as ok:
        assert not ok
    assert not lease.confirm(0) and lease.confirm(1)
    with lease.starting(1) as ok:
        assert ok


def test_a_lapse_waits_for_a_start_in_progress(lease) -> None:  # type: ignore[no-untyped-def]
    lease, link, events, sessions = lease
    until(lambda: sessions == [0])
    lease.confirm(0)
    inside = threading.Event()
    release = threading.Event()
    seen: list[str] = []

    def start() -> None:
        with lease.starting(0) as ok:
            assert ok
            inside.set()
            release.wait(5)
            seen.append(f"start done, events {list(events)}")

    t = threading.Thread(target=start)
    t.start()
    inside.wait(5)
    link.up = False
    time.sleep(0.6)  # well past the fence time: the lapse is waiting for the start
    assert events == []
    release.set()
    t.join(5)
    until(lambda: events == ["lapse 1"])
    assert seen == ["start done, events []"]


def test_without_fencing_a_lapse_kills_nothing(tmp_path: Path) -> None:
    link = Link()
    events: list[str] = []
    sessions: list[int] = []
    lease = NodeLease(link.heartbeat, tmp_path, interval=0.05, fence_after=0.3, fencing=False)
    lease.start(on_lapse=lambda: events.append("lapse"), on_regain=sessions.append)
    try:
        until(lambda: sessions == [0])
        lease.confirm(0)
        link.up = False
        until(lambda: lease.session == 1)
        assert events == []
    finally:
        lease.stop()


def test_the_watchdog_lease_file_ages(tmp_path: Path) -> None:
    assert fence.lease_age(tmp_path) is None  # never held: the watchdog treats it as lapsed
    fence.write_lease(tmp_path, time.monotonic() - 5)
    age = fence.lease_age(tmp_path)
    assert age is not None and 5 <= age < 6


def test_a_restarting_agent_holds_its_node(lease, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lease, link, events, sessions = lease
    until(lambda: sessions == [0])
    lease.stop()
    assert lease.hold(30)
    assert link.holds == [30]
    age = fence.lease_age(tmp_path)
    assert age is not None and age < -25  # the watchdog fences only once the hold is over too
    assert events == []
