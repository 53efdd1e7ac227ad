"""etcd as several servers see it: a three-member cluster losing a member, and the controllers' leader
election (hand-over on resign, take-over after the holder is killed, a cut-off leader stepping down
before anyone else can win)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from etcd_support import EtcdCluster, run_etcd

from corral.control.election import EtcdLeadership
from corral.control.leader import SoleLeadership, leadership_for
from corral.store.etcd import EtcdStore
from corral.store.sqlite import SqliteStore


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    with run_etcd(tmp_path_factory.mktemp("etcd3"), members=3) as c:
        yield c


def wait_for(cond, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.05)


class Office:
    """Records when a Leadership's callbacks ran."""

    def __init__(self, leadership: EtcdLeadership) -> None:
        self.leadership = leadership
        self.elected: list[float] = []
        self.demoted: list[float] = []
        leadership.start(lambda: self.elected.append(time.monotonic()),
                         lambda: self.demoted.append(time.monotonic()))

    @property
    def leads(self) -> bool:
        return len(self.elected) > len(self.demoted)


def test_a_cluster_missing_one_member_keeps_serving(cluster: EtcdCluster, etcd_namespace: str) -> None:
    store = EtcdStore(cluster.endpoints, etcd_namespace)
    try:
        rev = store.revision()
        first = store.put("/g/a", {"v": 1})
        assert store.watch("/g/", rev, timeout=5)[0].key == "/g/a"
        cluster.kill(0)  # the member the store was talking to, and perhaps etcd's leader
        try:
            second = store.put("/g/a", {"v": 2}, expect_version=first.version)
            assert store.get("/g/a").value == {"v": 2}
            assert [r.key for r in store.list("/g/")] == ["/g/a"] and store.count("/g/") == 1
            # The watch stream moves to a surviving member and misses nothing.
            events = store.watch("/g/", first.version, timeout=10)
            assert [(e.key, e.revision) for e in events] == [("/g/a", second.version)]
        finally:
            cluster.start(0)
            cluster.wait_healthy()
    finally:
        store.close()


def test_resign_hands_over_at_once(cluster: EtcdCluster, etcd_namespace: str) -> None:
    stores = [EtcdStore(cluster.endpoints, etcd_namespace) for _ in range(2)]
    try:
        a = Office(EtcdLeadership(stores[0], "a"))
        wait_for(lambda: a.leads)
        b = Office(EtcdLeadership(stores[1], "b"))
        time.sleep(0.3)
        assert a.leadership.is_leader and not b.leadership.is_leader and not b.elected
        assert b.leadership.holder() == a.leadership.identity
        a.leadership.stop()
        assert a.demoted and not a.leadership.is_leader
        wait_for(lambda: b.leads, timeout=a.leadership.ttl)  # no wait for the lease: it was revoked
        assert b.leadership.is_leader and b.leadership.holder() == b.leadership.identity
        assert a.demoted[0] <= b.elected[0]
        b.leadership.stop()
    finally:
        for s in stores:
            s.close()


LEADER = textwrap.dedent("""
    import sys, time
    from corral.control.election import EtcdLeadership
    from corral.store.etcd import EtcdStore
    leadership = EtcdLeadership(EtcdStore(sys.argv[1].split(","), sys.argv[2]), "doomed")
    leadership.start(lambda: print("elected", flush=True), lambda: None)
    time.sleep(600)
""")


def test_a_killed_leader_is_replaced_after_its_lease(cluster: EtcdCluster, etcd_namespace: str) -> None:
    doomed = subprocess.Popen([sys.executable, "-c", LEADER, ",".join(cluster.endpoints), etcd_namespace],
                              stdout=subprocess.PIPE, text=True)
    store = EtcdStore(cluster.endpoints, etcd_namespace)
    try:
        assert doomed.stdout is not None and doomed.stdout.readline().strip() == "elected"
        heir = Office(EtcdLeadership(store, "heir"))
        time.sleep(0.5)
        assert not heir.elected  # the office is held
        doomed.kill()
        doomed.wait()
        killed = time.monotonic()
        wait_for(lambda: heir.leads, timeout=heir.leadership.ttl + 5)
        assert heir.elected[0] > killed
        heir.leadership.stop()
    finally:
        doomed.kill()
        doomed.wait()
        store.close()


def test_a_leader_that_cannot_renew_steps_down_before_another_wins(cluster: EtcdCluster,
                                                                  etcd_namespace: str) -> None:
    # The leader talks to member 2 only; the other server to members 0 and 1. Killing member 2 cuts the
    # leader off from its lease while the cluster (and the other server) carries on.
    lonely = EtcdStore(cluster.endpoints[2:], etcd_namespace)
    other = EtcdStore(cluster.endpoints[:2], etcd_namespace)
    leader = Office(EtcdLeadership(lonely, "lonely"))
    rival = Office(EtcdLeadership(other, "rival"))
    try:
        wait_for(lambda: leader.leads or rival.leads)
        if rival.leads:  # the rival won the first race: it hands over, so the lonely one leads
            rival.leadership.stop()
            wait_for(lambda: leader.leads)
            rival = Office(EtcdLeadership(other, "rival"))
        cluster.kill(2)
        wait_for(lambda: rival.leads, timeout=20)
        assert leader.demoted and not leader.leadership.is_leader
        assert leader.demoted[0] < rival.elected[0]  # never two leaders at once
    finally:
        cluster.start(2)
        cluster.wait_healthy()
        for office in (rival, leader):
            office.leadership.stop()
        lonely.close()
        other.close()


def test_the_store_chooses_the_election(cluster: EtcdCluster, etcd_namespace: str, tmp_path: Path) -> None:
    sqlite = SqliteStore(tmp_path / "db")
    etcd = EtcdStore(cluster.endpoints, etcd_namespace)
    try:
        assert isinstance(leadership_for(sqlite, "s"), SoleLeadership)
        assert isinstance(leadership_for(etcd, "s"), EtcdLeadership)
    finally:
        sqlite.close()
        etcd.close()

