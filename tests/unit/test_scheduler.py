"""Placement: filters say why a node is rejected; the least allocated feasible node wins by default."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from corral.model.group import ContainerGroup
from corral.model.records import GroupMeta, GroupRecord, NodeInfo
from corral.scheduler.allocation import loads
from corral.scheduler.demand import demand_of
from corral.scheduler.pipeline import Pipeline, Unschedulable
from corral.scheduler.state import ClusterState

SUBNET = "s/r/v/default"


def grp(cpu: float, mem: float, node: str | None = None, os: str = "Linux", name: str = "n") -> GroupRecord:
    spec = ContainerGroup.model_validate({"properties": {"osType": os, "containers": [
        {"name": "a", "properties": {"image": "x", "resources": {"requests": {"cpu": cpu, "memoryInGB": mem}}}}]}})
    meta = GroupMeta(uid="u" * 16, subscription="s", resourceGroup="r", name=name, createdAt=datetime.now(UTC),
                     node=node)
    return GroupRecord(spec=spec, meta=meta)


def node(name: str, cpu: float = 2, mem: float = 4) -> NodeInfo:
    return NodeInfo(name=name, address="127.0.0.1", cpu=cpu, memoryGB=mem, lastHeartbeat=datetime.now(UTC))


def snapshot(nodes: list[NodeInfo], placed: list[GroupRecord]) -> ClusterState:
    state = ClusterState()
    for n in nodes:
        state.upsert_node(n)
    for i, g in enumerate(placed):
        assert g.meta.node
        state.bind(demand_of(f"/groups/s/r/p{i}", g.dump(), SUBNET), g.meta.node)
    return state


def place(g: GroupRecord, state: ClusterState) -> str:
    return Pipeline().place(demand_of("/groups/s/r/new", g.dump(), SUBNET), state)


def test_least_allocated_node_wins() -> None:
    nodes = [node("a"), node("b")]
    placed = [grp(1, 1, node="a")]
    assert place(grp(0.5, 0.5), snapshot(nodes, placed)) == "b"


def test_unplaceable_group_gets_a_reason_per_cause() -> None:
    nodes = [node("a", cpu=1), node("b", mem=1), node("c")]
    with pytest.raises(Unschedulable) as exc:
        place(grp(1.5, 2, os="Linux"), snapshot(nodes, [grp(1, 1, node="c")]))
    msg = str(exc.value)
    assert msg.startswith("0/3 nodes are available")
    assert "2 insufficient cpu" in msg and "1 insufficient memory" in msg


def test_os_type_filter() -> None:
    with pytest.raises(Unschedulable, match="osType Windows not supported"):
        place(grp(0.1, 0.1, os="Windows"), snapshot([node("a")], []))


def test_loads_report_what_the_scheduler_accounts() -> None:
    running, stopped = grp(1, 2, node="a", name="r"), grp(1, 1, node="a", name="s")
    stopped.meta.desiredState = "Stopped"
    out = loads([node("a"), node("b")], [running, stopped, grp(0.5, 0.5, name="pending")])
    assert (out["a"].cpu, out["a"].memoryGB, out["a"].groups) == (1, 2, 1)  # a stopped group holds nothing
    assert (out["b"].cpu, out["b"].groups) == (0, 0)
