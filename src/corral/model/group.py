"""The container group as the ACI API carries it.

Field names are the wire names (camelCase) so the models read like the REST
spec; unknown fields are kept (``extra="allow"``) because newer api-versions
add fields that must round-trip even before Corral understands them.
Read-only fields (``instanceView``, ``provisioningState``, ``fqdn``) are
filled by the API from observed state, never trusted from a request.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from corral.model.sysctl import Sysctl, check_sysctls

NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_LABEL_RE = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")

DEFAULT_CPU = 1.0
DEFAULT_MEMORY_GB = 1.5


class Wire(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Port(Wire):
    port: int = Field(ge=1, le=65535)
    protocol: Literal["TCP", "UDP"] = "TCP"
    # Corral extension: the host-side port of a public group, when it differs
    # from the container port (ACI always maps port to port).
    publicPort: int | None = Field(default=None, ge=1, le=65535)

    @field_validator("protocol", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


class EnvironmentVariable(Wire):
    name: str
    value: str | None = None
    secureValue: str | None = None
    # Corral extension: the value is the group's own address (privateIp) or its node's (nodeIp), known only
    # once the node has built the group's sandbox (Kubernetes' status.podIP and status.hostIP field refs).
    groupField: Literal["privateIp", "nodeIp"] | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, v: str) -> str:
        if not ENV_NAME_RE.match(v):
            raise ValueError(f"'{v}' is not a valid environment variable name")
        return v


GPU_SKU_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_GPUS = 16  # per container; no machine carries more


class GpuResource(Wire):
    count: int = Field(ge=1, le=MAX_GPUS)
    sku: str

    @field_validator("sku")
    @classmethod
    def _valid_sku(cls, v: str) -> str:
        if not GPU_SKU_RE.match(v):
            raise ValueError(f"'{v}' is not a GPU SKU name: 1-64 letters, digits, '.', '_' or '-' (e.g. V100)")
        return v


class ResourceRequests(Wire):
    cpu: float = Field(default=DEFAULT_CPU, gt=0, le=64)
    memoryInGB: float = Field(default=DEFAULT_MEMORY_GB, gt=0, le=1024)
    gpu: GpuResource | None = None


class ResourceLimits(Wire):
    cpu: float | None = Field(default=None, gt=0, le=64)
    memoryInGB: float | None = Field(default=None, gt=0, le=1024)
    gpu: GpuResource | None = None


class ResourceRequirements(Wire):
    requests: ResourceRequests = Field(default_factory=ResourceRequests)
    limits: ResourceLimits | None = None


class VolumeMount(Wire):
    name: str
    mountPath: str
    readOnly: bool = False

    @field_validator("mountPath")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/") or ".." in v.split("/"):
            raise ValueError("mountPath must be an absolute path without '..'")
        return v


class ExecAction(Wire):
    command: list[str] = Field(min_length=1)


class HttpHeader(Wire):
    name: str
    value: str = ""


class HttpGetAction(Wire):
    path: str = "/"
    port: int = Field(ge=1, le=65535)
    scheme: Literal["http", "https"] = "http"
    httpHeaders: list[HttpHeader] | None = None

    @field_validator("scheme", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v


class TcpSocketAction(Wire):
    port: int = Field(ge=1, le=65535)


PROBE_ACTIONS = ("exec", "httpGet", "tcpSocket")


class Probe(Wire):
    exec: ExecAction | None = None
    httpGet: HttpGetAction | None = None
    # Corral extension (ACI has exec and httpGet only): succeeds when a TCP connection opens.
    tcpSocket: TcpSocketAction | None = None
    initialDelaySeconds: int = Field(default=0, ge=0)
    periodSeconds: int = Field(default=10, ge=1)
    failureThreshold: int = Field(default=3, ge=1)
    successThreshold: int = Field(default=1, ge=1)
    timeoutSeconds: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _one_action(self) -> Probe:
        if sum(getattr(self, a) is not None for a in PROBE_ACTIONS) != 1:
            raise ValueError("a probe needs exactly one of 'exec', 'httpGet' or 'tcpSocket'")
        return self


class Capabilities(Wire):
    add: list[str] | None = None
    drop: list[str] | None = None


class SecurityContext(Wire):
    privileged: bool | None = None
    allowPrivilegeEscalation: bool | None = None
    capabilities: Capabilities | None = None
    runAsUser: int | None = Field(default=None, ge=0)
    runAsGroup: int | None = Field(default=None, ge=0)
    seccompProfile: str | None = None
    # Corral extension (Kubernetes' supplementalGroups and fsGroup): more groups of the process.
    supplementalGroups: list[int] | None = None

    @field_validator("supplementalGroups")
    @classmethod
    def _gids(cls, v: list[int] | None) -> list[int] | None:
        if v and any(g < 0 or g > 4294967294 for g in v):
            raise ValueError("supplementalGroups must be group ids from 0 to 4294967294")
        return v


class ContainerProperties(Wire):
    image: str = Field(min_length=1)
    command: list[str] | None = None
    # Corral extension (Kubernetes' args): after `command`, or alone in place of the image's CMD.
    args: list[str] | None = None
    ports: list[Port] | None = None
    environmentVariables: list[EnvironmentVariable] | None = None
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    volumeMounts: list[VolumeMount] | None = None
    livenessProbe: Probe | None = None
    readinessProbe: Probe | None = None
    # Corral extension: liveness and readiness wait until it succeeds once; failing it past its threshold
    # kills the container, as in Kubernetes.
    startupProbe: Probe | None = None
    securityContext: SecurityContext | None = None
    # Corral extension (ACI has none): the working directory.
    workingDir: str | None = None


def check_name(v: str, what: str = "container") -> str:
    if not NAME_RE.match(v):
        raise ValueError(
            f"'{v}' is not a valid {what} name: use 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return v


class Container(Wire):
    name: str
    properties: ContainerProperties

    _valid_name = field_validator("name")(lambda v: check_name(v))


class InitContainerProperties(Wire):
    image: str = Field(min_length=1)
    command: list[str] | None = None
    args: list[str] | None = None  # Corral extension, as for containers
    workingDir: str | None = None  # Corral extension, as for containers
    environmentVariables: list[EnvironmentVariable] | None = None
    volumeMounts: list[VolumeMount] | None = None
    securityContext: SecurityContext | None = None


class InitContainer(Wire):
    name: str
    properties: InitContainerProperties

    _valid_name = field_validator("name")(lambda v: check_name(v, "init container"))


class IpAddress(Wire):
    type: Literal["Public", "Private"] = "Public"
    ports: list[Port] = Field(default_factory=list)
    ip: str | None = None
    dnsNameLabel: str | None = None
    autoGeneratedDomainNameLabelScope: str | None = None
    fqdn: str | None = None

    @field_validator("dnsNameLabel")
    @classmethod
    def _valid_label(cls, v: str | None) -> str | None:
        if v is not None and not DNS_LABEL_RE.match(v):
            raise ValueError(
                f"'{v}' is not a valid DNS name label: 1-63 lowercase letters, digits and '-', "
                "starting with a letter"
            )
        return v


class AzureFileVolume(Wire):
    shareName: str
    storageAccountName: str
    storageAccountKey: str | None = None
    readOnly: bool = False


class GitRepoVolume(Wire):
    repository: str
    directory: str | None = None
    revision: str | None = None


class SecretPermissions(Wire):
    """Corral extension: who may read a secret volume's files (Kubernetes' defaultMode, items[].mode and
    fsGroup). Without it the files are 0400 and root's, as on ACI."""

    defaultMode: int | None = Field(default=None, ge=0, le=0o777)
    modes: dict[str, int] | None = None  # file name -> mode
    group: int | None = Field(default=None, ge=0, le=4294967294)  # owning group; it gets read access

    @field_validator("modes")
    @classmethod
    def _modes(cls, v: dict[str, int] | None) -> dict[str, int] | None:
        bad = sorted(k for k, m in (v or {}).items() if not 0 <= m <= 0o777)
        if bad:
            raise ValueError(f"modes of {', '.join(bad)} must be from 0 to 511 (0777)")
        return v


class Volume(Wire):
    name: str
    azureFile: AzureFileVolume | None = None
    emptyDir: dict[str, Any] | None = None
    secret: dict[str, str] | None = None
    gitRepo: GitRepoVolume | None = None
    secretPermissions: SecretPermissions | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Volume:
        kinds = [k for k in ("azureFile", "emptyDir", "secret", "gitRepo") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(
                f"volume '{self.name}' needs exactly one of azureFile, emptyDir, secret, gitRepo "
                f"(got {', '.join(kinds) or 'none'})"
            )
        if self.secretPermissions is not None:
            if self.secret is None:
                raise ValueError(f"volume '{self.name}': secretPermissions apply to secret volumes only")
            unknown = sorted(set(self.secretPermissions.modes or {}) - set(self.secret))
            if unknown:
                raise ValueError(f"volume '{self.name}': secretPermissions.modes names files the secret does not "
                                 f"have: {', '.join(unknown)}")
        return self


class RegistryCredential(Wire):
    server: str
    username: str | None = None
    password: str | None = None
    identity: str | None = None
    identityUrl: str | None = None


class DnsConfig(Wire):
    nameServers: list[str] = Field(default_factory=list)
    searchDomains: str | None = None
    options: str | None = None


class HostAlias(Wire):
    """Corral extension: an extra /etc/hosts line of the group (Kubernetes' hostAliases)."""

    ip: str
    hostnames: list[str] = Field(min_length=1)

    @field_validator("ip")
    @classmethod
    def _valid_ip(cls, v: str) -> str:
        try:
            ipaddress.ip_address(v)
        except ValueError:
            raise ValueError(f"'{v}' is not an IP address") from None
        return v

    @field_validator("hostnames")
    @classmethod
    def _valid_hostnames(cls, v: list[str]) -> list[str]:
        for h in v:
            if not h or any(ch.isspace() for ch in h) or "#" in h:
                raise ValueError(f"'{h}' is not a host name")
        return v


class SubnetId(Wire):
    id: str
    name: str | None = None


TopologyKey = Literal["node", "zone"]
LABEL_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,126}[A-Za-z0-9])?$")


def _check_pairs(v: dict[str, str], what: str) -> dict[str, str]:
    for k in v:
        if not LABEL_RE.match(k):
            raise ValueError(f"'{k}' is not a valid {what} name: 1-128 letters, digits, '.', '_', '/' or '-'")
    return v


class GroupAffinityTerm(Wire):
    """Corral extension: be placed near (affinity) or away from (antiAffinity) the groups carrying ``tags``
    (all of them, same resource group), within one ``topologyKey`` domain: a node or a zone."""

    tags: dict[str, str] = Field(min_length=1)
    topologyKey: TopologyKey = "node"
    required: bool = True  # False: a preference, worth ``weight``
    weight: int | None = Field(default=None, ge=1, le=100)

    _valid_tags = field_validator("tags")(lambda v: _check_pairs(v, "tag"))

    @model_validator(mode="after")
    def _weight_is_for_preferences(self) -> GroupAffinityTerm:
        if self.required and self.weight is not None:
            raise ValueError("weight applies to preferred terms only: set required to false, or drop weight")
        return self


class SpreadConstraint(Wire):
    """Corral extension: the groups sharing this group's value of tag ``tag`` (its family) spread evenly
    over ``topologyKey`` domains, at most ``maxSkew`` apart (Kubernetes topology spread constraints)."""

    tag: str = Field(min_length=1)
    topologyKey: TopologyKey = "zone"
    maxSkew: int = Field(default=1, ge=1, le=1000)
    whenUnsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"] = "DoNotSchedule"


class Placement(Wire):
    """Corral extension (``properties.placement``): where the scheduler may and should put the group."""

    nodeSelector: dict[str, str] | None = None  # node labels the node must carry
    affinity: list[GroupAffinityTerm] | None = None
    antiAffinity: list[GroupAffinityTerm] | None = None
    spread: list[SpreadConstraint] | None = None

    _valid_selector = field_validator("nodeSelector")(lambda v: v if v is None else _check_pairs(v, "label"))


class GroupProperties(Wire):
    containers: list[Container] = Field(min_length=1)
    initContainers: list[InitContainer] | None = None
    osType: Literal["Linux", "Windows"] = "Linux"
    restartPolicy: Literal["Always", "OnFailure", "Never"] = "Always"
    ipAddress: IpAddress | None = None
    volumes: list[Volume] | None = None
    imageRegistryCredentials: list[RegistryCredential] | None = None
    subnetIds: list[SubnetId] | None = None
    dnsConfig: DnsConfig | None = None
    sku: Literal["Standard", "Dedicated", "Confidential"] = "Standard"
    priority: Literal["Regular", "Spot"] | None = None
    # Corral extension: "sandboxed" runs the group under gVisor (runsc); unset = sku Confidential
    # means sandboxed, else the node's default.
    isolation: Literal["default", "sandboxed"] | None = None
    # Corral extension: delete the group (record and host state) once it is Succeeded or Failed.
    deleteOnExit: bool | None = None
    # Corral extension: security rules for this group alone (as Azure attaches an NSG to a NIC),
    # applied beside its subnet's. {"id": "<network security group id>"}
    networkSecurityGroup: SubnetId | None = None
    # Corral extension: extra /etc/hosts entries for every container of the group.
    hostAliases: list[HostAlias] | None = None
    # Corral extension: node selector, affinity / anti-affinity between groups, topology spread.
    placement: Placement | None = None
    # Corral extension: namespaced net.* kernel parameters of the group's network namespace (model/sysctl.py).
    sysctls: list[Sysctl] | None = None

    @field_validator("sysctls")
    @classmethod
    def _sysctls(cls, v: list[Sysctl] | None) -> list[Sysctl] | None:
        return None if v is None else check_sysctls(v)

    @model_validator(mode="after")
    def _consistent(self) -> GroupProperties:
        names = [c.name for c in self.containers] + [c.name for c in self.initContainers or []]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"container names must be unique in a group: {', '.join(sorted(dup))} repeated")
        vols = {v.name for v in self.volumes or []}
        for c in [*self.containers, *(self.initContainers or [])]:
            for m in c.properties.volumeMounts or []:
                if m.name not in vols:
                    raise ValueError(f"container '{c.name}' mounts volume '{m.name}', which the group does not define")
        cpu, mem = total_requests(self)
        for c in self.containers:
            lim = c.properties.resources.limits
            if lim and lim.cpu is not None and lim.cpu > cpu:
                raise ValueError(
                    f"the CPU limit {lim.cpu} of container '{c.name}' is greater than the total request {cpu} "
                    "of the container group"
                )
            if lim and lim.memoryInGB is not None and lim.memoryInGB > mem:
                raise ValueError(
                    f"the memory limit {lim.memoryInGB} GB of container '{c.name}' is greater than the total "
                    f"request {mem} GB of the container group"
                )
        if self.ipAddress is not None:
            exposed = {(p.port, p.protocol) for c in self.containers for p in c.properties.ports or []}
            for p in self.ipAddress.ports:
                if (p.port, p.protocol) not in exposed:
                    raise ValueError(
                        f"ipAddress port {p.port}/{p.protocol} is not a port of any container "
                        "(list it in the container's ports too)"
                    )
        return self


class ContainerGroup(Wire):
    """A PUT body; also the stored desired state."""

    location: str | None = None
    tags: dict[str, str] | None = None
    # Only nodes in one of these zones; checked against the registered nodes at create.
    zones: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = None
    identity: dict[str, Any] | None = None
    properties: GroupProperties


class TagsPatch(Wire):
    tags: dict[str, str] | None = None


def total_requests(props: GroupProperties) -> tuple[float, float]:
    """Sum of CPU cores and memory GB the group's containers request."""
    cpu = sum(c.properties.resources.requests.cpu for c in props.containers)
    mem = sum(c.properties.resources.requests.memoryInGB for c in props.containers)
    return cpu, mem


def gpu_requests(props: GroupProperties) -> dict[str, int]:
    """GPUs the group's containers request, per SKU (upper case: SKU names compare without case)."""
    out: dict[str, int] = {}
    for c in props.containers:
        gpu = c.properties.resources.requests.gpu
        if gpu is not None:
            out[gpu.sku.upper()] = out.get(gpu.sku.upper(), 0) + gpu.count
    return out
