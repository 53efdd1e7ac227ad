"""Groups that move off their node on a real SQLite store, with the binder and the node lifecycle as the leader runs
them: a stopped group started (or a group grown) where its node has no room left, and drains that first ask the
scheduler where each group would go. The nodes' side (stop an evicted group, report) goes through the link."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from control_support import RG, SUB, GroupsOnStore

from corral.control import lifecycle
from corral.control.binder import Binder
from corral.control.drainplan import DrainPlanner
from corral.control.groups import GroupService
from corral.control.lifecycle import NodeLifecycle
from corral.control.netplane import NetworkControl
from corral.control.nodeadmin import NodeService
from corral.errors import Conflict
from corral.link.local import LocalLink
from corral.model.records import GROUPS, NODES, GroupRecord, NodeInfo, status_key
from corral.model.status import GroupStatus
from corral.store.sqlite import SqliteStore


class Leader(GroupsOnStore):
    """The binder and the node lifecycle on one store, driven by hand; ``pump`` also plays the nodes' part."""

    def __init__(self, tmp: Path) -> None:
        self.store = SqliteStore(tmp / "store.db")
        network = NetworkControl(self.store)
        network.start()
        subnet = network.vnets.default_subnet_id()
        self.groups = GroupService(self.store)
        self.link = LocalLink(self.store)
        self.binder = Binder(self.store, None, network.settings, subnet)
        self.life = NodeLifecycle(self.store, DrainPlanner(self.store, None, network.settings, subnet, follows=True))
        self.admin = NodeService(self.store, network, DrainPlanner(self.store, None, network.settings, subnet))
        self.rev = self.store.revision()
        self.binder.resync()
        self.life.resync()
        self.peaks: dict[str, float] = {}  # node -> most CPU its running copies ever requested at once

    def pump(self) -> None:
        for _ in range(30):
            events = self.store.watch("/", self.rev, 0)
            if events:
                self.rev = events[-1].revision
                self.binder.handle(events)
                self.life.handle(events)
            self.life.tick()
            if not self._nodes_act() and not events:
                return
        raise AssertionError("the controllers keep writing")

    def _nodes_act(self) -> bool:
        """What each node's agent does with what is bound to it: stop an evicted group and say so, run the others
        (never one waiting for the scheduler's word: ``refit``). Counts each node's running requests."""
        acted = False
        load: dict[str, float] = {}
        for rec in self.store.list(GROUPS):
            g = GroupRecord.model_validate(rec.value)
            node, m = g.meta.node, g.meta
            if node is None or m.deleting:
                continue
            st = self.store.get(status_key(m.uid))
            cur = GroupStatus.model_validate(st.value) if st else None
            if cur is not None and cur.epoch == m.epoch and cur.state == "Running" and not m.evicting:
                load[node] = load.get(node, 0.0) + sum(
                    c.properties.resources.requests.cpu for c in g.spec.properties.containers)
            if m.refit and m.desiredState == "Running":
                continue  # the node carries out nothing new until the scheduler has answered
            if m.evicting:
                want = GroupStatus(uid=m.uid, node=node, epoch=m.epoch, state="Stopped", evicted=True)
            else:
                want = GroupStatus(uid=m.uid, node=node, epoch=m.epoch, observedGeneration=m.generation,
                                   observedRestartGeneration=m.restartGeneration,
                                   state="Running" if m.desiredState == "Running" else "Stopped")
            if cur is None or (cur.epoch, cur.state, cur.evicted, cur.observedGeneration) != (
                    want.epoch, want.state, want.evicted, want.observedGeneration):
                if cur is not None and cur.epoch == want.epoch:
                    want.events = cur.events
                self.link.report(rec.key, want)
                acted = True
        for node, cpu in load.items():
            self.peaks[node] = max(self.peaks.get(node, 0.0), cpu)
        return acted

    def node(self, name: str, cpu: float = 2, **kw: Any) -> None:
        self.link.register(NodeInfo(name=name, address="10.1.0.1", cpu=cpu, memoryGB=16,
                                    lastHeartbeat=datetime.now(UTC), **kw))
        self.pump()

    def cordoned(self, name: str) -> bool:
        rec = self.store.get(NODES + name)
        assert rec is not None
        return bool(rec.value["unschedulable"])


@pytest.fixture
def leader(tmp_path: Path) -> Leader:
    return Leader(tmp_path)


def test_a_started_group_stays_on_its_node_while_it_fits_there(leader: Leader) -> None:
    leader.node("n1", cpu=2)
    leader.node("n2", cpu=2)
    leader.create("a", cpu=1)
    home = leader.node_of("a")
    leader.groups.stop(SUB, RG, "a")
    leader.pump()
    leader.groups.start(SUB, RG, "a")
    assert leader.record("a").meta.refit  # written for the scheduler first: its node waits
    leader.pump()
    g = leader.record("a")
    assert (g.meta.node, g.meta.epoch, g.meta.refit, g.meta.evicting) == (home, 0, False, False)
    assert leader.status("a").state == "Running"


def test_a_started_group_moves_when_its_node_filled_up_meanwhile(leader: Leader) -> None:
    leader.node("n1", cpu=2)
    leader.create("a", cpu=2)
    leader.groups.stop(SUB, RG, "a")
    leader.pump()
    leader.create("b", cpu=2)  # takes the room the stopped group gave back
    assert leader.node_of("b") == "n1"
    leader.node("n2", cpu=2)
    leader.groups.start(SUB, RG, "a")
    leader.pump()
    g = leader.record("a")
    assert (g.meta.node, g.meta.epoch) == ("n2", 1)  # unbound from n1 (a new epoch), placed on n2
    evicted = [e for e in leader.status("a").events if e.name == "Evicted"]
    assert evicted and evicted[-1].message.startswith("node n1 cannot take the group as it is now (insufficient cpu)")
    assert leader.status("a").state == "Running" and leader.node_of("b") == "n1"
    assert leader.peaks == {"n1": 2, "n2": 2}  # never over-committed, never two copies


def test_a_grown_group_with_no_room_anywhere_waits_pending_then_runs(leader: Leader) -> None:
    leader.node("n1", cpu=2)
    leader.create("a", cpu=1)
    leader.create("b", cpu=1)
    leader.create("a", cpu=1.5)  # an update that grows: fits nowhere while b runs
    g = leader.record("a")
    assert (g.meta.node, g.meta.epoch) == (None, 1)
    st = leader.status("a")
    assert st.state == "Pending" and st.provisioningError == "0/1 nodes are available: 1 insufficient cpu"
    assert [e.name for e in st.events][-2:] == ["Evicted", "FailedScheduling"]
    leader.gone("b")  # room appears: placed
    assert leader.node_of("a") == "n1" and leader.status("a").state == "Running"
    leader.create("a", cpu=1)  # shrinking needs no word from the scheduler
    assert not leader.record("a").meta.refit
    leader.create("a", cpu=2)  # growing where it fits: stays, same binding
    g = leader.record("a")
    assert (g.meta.node, g.meta.epoch, g.meta.refit) == ("n1", 1, False)
    assert leader.peaks == {"n1": 2}


def test_a_drain_refuses_when_a_group_fits_nowhere_else_unless_forced(
        leader: Leader, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle, "DRAIN_RECHECK", 0.0)
    leader.node("a", cpu=4)
    leader.node("b", cpu=1)
    leader.admin.cordon("b")
    leader.create("big", cpu=3)
    leader.create("small", cpu=0.5)
    leader.admin.uncordon("b")
    leader.pump()
    assert leader.node_of("big") == leader.node_of("small") == "a"
    with pytest.raises(Conflict) as refused:
        leader.admin.drain("a")
    assert "rg/big (0/2 nodes are available: 1 insufficient cpu, 1 node cordoned)" in str(refused.value)
    assert "small" not in str(refused.value) and not leader.cordoned("a")  # nothing changed
    view = leader.admin.drain("a", force=True)  # the others move; big stays, listed
    assert [(u.name, u.reason.split(":")[0]) for u in view.unmovable] == [("big", "0/2 nodes are available")]
    leader.pump()
    assert leader.node_of("small") == "b" and leader.node_of("big") == "a"
    assert leader.record("big").meta.epoch == 0 and leader.status("big").state == "Running"
    leader.node("c", cpu=4)  # room appears: the drain moves it too
    leader.pump()
    assert leader.node_of("big") == "c" and leader.admin.get("a").unmovable == []
    assert "Evicted" in [e.name for e in leader.status("big").events]


def test_a_drain_keeps_a_required_anti_affinity(leader: Leader) -> None:
    apart = {"antiAffinity": [{"tags": {"app": "x"}}]}
    leader.node("a")
    leader.node("b")
    leader.create("x1", tags={"app": "x"}, placement=apart)
    leader.create("x2", tags={"app": "x"}, placement=apart)
    assert {leader.node_of("x1"), leader.node_of("x2")} == {"a", "b"}
    on_a = "x1" if leader.node_of("x1") == "a" else "x2"
    with pytest.raises(Conflict, match=f"rg/{on_a} .*1 anti-affinity conflict"):
        leader.admin.drain("a")
    leader.node("c")
    leader.admin.drain("a")
    leader.pump()
    assert leader.node_of(on_a) == "c"
