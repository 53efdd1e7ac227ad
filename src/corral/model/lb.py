"""Load balancers (``Microsoft.Network/loadBalancers``, the subset NGroups use) and the rules agents apply.

A frontend is either a private address in a virtual-network subnet (``subnet``,
with ``privateIPAddress`` or one picked for it) or public on the nodes (no
subnet: every node's address). A rule sends a frontend's port to the addresses of
a backend pool, balanced at random; what an agent gets through the link is the
flattened ``NodeLbRule`` list.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from corral.model.group import Wire
from corral.model.network import Ref, check_net_name
from corral.model.records import StoredRecord


def _name(v: str) -> str:
    return check_net_name(v, "load balancer child resource")


def _spelled(*choices: str) -> Callable[[Any], Any]:
    """A before-validator taking ``choices`` in any case (clients send "tcp"; Azure answers "Tcp")."""
    canon = {c.lower(): c for c in choices}
    return lambda v: canon.get(v.lower(), v) if isinstance(v, str) else v


def _ipv4(v: str | None) -> str | None:
    if v is None:
        return None
    try:
        return str(ipaddress.IPv4Address(v))
    except ValueError:
        raise ValueError(f"'{v}' is not an IPv4 address") from None


class FrontendProperties(Wire):
    privateIPAddress: str | None = None
    privateIPAllocationMethod: Literal["Static", "Dynamic"] | None = None
    subnet: Ref | None = None
    publicIPAddress: Ref | None = None

    _ip = field_validator("privateIPAddress")(lambda v: _ipv4(v or None))  # "" as none
    _case = field_validator("privateIPAllocationMethod", mode="before")(_spelled("Static", "Dynamic"))


class Frontend(Wire):
    name: str
    properties: FrontendProperties = Field(default_factory=FrontendProperties)
    zones: list[str] | None = None

    _valid = field_validator("name")(lambda v: _name(v))


class BackendAddressProperties(Wire):
    ipAddress: str | None = None
    virtualNetwork: Ref | None = None
    subnet: Ref | None = None
    adminState: Literal["None", "Up", "Down", "Drain"] | None = None

    _ip = field_validator("ipAddress")(_ipv4)


class BackendAddress(Wire):
    name: str
    properties: BackendAddressProperties = Field(default_factory=BackendAddressProperties)


class BackendPoolProperties(Wire):
    loadBalancerBackendAddresses: list[BackendAddress] | None = None
    drainPeriodInSeconds: int | None = Field(default=None, ge=0, le=3600)


class BackendPool(Wire):
    name: str
    properties: BackendPoolProperties = Field(default_factory=BackendPoolProperties)

    _valid = field_validator("name")(lambda v: _name(v))


class RuleProperties(Wire):
    frontendIPConfiguration: Ref
    backendAddressPool: Ref | None = None
    backendAddressPools: list[Ref] | None = None
    probe: Ref | None = None
    protocol: Literal["Tcp", "Udp", "All"] = "Tcp"
    frontendPort: int = Field(ge=0, le=65535)
    backendPort: int | None = Field(default=None, ge=0, le=65535)
    idleTimeoutInMinutes: int | None = None
    enableFloatingIP: bool | None = None
    loadDistribution: str | None = None

    _case = field_validator("protocol", mode="before")(_spelled("Tcp", "Udp", "All"))

    def pool_refs(self) -> list[str]:
        refs = [r.id for r in self.backendAddressPools or []]
        if self.backendAddressPool is not None and self.backendAddressPool.id not in refs:
            refs.insert(0, self.backendAddressPool.id)
        return refs


class Rule(Wire):
    name: str
    properties: RuleProperties

    _valid = field_validator("name")(lambda v: _name(v))


class ProbeProperties(Wire):
    protocol: Literal["Tcp", "Http", "Https"] = "Tcp"
    port: int = Field(ge=1, le=65535)
    requestPath: str | None = None
    intervalInSeconds: int | None = Field(default=None, ge=1)
    numberOfProbes: int | None = Field(default=None, ge=1)
    probeThreshold: int | None = Field(default=None, ge=1)
    # With every backend failing: no new connections (AllProbedDown, the default) or to all (AllProbedUp).
    noHealthyBackendsBehavior: Literal["AllProbedDown", "AllProbedUp"] | None = None

    _case = field_validator("protocol", mode="before")(_spelled("Tcp", "Http", "Https"))

    @field_validator("noHealthyBackendsBehavior", mode="before")
    @classmethod
    def _behaviour(cls, v: Any) -> Any:
        return {"allprobeddown": "AllProbedDown", "allprobedup": "AllProbedUp"}.get(v.lower(), v) \
            if isinstance(v, str) else v


class Probe(Wire):
    name: str
    properties: ProbeProperties

    _valid = field_validator("name")(lambda v: _name(v))


class LbProperties(Wire):
    frontendIPConfigurations: list[Frontend] = Field(default_factory=list)
    backendAddressPools: list[BackendPool] = Field(default_factory=list)
    loadBalancingRules: list[Rule] = Field(default_factory=list)
    probes: list[Probe] = Field(default_factory=list)


class LoadBalancer(Wire):
    location: str | None = None
    tags: dict[str, str] | None = None
    sku: dict[str, Any] | None = None
    properties: LbProperties = Field(default_factory=LbProperties)


class LbMeta(BaseModel):
    uid: str
    subscription: str
    resourceGroup: str
    name: str
    createdAt: datetime
    # Frontend name (lowercase) -> the private address picked for a Dynamic frontend.
    frontendAddresses: dict[str, str] = Field(default_factory=dict)


class LbRecord(StoredRecord):
    spec: LoadBalancer
    meta: LbMeta


# ---- what a node agent applies ----------------------------------------------------------------


class NodeLbBackend(BaseModel):
    ip: str
    port: int
    snat: str | None = None  # the source to give forwarded connections (this node's gateway); None: masquerade


class NodeLbProbe(BaseModel):
    """How a node checks a rule's backends (each node checks for itself, as every node balances)."""

    protocol: Literal["Tcp", "Http", "Https"]
    port: int
    path: str = "/"
    interval: float = 5.0  # seconds between checks of one backend
    threshold: int = 1  # consecutive results that change a backend's health
    timeout: float = 5.0  # seconds a check may take: Azure's, the interval but at most 30 s
    allProbedUp: bool = False  # every backend failing: send to all of them (noHealthyBackendsBehavior AllProbedUp)


class NodeLbRule(BaseModel):
    id: str  # the rule's resource id: names its chain
    protocol: Literal["tcp", "udp"]
    frontendIp: str | None  # None: every local address of the node (a public frontend)
    frontendPort: int
    backends: list[NodeLbBackend] = Field(default_factory=list)
    probe: NodeLbProbe | None = None


class NodeLbRules(BaseModel):
    revision: int  # the store revision the rules were read at (reported back once applied)
    rules: list[NodeLbRule] = Field(default_factory=list)
