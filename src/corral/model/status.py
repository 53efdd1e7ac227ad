"""What a node agent observes about a group and reports to the control plane.

Shaped so the API can copy it into ``instanceView`` without translation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

GroupState = Literal["Pending", "Running", "Stopped", "Succeeded", "Failed"]


def now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    count: int = 1
    firstTimestamp: datetime = Field(default_factory=now)
    lastTimestamp: datetime = Field(default_factory=now)
    name: str
    message: str
    type: Literal["Normal", "Warning"] = "Normal"


class ContainerStateView(BaseModel):
    state: Literal["Waiting", "Running", "Terminated"] = "Waiting"
    startTime: datetime | None = None
    finishTime: datetime | None = None
    exitCode: int | None = None
    detailStatus: str = ""


class ContainerStatus(BaseModel):
    restartCount: int = 0
    currentState: ContainerStateView = Field(default_factory=ContainerStateView)
    previousState: ContainerStateView | None = None
    events: list[Event] = Field(default_factory=list)
    ready: bool | None = None


class GroupStatus(BaseModel):
    uid: str
    node: str
    observedGeneration: int = 0
    observedRestartGeneration: int = 0
    state: GroupState = "Pending"
    ip: str | None = None
    containers: dict[str, ContainerStatus] = Field(default_factory=dict)
    initContainers: dict[str, ContainerStatus] = Field(default_factory=dict)
    events: list[Event] = Field(default_factory=list)
    # Set when the group cannot be provisioned at all (bad image, port taken...).
    provisioningError: str | None = None
    # The agent removed everything of the group (after a delete).
    released: bool = False
    # Hash of each running container's spec, to replace only what an update changed.
    specHashes: dict[str, str] = Field(default_factory=dict)
    # Wall-clock span the group's containers ran, for metering.
    startedAt: datetime | None = None
    stoppedAt: datetime | None = None
    # The GroupMeta.containerRestarts counts the agent has carried out.
    observedContainerRestarts: dict[str, int] = Field(default_factory=dict)
    # The group's own (sandbox / virtual network) address; ``ip`` is the node's for Public groups.
    privateIp: str | None = None
    # The binding (GroupMeta.epoch) this status describes; a report on an older one is refused.
    epoch: int = 0
    # The node stopped the group for a drain (GroupMeta.evicting): it may be bound elsewhere now.
    evicted: bool = False


def record_event(events: list[Event], name: str, message: str, type: str = "Normal", limit: int = 50) -> None:
    """Append an event, folding a repeat of the last one into its count (as Kubernetes does)."""
    if events and events[-1].name == name and events[-1].message == message:
        events[-1].count += 1
        events[-1].lastTimestamp = now()
        return
    events.append(Event(name=name, message=message, type=type))  # type: ignore[arg-type]
    del events[:-limit]
