"""Node lifecycle on a real store: silent nodes go NotReady, their groups move (new epoch), drains go one by one."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from corral.control.groups import GroupService
from corral.control.lifecycle import NodeLifecycle
from corral.control.nodeadmin import NodeService
from corral.errors import Conflict, NotAssigned, StaleBinding
from corral.link.local import LocalLink
from corral.model.group import ContainerGroup
from corral.model.records import NODES, GroupRecord, NodeInfo, status_key
from corral.model.status import ContainerStateView, ContainerStatus, GroupStatus
from corral.store.sqlite import SqliteStore

SUB, RG = "00000000-0000-0000-0000-000000000000", "rg"
LEASE = 0.2


def body(policy: str = "Always") -> ContainerGroup:
    return ContainerGroup.model_validate({"location": "local", "properties": {"restartPolicy": policy, "containers": [
        {"name": "c", "properties": {"image": "x", "resources": {"requests": {"cpu": 0.1, "memoryInGB": 0.1}}}}]}})


class World:
    def __init__(self, tmp: Path) -> None:
        self.store = SqliteStore(tmp / "db")
        self.link = LocalLink(self.store)
        self.groups = GroupService(self.store)
        self.life = NodeLifecycle(self.store)

    def node(self, name: str, lease: float | None = LEASE, **kw: Any) -> None:
        self.link.register(NodeInfo(name=name, address="10.0.0.1", cpu=2, memoryGB=4, lastHeartbeat=datetime.now(UTC),
                                    leaseSeconds=lease, **kw))

    def group(self, name: str, node: str, state: str = "Running", policy: str = "Always") -> str:
        view, _, _ = self.groups.create_or_update(SUB, RG, name, body(policy))
        rec = self.store.get(view.key)
        assert rec is not None
        g = GroupRecord.model_validate(rec.value)
        g.meta.node = node
        self.store.put(view.key, g.dump(), expect_version=rec.version)
        running = ContainerStateView(state="Running", startTime=datetime.now(UTC))
        self.link.report(view.key, GroupStatus(uid=g.meta.uid, node=node, state=state,  # type: ignore[arg-type]
                                               containers={"c": ContainerStatus(currentState=running)}))
        return view.key

    def record(self, key: str) -> GroupRecord:
        rec = self.store.get(key)
        assert rec is not None
        return GroupRecord.model_validate(rec.value)

    def status(self, key: str) -> GroupStatus:
        rec = self.store.get(status_key(self.record(key).meta.uid))
        assert rec is not None
        return GroupStatus.model_validate(rec.value)

    def ready(self, name: str) -> bool:
        rec = self.store.get(NODES + name)
        assert rec is not None
        return bool(rec.value["ready"])

    def settle(self) -> None:
        """What the controller's loop does: take in the changes, then look at the leases."""
        events = self.store.watch("/", self.rev, 0)
        if events:
            self.rev = events[-1].revision
            self.life.handle(events)
        self.life.tick()

    def begin(self) -> None:
        self.rev = self.store.revision()
        self.life.resync()


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_a_silent_node_goes_notready_and_its_running_groups_move(world: World) -> None:
    world.node("a")
    world.node("b")
    moving = world.group("moving", "a")
    done = world.group("done", "a", state="Succeeded", policy="Never")
    stopped = world.group("stopped", "a")
    world.groups.stop(SUB, RG, "stopped")
    gone = world.group("gone", "a")
    world.groups.delete(SUB, RG, "gone")
    world.begin()
    for _ in range(3):  # b keeps renewing, a is silent
        time.sleep(LEASE / 2)
        world.link.heartbeat("b")
        world.settle()
    assert not world.ready("a") and world.ready("b")
    g, st = world.record(moving), world.status(moving)
    assert (g.meta.node, g.meta.epoch, st.epoch, st.state) == (None, 1, 1, "Pending")
    assert st.events[-1].name == "NodeLost" and "node a is NotReady" in st.events[-1].message
    assert st.containers["c"].previousState.detailStatus == "NodeLost"  # type: ignore[union-attr]
    assert world.record(done).meta.node == "a"  # finished: it must not run again
    assert world.record(stopped).meta.node == "a"  # stopped: nothing to move until it is started
    assert world.store.get(gone) is None  # the delete the node could not finish
    # The old node's late report is refused: another binding is in force.
    with pytest.raises(StaleBinding):
        world.link.report(moving, GroupStatus(uid=g.meta.uid, node="a", state="Running", epoch=0))
    # A heartbeat again: Ready.
    world.link.heartbeat("a")
    world.settle()
    assert world.ready("a")


def test_a_node_without_self_fencing_keeps_its_groups(world: World) -> None:
    world.node("a", selfFencing=False)
    key = world.group("g", "a")
    world.begin()
    time.sleep(LEASE * 1.5)
    world.settle()
    assert not world.ready("a")
    assert world.record(key).meta.node == "a"  # its copy may run: it waits for the node


def test_a_node_of_the_server_process_has_no_lease(world: World) -> None:
    world.node("local", lease=None)
    key = world.group("g", "local")
    world.begin()
    time.sleep(LEASE * 1.5)
    world.settle()
    assert world.ready("local") and world.record(key).meta.node == "local"


def test_drain_moves_one_group_at_a_time(world: World) -> None:
    world.node("a")
    world.node("b")
    k1, k2 = world.group("g1", "a"), world.group("g2", "a")
    stopped = world.group("s", "a")
    world.groups.stop(SUB, RG, "s")
    admin = NodeService(world.store)
    world.begin()
    admin.drain("a")
    world.link.heartbeat("a")
    world.settle()
    assert world.record(stopped).meta.node is None  # nothing ran: unbound at once
    first, second = (k1, k2) if world.record(k1).meta.evicting else (k2, k1)
    assert world.record(first).meta.evicting and not world.record(second).meta.evicting
    # The node stops it and says so: it is unbound (new epoch) and the next one waits.
    g = world.record(first)
    world.link.report(first, GroupStatus(uid=g.meta.uid, node="a", state="Stopped", evicted=True))
    world.link.heartbeat("a")
    world.settle()
    moved = world.record(first)
    assert (moved.meta.node, moved.meta.epoch, moved.meta.evicting) == (None, 1, False)
    assert world.status(first).events[-1].name == "Evicted"
    assert not world.record(second).meta.evicting
    # Placed elsewhere and running: the next group goes.
    moved.meta.node = "b"
    world.store.put(first, moved.dump())
    world.link.report(first, GroupStatus(uid=moved.meta.uid, node="b", state="Running", epoch=1))
    world.link.heartbeat("a")
    world.settle()
    world.settle()
    assert world.record(second).meta.evicting
    # A Ready node still running groups cannot be removed; uncordon stops the drain.
    with pytest.raises(Conflict):
        admin.delete("a")
    admin.uncordon("a")
    rec = world.store.get(NODES + "a")
    assert rec is not None and not rec.value["draining"] and not rec.value["unschedulable"]


def test_reports_follow_the_binding(world: World) -> None:
    world.node("a")
    key = world.group("g", "a")
    g = world.record(key)
    world.link.release(key, g.meta.uid)
    with pytest.raises(NotAssigned):  # gone: nothing to report on
        world.link.report(key, GroupStatus(uid=g.meta.uid, node="a", state="Running"))


def test_a_removed_node_returns_its_address_blocks(world: World) -> None:
    from corral.control.netplane import NetworkControl

    network = NetworkControl(world.store)
    network.start()
    world.node("a")
    world.node("b")
    block_a = network.vnet_config_for("a").ipam.node_block
    network.vnet_config_for("b")
    admin = NodeService(world.store, network)
    admin.delete("a")  # nothing runs there: no drain needed
    assert world.store.get(NODES + "a") is None
    subnet = network.vnets.ensure_default()
    assert set(network.blocks.blocks(subnet)) == {"b"}
    assert network.vnet_config_for("c").ipam.node_block == block_a  # free again


def test_a_restarting_agent_is_left_alone_for_its_hold(world: World) -> None:
    world.node("a")
    key = world.group("g", "a")
    world.link.heartbeat("a", hold=5)  # the agent stops, to be started again
    world.begin()  # a leader elected meanwhile still honours it
    time.sleep(LEASE * 2)
    world.settle()
    assert world.ready("a") and world.record(key).meta.node == "a"
