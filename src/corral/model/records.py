"""How desired state is kept in the store: keys and record shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from corral.model.group import ContainerGroup

GROUPS = "/groups/"
STATUS = "/status/"
OPERATIONS = "/operations/"
NODES = "/nodes/"
# Network resources (their records live in corral.model.network; ids and keys in corral.control.netkeys).
VNETS = "/vnets/"
NSGS = "/nsgs/"
NODE_BLOCKS = "/nodeblocks/"
ROUTE_TABLES = "/routetables/"
DNS_LABELS = "/dnslabels/"
# The cluster: node heartbeat leases, node credentials, the cluster's own secrets (CA, tokens).
LEASES = "/leases/"
NODE_CREDENTIALS = "/nodecreds/"
CLUSTER = "/cluster/"


def group_key(subscription: str, resource_group: str, name: str) -> str:
    # ARM names are case-insensitive; the record keeps the spelling of the creator.
    return f"{GROUPS}{subscription.lower()}/{resource_group.lower()}/{name.lower()}"


def status_key(uid: str) -> str:
    return f"{STATUS}{uid}"


class GroupMeta(BaseModel):
    uid: str
    subscription: str
    resourceGroup: str
    name: str
    createdAt: datetime
    generation: int = 1  # bumped by every spec change
    desiredState: Literal["Running", "Stopped"] = "Running"
    restartGeneration: int = 0  # bumped by restart/start: containers are recreated
    node: str | None = None  # set by the scheduler
    deleting: bool = False
    lastOperation: str = "Create"  # Create | Update | Delete | Start
    # Corral extension: bumped per container by a single-container restart.
    containerRestarts: dict[str, int] = Field(default_factory=dict)
    # A binding is (node, epoch): the epoch grows each time the group leaves a node (failover, drain),
    # so an agent that comes back can tell its copy is not the one in force.
    epoch: int = 0
    # Set while the group is moved off its node (a drain, or its node has no room for what it now asks):
    # the node stops it, then it is rebound elsewhere. ``evictReason`` says why (None: a drain).
    evicting: bool = False
    evictReason: str | None = None
    # Set when a change asks the group's node for more than the group held there (a start of a stopped
    # group, larger requests): the node carries out nothing new of it until the scheduler has confirmed
    # it still fits there (and clears this) or moves it (``evicting``). Never set on an unbound group.
    refit: bool = False
    # Taken over from a standby pool (rendered as isCreatedFromStandbyPool).
    fromStandbyPool: bool = False


class StoredRecord(BaseModel):
    """A record as the store keeps it: ``dump()`` is the JSON value written."""

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


class GroupRecord(StoredRecord):
    spec: ContainerGroup
    meta: GroupMeta


class NodeInfo(BaseModel):
    """A node as it registered (capacity, placement attributes) and as the control plane sees it."""

    name: str
    address: str  # where its public ports are reachable
    cpu: float
    memoryGB: float
    maxGroups: int = 250
    lastHeartbeat: datetime
    osType: Literal["Linux", "Windows"] = "Linux"
    zone: str | None = None  # failure domain; groups' `zones` and zone spread read it
    labels: dict[str, str] = Field(default_factory=dict)  # matched by a group's node selector
    gpus: dict[str, int] = Field(default_factory=dict)  # GPU SKU -> how many the node has
    # Set by the control plane, never by the agent: cordoned (no new placements) and heartbeat health.
    unschedulable: bool = False
    ready: bool = True
    # Remote agents: where the servers reach the node's API (logs, exec), and how long the node's
    # heartbeat lease lasts (None: an agent inside the server process, which has no lease).
    endpoint: str | None = None
    leaseSeconds: float | None = None
    # The agent stops its groups when cut off (`--fence-after`); without it a NotReady node's groups wait for it.
    selfFencing: bool = True
    osImage: str | None = None  # e.g. "Debian GNU/Linux 12 (bookworm)", kernel release
    # Drain: set by `corral node drain`; the key of the group being moved off right now.
    draining: bool = False
    evicting: str | None = None
    # The groups a drain cannot move (key -> the scheduler's reason): they stay, and are tried again.
    drainBlocked: dict[str, str] = Field(default_factory=dict)
