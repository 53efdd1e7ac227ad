"""What a node agent measures of its groups and sends to the control plane (``ControlPlaneLink.report_metrics``).

Rates, not counters: the agent keeps the previous reading of every cgroup and
network namespace and sends what happened since, so the control plane only has
to aggregate, and an agent that moves to another API server loses nothing but
one sampling period.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class ContainerSample(BaseModel):
    cpu: float = Field(ge=0)  # cores used on average since the previous sample
    memoryBytes: int = Field(ge=0)  # working set: usage minus inactive file cache, as kubelet reports it


class GroupSample(BaseModel):
    uid: str
    time: datetime  # when it was read (UTC, the node's clock)
    containers: dict[str, ContainerSample] = Field(default_factory=dict)  # running containers by name
    # The group's network namespace, all interfaces but loopback; None before there are two readings.
    rxBytesPerSecond: float | None = Field(default=None, ge=0)
    txBytesPerSecond: float | None = Field(default=None, ge=0)


class MetricsReport(BaseModel):
    node: str
    groups: list[GroupSample] = Field(default_factory=list)
