"""The binder on a real SQLite store: deltas from the watch, batched binds, one FailedScheduling event,
placement as soon as room appears."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from control_support import RG, SUB, GroupsOnStore

from corral.control.binder import Binder
from corral.control.groups import GroupService
from corral.control.netplane import NetworkControl
from corral.link.local import LocalLink
from corral.model.group import ContainerGroup
from corral.model.network import NetworkSettings, VirtualNetwork
from corral.model.records import NODES, NodeInfo, group_key, status_key
from corral.store.base import Record
from corral.store.sqlite import SqliteStore


class ListingStore(SqliteStore):
    """The SQLite store, counting the listings made of it."""

    lists = 0

    def list(self, prefix: str) -> list[Record]:
        self.lists += 1
        return super().list(prefix)


class Harness(GroupsOnStore):
    """A binder driven by hand: every ``pump`` hands it the store's new events, as its thread would."""

    def __init__(self, tmp: Path, settings: NetworkSettings | None = None) -> None:
        self.store = ListingStore(tmp / "store.db")
        self.network = NetworkControl(self.store, settings)
        self.network.start()
        self.groups = GroupService(self.store)
        self.link = LocalLink(self.store)
        self.binder = Binder(self.store, None, self.network.settings, self.network.vnets.default_subnet_id())
        self.rev = self.store.revision()
        self.binder.resync()

    def pump(self) -> None:
        for _ in range(10):  # the binder's own writes come back as events: until quiet
            events = self.store.watch("/", self.rev, 0)
            if not events:
                return
            self.rev = events[-1].revision
            self.binder.handle(events)
        raise AssertionError("the binder keeps writing")

    def node(self, name: str, cpu: float = 2, mem: float = 4, **kw: Any) -> None:
        # The node record as the control plane holds it (a registration keeps the control plane's cordon).
        self.store.put(NODES + name, NodeInfo(name=name, address="10.1.0.1", cpu=cpu, memoryGB=mem,
                                              lastHeartbeat=datetime.now(UTC), **kw).model_dump(mode="json"))
        self.pump()


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def test_a_pending_group_is_placed_when_a_node_joins(h: Harness) -> None:
    h.create("early")
    assert h.node_of("early") is None
    st = h.status("early")
    assert [e.name for e in st.events] == ["FailedScheduling"]
    assert st.provisioningError == "0/0 nodes are available: no nodes registered"
    h.node("n1")
    assert h.node_of("early") == "n1"


def test_one_event_with_the_updated_reason_and_no_write_loop(h: Harness) -> None:
    h.node("n1", cpu=1)
    h.create("big", cpu=2)
    assert h.status("big").provisioningError == "0/1 nodes are available: 1 insufficient cpu"
    h.node("n2", cpu=1, osType="Windows")  # room may have appeared: tried again, still no
    st = h.status("big")
    assert [e.name for e in st.events] == ["FailedScheduling"]
    assert st.events[0].message == st.provisioningError == (
        "0/2 nodes are available: 1 insufficient cpu, 1 osType Linux not supported")
    rev = h.store.revision()
    h.pump()
    h.binder.resync()  # a restarted binder says nothing new either
    h.pump()
    assert h.store.revision() == rev


@pytest.mark.parametrize("leave", ["delete", "stop", "shrink"])
def test_room_appears_when_a_group_leaves_stops_or_shrinks(h: Harness, leave: str) -> None:
    h.node("n1", cpu=2)
    h.create("first", cpu=2)
    h.create("second", cpu=1)
    assert h.node_of("first") == "n1" and h.node_of("second") is None
    if leave == "delete":
        h.gone("first")
    elif leave == "stop":
        h.groups.stop(SUB, RG, "first")
    else:
        h.create("first", cpu=1)  # an update in place to a smaller request
    h.pump()
    assert h.node_of("second") == "n1"


@pytest.mark.parametrize(("before", "after"), [
    ({"ready": False}, {}), ({"unschedulable": True}, {}), ({"cpu": 0.5}, {"cpu": 2}),
    ({"labels": {"disk": "hdd"}}, {"labels": {"disk": "ssd"}})])
def test_room_appears_when_a_node_becomes_ready_uncordoned_bigger_or_relabelled(
        h: Harness, before: dict[str, Any], after: dict[str, Any]) -> None:
    h.node("n1", **{"cpu": 2, **before})
    h.create("g", cpu=1, placement={"nodeSelector": {"disk": "ssd"}} if "labels" in before else None)
    assert h.node_of("g") is None
    h.node("n1", **{"cpu": 2, **after})
    assert h.node_of("g") == "n1"


def test_many_binds_are_written_in_batches_without_over_commit(h: Harness) -> None:
    h.node("n1", cpu=64, mem=256)
    h.node("n2", cpu=64, mem=256)
    body = {"properties": {"containers": [{"name": "c", "properties": {
        "image": "x", "resources": {"requests": {"cpu": 0.5, "memoryInGB": 1}}}}]}}
    for i in range(300):  # written while the binder is not looking: one pass takes them all
        h.groups.create_or_update(SUB, RG, f"g{i}", ContainerGroup.model_validate(body))
    before = h.store.revision()
    h.pump()
    nodes = [h.node_of(f"g{i}") for i in range(300)]
    assert nodes.count("n1") == nodes.count("n2") == 128  # 64 cores / 0.5 each
    assert nodes.count(None) == 44
    # 256 binds + 44 FailedScheduling statuses: one write each, nothing re-written.
    assert h.store.revision() - before == 300


def test_a_group_changed_between_read_and_bind_is_bound_at_its_new_version(h: Harness) -> None:
    h.create("g", cpu=1)  # no node: pending, parked
    key = group_key(SUB, RG, "g")
    # The node joins; before the binder sees it, the group is updated (tags) by its owner.
    h.link.register(NodeInfo(name="n1", address="10.1.0.1", cpu=2, memoryGB=4, lastHeartbeat=datetime.now(UTC)))
    node_events = h.store.watch("/", h.rev, 0)
    h.rev = node_events[-1].revision
    for e in node_events:
        h.binder._apply(e.key, e.revision, e.value)
    h.groups.update_tags(SUB, RG, "g", {"owner": "me"})
    h.binder.schedule()  # the batched bind loses its compare-and-swap
    assert h.node_of("g") is None
    h.pump()  # the update's event: tried again at the new version
    rec = h.store.get(key)
    assert rec is not None and rec.value["meta"]["node"] == "n1" and rec.value["spec"]["tags"] == {"owner": "me"}


def test_a_deleted_group_that_never_reached_a_node_is_removed(h: Harness) -> None:
    h.create("g", cpu=1)
    uid = h.record("g").meta.uid
    h.groups.delete(SUB, RG, "g")
    h.pump()
    assert h.store.get(group_key(SUB, RG, "g")) is None and h.store.get(status_key(uid)) is None


def test_free_addresses_of_the_subnet_block(tmp_path: Path) -> None:
    # A /29 default network in /30 blocks: two blocks, one usable address each.
    h = Harness(tmp_path, NetworkSettings(default_prefix="10.9.0.0/29", block_prefixlen=30))
    for n in ("a", "b", "c"):
        h.node(n, cpu=8, mem=8)
    h.network.vnet_config_for("a")  # node a is granted its block, as its agent asks
    h.pump()
    for g in ("g1", "g2", "g3"):
        h.create(g, cpu=0.1, mem=0.1)
    placed = {h.node_of("g1"), h.node_of("g2")}
    assert "a" in placed and None not in placed
    assert h.node_of("g3") is None
    assert "3 no free address in subnet default" in (h.status("g3").provisioningError or "")
    h.gone("g1")
    assert h.node_of("g3") is not None


def test_a_stopped_group_keeps_its_node_and_a_started_one_holds_again(h: Harness) -> None:
    h.node("n1", cpu=2)
    h.create("a", cpu=2)
    h.groups.stop(SUB, RG, "a")
    h.pump()
    assert h.node_of("a") == "n1"
    h.create("b", cpu=2)
    assert h.node_of("b") == "n1"  # the stopped group released its compute
    h.gone("b")
    h.groups.start(SUB, RG, "a")
    h.pump()
    h.create("c", cpu=1)
    assert h.node_of("c") is None  # started again, it holds its cores


def test_events_are_applied_as_deltas_without_listing_the_store(h: Harness) -> None:
    h.node("n1", cpu=4)
    listed = h.store.lists
    for i in range(5):
        h.create(f"g{i}", cpu=1)
    h.gone("g0")
    h.groups.stop(SUB, RG, "g1")
    h.node("n2", cpu=4)
    h.pump()
    assert h.store.lists == listed
    assert h.node_of("g4") in ("n1", "n2")


def test_a_subnet_or_network_removed_leaves_the_snapshot(h: Harness) -> None:
    def vnet(*subnets: str) -> VirtualNetwork:
        return VirtualNetwork.model_validate({"location": "local", "properties": {
            "addressSpace": {"addressPrefixes": ["10.50.0.0/16"]},
            "subnets": [{"name": s, "properties": {"addressPrefix": f"10.50.{i}.0/24"}}
                        for i, s in enumerate(subnets)]}})

    def known() -> set[str]:
        return {k for k in h.binder.state.subnets.subnets if "/v1/" in k}

    h.network.vnets.put(SUB, RG, "v1", vnet("a", "b"))
    h.pump()
    assert known() == {f"{SUB}/{RG}/v1/a", f"{SUB}/{RG}/v1/b"}
    h.network.vnets.put(SUB, RG, "v1", vnet("a"))
    h.pump()
    assert known() == {f"{SUB}/{RG}/v1/a"}
    h.network.vnets.delete(SUB, RG, "v1")
    h.pump()
    assert known() == set()
