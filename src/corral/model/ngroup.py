"""NGroups (``Microsoft.ContainerInstance/ngroups``, the 2025-09-01 shape) and what the orchestrator reports.

An NGroup keeps ``desiredCount`` container groups made from one profile revision.
Corral extensions (documented in docs/orchestration.md): automatic rollback on a
failed rolling update (on by default), autoscale on measured usage, and the
orchestrator's ``status`` (members, rollout, history, events), which it writes
through the API and the DNS server reads to resolve the NGroup's name.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from corral.model.armids import LB_TYPE, PROFILE_TYPE, parse_child_id, parse_resource_id
from corral.model.group import NAME_RE, SubnetId, VolumeMount, Wire

MAX_MEMBER_NAME = 63
GUID_LEN = 36
DEFAULT_BATCH_READY = 120.0  # seconds a rolling update's batch may take to be all ready (batchReadyTimeout)
# Seconds a leaving member keeps serving established connections when neither the NGroup (drainPeriod) nor
# its pools (drainPeriodInSeconds) say: the TTL of the NGroup's DNS answers, so resolvers forget it first.
DEFAULT_DRAIN = 5.0

_DURATION_RE = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$",
    re.IGNORECASE)


def parse_duration(value: str | int | float | None, field: str) -> float:
    """Seconds of an ISO 8601 duration (``PT30S``, ``PT1M30S``) or a plain number of seconds (Corral leniency)."""
    if value is None or value == "":
        return 0.0
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{field} must not be negative")
        return float(value)
    text = str(value).strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    m = _DURATION_RE.match(text)
    if not m or text.upper() in ("P", "PT"):
        raise ValueError(f"{field} '{value}' is not an ISO 8601 duration (e.g. PT30S, PT2M)")
    parts = {k: float(v) for k, v in m.groupdict().items() if v}
    return timedelta(days=parts.get("d", 0), hours=parts.get("h", 0), minutes=parts.get("m", 0),
                     seconds=parts.get("s", 0)).total_seconds()


def duration_field(name: str, minimum: float = 0.0, maximum: float | None = None) -> Any:
    """A field validator for a duration field (ISO 8601 or seconds) between ``minimum`` and ``maximum``
    seconds: a bad value is a 400 whose target is the field itself."""
    def check(value: str | int | float | None) -> str | int | float | None:
        if value is None:
            return value
        seconds = parse_duration(value, name)
        if seconds < minimum:
            raise ValueError(f"{name} '{value}' is shorter than {minimum:g} s")
        if maximum is not None and seconds > maximum:
            raise ValueError(f"{name} '{value}' is longer than {maximum:g} s")
        return value
    return field_validator(name)(lambda v: check(v))


class Resource(Wire):
    id: str


class ResourceHolder(Wire):
    resource: Resource


class GuidNamingPolicy(Wire):
    prefix: str | None = None


class NamingPolicy(Wire):
    guidNamingPolicy: GuidNamingPolicy | None = None


class Autoscale(Wire):
    """Corral extension: ``desiredCount`` follows measured usage between ``minCount`` and ``maxCount``."""

    minCount: int = Field(ge=0)
    maxCount: int = Field(ge=1)
    targetCpuUtilizationPercent: float | None = Field(default=None, gt=0, le=1000)
    targetMemoryUtilizationPercent: float | None = Field(default=None, gt=0, le=1000)
    scaleDownDelay: str | int | float | None = "PT5M"
    scaleUpDelay: str | int | float | None = "PT0S"

    _down = duration_field("scaleDownDelay", maximum=86400)
    _up = duration_field("scaleUpDelay", maximum=86400)

    @model_validator(mode="after")
    def _check(self) -> Autoscale:
        if self.minCount > self.maxCount:
            raise ValueError(f"minCount {self.minCount} is greater than maxCount {self.maxCount}")
        if self.targetCpuUtilizationPercent is None and self.targetMemoryUtilizationPercent is None:
            raise ValueError("autoscale needs targetCpuUtilizationPercent and/or targetMemoryUtilizationPercent")
        return self

    @property
    def down_delay(self) -> float:
        return parse_duration(self.scaleDownDelay, "scaleDownDelay")

    @property
    def up_delay(self) -> float:
        return parse_duration(self.scaleUpDelay, "scaleUpDelay")


class ElasticProfile(Wire):
    desiredCount: int = Field(default=0, ge=0, le=1000)
    maintainDesiredCount: bool | None = None
    containerGroupNamingPolicy: NamingPolicy | None = None
    autoscale: Autoscale | None = None  # Corral extension

    @property
    def prefix(self) -> str | None:
        p = self.containerGroupNamingPolicy
        return p.guidNamingPolicy.prefix if p and p.guidNamingPolicy else None


class BackendPoolRef(Wire):
    resource: Resource

    @field_validator("resource")
    @classmethod
    def _pool_id(cls, v: Resource) -> Resource:
        parse_child_id(v.id, LB_TYPE, "backendAddressPools")
        return v


class LoadBalancerProfile(Wire):
    backendAddressPools: list[BackendPoolRef] = Field(default_factory=list)


class NetworkProfile(Wire):
    loadBalancer: LoadBalancerProfile | None = None
    applicationGateway: dict[str, Any] | None = None


class MemberContainerProperties(Wire):
    volumeMounts: list[VolumeMount] | None = None


class MemberContainer(Wire):
    name: str
    properties: MemberContainerProperties = Field(default_factory=MemberContainerProperties)


class MemberGroupProperties(Wire):
    """What an NGroup sets on its members beside the profile: subnets, volumes, mounts."""

    subnetIds: list[SubnetId] | None = None
    volumes: list[dict[str, Any]] | None = None
    containers: list[MemberContainer] | None = None


class ProfileStub(Wire):
    resource: Resource
    revision: int | None = Field(default=None, ge=1)
    networkProfile: NetworkProfile | None = None
    storageProfile: dict[str, Any] | None = None
    containerGroupProperties: MemberGroupProperties | None = None

    @field_validator("resource")
    @classmethod
    def _profile_id(cls, v: Resource) -> Resource:
        parse_resource_id(v.id, PROFILE_TYPE)
        return v

    def pool_ids(self) -> list[str]:
        lb = self.networkProfile.loadBalancer if self.networkProfile else None
        return [p.resource.id for p in lb.backendAddressPools] if lb else []


class RollingUpdateProfile(Wire):
    maxBatchPercent: int = Field(default=20, ge=1, le=100)
    maxUnhealthyPercent: int = Field(default=20, ge=0, le=100)
    pauseTimeBetweenBatches: str | int | float | None = None
    inPlaceUpdate: bool = False
    # Corral extensions: go back to the last good revision by itself, and how long a batch may take to be ready.
    automaticRollback: bool = True
    batchReadyTimeout: str | int | float | None = "PT2M"

    _pause = duration_field("pauseTimeBetweenBatches", maximum=86400)
    _ready = duration_field("batchReadyTimeout", minimum=1, maximum=86400)

    @property
    def pause(self) -> float:
        return parse_duration(self.pauseTimeBetweenBatches, "pauseTimeBetweenBatches")

    @property
    def ready_timeout(self) -> float:
        return parse_duration(self.batchReadyTimeout, "batchReadyTimeout") or DEFAULT_BATCH_READY


class UpdateProfile(Wire):
    updateMode: Literal["Manual", "Rolling"] = "Manual"
    rollingUpdateProfile: RollingUpdateProfile | None = None
    # Corral extension: how long a member that leaves service (scale-in, rollout, restart, stop, delete)
    # keeps running once its removal from the pools and the DNS name is in force. None: the longest
    # drainPeriodInSeconds of its pools, else DEFAULT_DRAIN.
    drainPeriod: str | int | float | None = None

    _drain = duration_field("drainPeriod", maximum=3600)

    @property
    def drain(self) -> float | None:
        return None if self.drainPeriod is None else parse_duration(self.drainPeriod, "drainPeriod")

    @field_validator("updateMode", mode="before")
    @classmethod
    def _case(cls, v: Any) -> Any:
        return {"manual": "Manual", "rolling": "Rolling"}.get(str(v).lower(), v) if isinstance(v, str) else v


class PlacementProfile(Wire):
    faultDomainCount: int | None = Field(default=None, ge=1, le=10)


class NGroupProperties(Wire):
    elasticProfile: ElasticProfile = Field(default_factory=ElasticProfile)
    containerGroupProfiles: list[ProfileStub] = Field(min_length=1, max_length=1)
    updateProfile: UpdateProfile = Field(default_factory=UpdateProfile)
    placementProfile: PlacementProfile | None = None

    @property
    def profile(self) -> ProfileStub:
        return self.containerGroupProfiles[0]

    @property
    def rolling(self) -> RollingUpdateProfile:
        return self.updateProfile.rollingUpdateProfile or RollingUpdateProfile()


class NGroupSpec(Wire):
    """A PUT body; also the stored desired state."""

    location: str | None = None
    tags: dict[str, str] | None = None
    zones: list[str] | None = None
    identity: dict[str, Any] | None = None
    properties: NGroupProperties


def member_prefix(ngroup: str, spec: NGroupSpec) -> str:
    return spec.properties.elasticProfile.prefix or f"{ngroup.lower()}-"


def check_member_prefix(ngroup: str, spec: NGroupSpec) -> None:
    """Member names are ``<prefix><guid>`` and must be valid container group names."""
    prefix = member_prefix(ngroup, spec)
    sample = prefix + "0" * GUID_LEN
    if len(sample) > MAX_MEMBER_NAME or not NAME_RE.match(sample):
        raise ValueError(f"container group names '<prefix><guid>' made with prefix '{prefix}' would not be valid: "
                         f"use up to {MAX_MEMBER_NAME - GUID_LEN} lowercase letters, digits and '-', starting with "
                         "a letter or digit")


# ---- what the orchestrator reports ------------------------------------------------------------


def now() -> datetime:
    return datetime.now(UTC)


class MemberStatus(BaseModel):
    name: str
    revision: int | None = None
    state: str = "Pending"  # the group's instanceView.state
    ready: bool = False
    ip: str | None = None
    inService: bool = False  # in the load balancer pools and the NGroup's DNS name
    node: str | None = None


class OrchestratorEvent(BaseModel):
    name: str
    message: str
    type: Literal["Normal", "Warning"] = "Normal"
    count: int = 1
    firstTimestamp: datetime = Field(default_factory=now)
    lastTimestamp: datetime = Field(default_factory=now)


RolloutState = Literal["Progressing", "Complete", "RolledBack", "Failed", "Paused"]


class Rollout(BaseModel):
    generation: int
    fromRevision: int | None = None
    toRevision: int
    state: RolloutState = "Progressing"
    rollingBack: bool = False
    batch: int = 0
    failures: int = 0  # members of the target revision that failed and were replaced
    batchStartedAt: datetime | None = None  # the current batch was started (created or updated)
    batchReadyAt: datetime | None = None  # ... and was all ready (the pause between batches runs from here)
    startedAt: datetime = Field(default_factory=now)
    finishedAt: datetime | None = None
    message: str = ""


class HistoryEntry(BaseModel):
    revision: int
    generation: int
    result: RolloutState
    at: datetime = Field(default_factory=now)
    message: str = ""


class AutoscaleStatus(BaseModel):
    desiredCount: int
    cpuUtilizationPercent: float | None = None
    memoryUtilizationPercent: float | None = None
    lastScaleTime: datetime | None = None
    belowSince: datetime | None = None  # usage has wanted fewer members since then (scale-down delay)
    aboveSince: datetime | None = None
    message: str = ""


class NGroupStatus(BaseModel):
    observedGeneration: int = 0
    observedRestartGeneration: int = 0
    phase: Literal["Pending", "Steady", "Scaling", "RollingOut", "RollingBack", "Stopped", "Deleting"] = "Pending"
    currentRevision: int | None = None  # the last good revision: what members run when nothing rolls
    targetRevision: int | None = None
    desiredCount: int = 0  # the count in force (autoscale's when it is on)
    readyCount: int = 0
    members: list[MemberStatus] = Field(default_factory=list)
    rollout: Rollout | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
    autoscale: AutoscaleStatus | None = None
    events: list[OrchestratorEvent] = Field(default_factory=list)
    error: str | None = None
    scaledFor: list[int] | None = None  # [generation, count] last scaled to (maintainDesiredCount off)
    released: bool = False  # deleting: every member is gone, the NGroup may go


def record_event(events: list[OrchestratorEvent], name: str, message: str, type: str = "Normal",
                 limit: int = 50) -> None:
    if events and events[-1].name == name and events[-1].message == message:
        events[-1].count += 1
        events[-1].lastTimestamp = now()
        return
    events.append(OrchestratorEvent(name=name, message=message, type=type))  # type: ignore[arg-type]
    del events[:-limit]


class NGroupMeta(BaseModel):
    uid: str
    subscription: str
    resourceGroup: str
    name: str
    createdAt: datetime
    generation: int = 1
    revision: int  # the profile revision resolved at PUT time (spec.revision, or the latest then)
    desiredState: Literal["Running", "Stopped"] = "Running"
    restartGeneration: int = 0
    deleting: bool = False
    lastOperation: str = "Create"


class NGroupRecord(BaseModel):
    spec: NGroupSpec
    meta: NGroupMeta
    status: NGroupStatus = Field(default_factory=NGroupStatus)

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)
