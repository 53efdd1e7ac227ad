"""Test helper: nodes, groups and snapshots for the scheduler, without a store."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from corral.model.group import ContainerGroup
from corral.model.records import GroupMeta, GroupRecord, NodeInfo
from corral.scheduler.demand import Demand, demand_of
from corral.scheduler.pipeline import Pipeline, SchedulerSettings
from corral.scheduler.state import ClusterState

SUBNET = "s/rg/vnet/default"


def node(name: str, cpu: float = 4, mem: float = 16, **kw: Any) -> NodeInfo:
    return NodeInfo(name=name, address="10.0.0.1", cpu=cpu, memoryGB=mem, lastHeartbeat=datetime.now(UTC), **kw)


def group(name: str, cpu: float = 1, mem: float = 1, tags: dict[str, str] | None = None,
          placement: dict[str, Any] | None = None, gpu: dict[str, Any] | None = None, ports: list[int] | None = None,
          zones: list[str] | None = None, os: str = "Linux", rg: str = "rg", stopped: bool = False) -> Demand:
    """The demand of a group as the API would store it (the body is validated by the real model)."""
    requests: dict[str, Any] = {"cpu": cpu, "memoryInGB": mem}
    if gpu:
        requests["gpu"] = gpu
    props: dict[str, Any] = {"osType": os, "containers": [{"name": "a", "properties": {
        "image": "x", "resources": {"requests": requests}, "ports": [{"port": p} for p in ports or []]}}]}
    if ports:
        props["ipAddress"] = {"type": "Public", "ports": [{"port": p} for p in ports]}
    if placement:
        props["placement"] = placement
    body: dict[str, Any] = {"properties": props, "tags": tags, "zones": zones}
    spec = ContainerGroup.model_validate(body)
    meta = GroupMeta(uid=f"uid-{name}", subscription="s", resourceGroup=rg, name=name, createdAt=datetime.now(UTC),
                     desiredState="Stopped" if stopped else "Running")
    return demand_of(f"/groups/s/{rg}/{name}", GroupRecord(spec=spec, meta=meta).dump(), SUBNET)


def snapshot(*nodes: NodeInfo, subnet_prefix: str | None = "10.0.0.0/8") -> ClusterState:
    state = ClusterState()
    for n in nodes:
        state.upsert_node(n)
    if subnet_prefix:
        state.subnets.define(SUBNET, subnet_prefix)
    return state


def place(state: ClusterState, d: Demand, strategy: str = "spread") -> str:
    return Pipeline(SchedulerSettings(strategy=strategy)).place(d, state)  # type: ignore[arg-type]


def place_and_bind(state: ClusterState, d: Demand, strategy: str = "spread") -> str:
    where = place(state, d, strategy)
    state.bind(d, where)
    return where
