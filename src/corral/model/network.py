"""Virtual networks, subnets, peerings, security groups and route tables as ``Microsoft.Network`` carries them.

Field names are the wire names. Unknown fields are kept (``extra="allow"``) so
newer api-versions round-trip. Checks that need one object only (CIDR syntax,
priority range, protocol) live here; checks across objects (overlaps, a subnet
inside its virtual network, references) live in ``corral.control.vnets``.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from corral.model.group import Wire
from corral.model.records import StoredRecord

ACI_DELEGATION = "Microsoft.ContainerInstance/containerGroups"
# Address prefixes Azure lets rules name by tag instead of CIDR.
SERVICE_TAGS = {"*": "*", "any": "*", "internet": "Internet", "virtualnetwork": "VirtualNetwork",
                "azureloadbalancer": "AzureLoadBalancer"}
NET_NAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,78}[A-Za-z0-9_])?$")


def check_net_name(name: str, kind: str) -> str:
    if not NET_NAME_RE.match(name):
        raise ValueError(
            f"'{name}' is not a valid {kind} name: 1-80 letters, digits, '_', '.', '-', starting with a letter "
            "or digit and ending with a letter, digit or '_'"
        )
    return name


def cidr(value: str) -> str:
    """A canonical IPv4 CIDR; host bits must be zero, as Azure requires."""
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"'{value}' is not a valid address prefix (CIDR with host bits zero): {exc}") from None
    if net.version != 4:
        raise ValueError(f"'{value}': only IPv4 address prefixes are supported")
    return str(net)


class Ref(Wire):
    id: str


# ---- virtual networks and subnets -------------------------------------------------


class AddressSpace(Wire):
    addressPrefixes: list[str] = Field(min_length=1)

    @field_validator("addressPrefixes")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        out = [cidr(p) for p in v]
        nets = [ipaddress.IPv4Network(p) for p in out]
        for i, a in enumerate(nets):
            for b in nets[i + 1:]:
                if a.overlaps(b):
                    raise ValueError(f"address prefixes {a} and {b} overlap")
        return out


class DelegationProperties(Wire):
    serviceName: str


class Delegation(Wire):
    name: str | None = None
    properties: DelegationProperties


class SubnetProperties(Wire):
    addressPrefix: str | None = None
    addressPrefixes: list[str] | None = None
    networkSecurityGroup: Ref | None = None
    routeTable: Ref | None = None
    delegations: list[Delegation] | None = None

    @model_validator(mode="after")
    def _one_prefix(self) -> SubnetProperties:
        prefixes = [self.addressPrefix] if self.addressPrefix else list(self.addressPrefixes or [])
        if len(prefixes) != 1:
            raise ValueError("a subnet needs exactly one address prefix (addressPrefix)")
        self.addressPrefix = cidr(prefixes[0])
        self.addressPrefixes = None
        for d in self.delegations or []:
            if d.properties.serviceName.lower() != ACI_DELEGATION.lower():
                raise ValueError(
                    f"delegation to '{d.properties.serviceName}' is not supported: Corral subnets can only be "
                    f"delegated to {ACI_DELEGATION}"
                )
        return self

    @property
    def prefix(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.addressPrefix)


class Subnet(Wire):
    """A subnet PUT body, or one entry of a virtual network's ``subnets``."""

    name: str | None = None
    id: str | None = None
    properties: SubnetProperties


class VirtualNetworkProperties(Wire):
    addressSpace: AddressSpace
    subnets: list[Subnet] | None = None


class VirtualNetwork(Wire):
    location: str | None = None
    tags: dict[str, str] | None = None
    properties: VirtualNetworkProperties


# ---- network security groups -------------------------------------------------------


def _port_range(v: str) -> str:
    if v in ("*", ""):
        return "*"
    lo, _, hi = v.partition("-")
    try:
        a, b = int(lo), int(hi or lo)
    except ValueError:
        raise ValueError(f"'{v}' is not a port range (PORT, LOW-HIGH or *)") from None
    if not (0 <= a <= b <= 65535):
        raise ValueError(f"'{v}' is not a port range within 0-65535")
    return f"{a}-{b}" if a != b else str(a)


def _address_prefix(v: str) -> str:
    tag = SERVICE_TAGS.get(v.lower())
    if tag:
        return tag
    try:
        return str(ipaddress.ip_network(v, strict=False))
    except ValueError:
        raise ValueError(
            f"'{v}' is not an address prefix: give a CIDR, an IP address, '*' or one of the tags "
            "VirtualNetwork, Internet, AzureLoadBalancer"
        ) from None


class SecurityRuleProperties(Wire):
    description: str | None = None
    protocol: Literal["Tcp", "Udp", "Icmp", "*"]
    sourcePortRange: str | None = None
    sourcePortRanges: list[str] | None = None
    destinationPortRange: str | None = None
    destinationPortRanges: list[str] | None = None
    sourceAddressPrefix: str | None = None
    sourceAddressPrefixes: list[str] | None = None
    destinationAddressPrefix: str | None = None
    destinationAddressPrefixes: list[str] | None = None
    access: Literal["Allow", "Deny"]
    priority: int = Field(ge=100, le=4096)
    direction: Literal["Inbound", "Outbound"]

    @field_validator("protocol", "access", "direction", mode="before")
    @classmethod
    def _case(cls, v: Any) -> Any:
        # The CLI and older clients send any case ("tcp", "allow"); Azure accepts them.
        if isinstance(v, str):
            canon = {"tcp": "Tcp", "udp": "Udp", "icmp": "Icmp", "*": "*", "allow": "Allow", "deny": "Deny",
                     "inbound": "Inbound", "outbound": "Outbound"}
            return canon.get(v.lower(), v)
        return v

    @field_validator("sourcePortRange", "destinationPortRange")
    @classmethod
    def _port(cls, v: str | None) -> str | None:
        return None if v is None else _port_range(v)

    @field_validator("sourcePortRanges", "destinationPortRanges")
    @classmethod
    def _ports(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [_port_range(p) for p in v]

    @field_validator("sourceAddressPrefix", "destinationAddressPrefix")
    @classmethod
    def _prefix(cls, v: str | None) -> str | None:
        return None if v is None else _address_prefix(v)

    @field_validator("sourceAddressPrefixes", "destinationAddressPrefixes")
    @classmethod
    def _prefixes(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [_address_prefix(p) for p in v]

    @model_validator(mode="after")
    def _either(self) -> SecurityRuleProperties:
        for single, plural in (("sourcePortRange", "sourcePortRanges"),
                               ("destinationPortRange", "destinationPortRanges"),
                               ("sourceAddressPrefix", "sourceAddressPrefixes"),
                               ("destinationAddressPrefix", "destinationAddressPrefixes")):
            one, many = getattr(self, single), getattr(self, plural)
            if one is not None and many:
                raise ValueError(f"give {single} or {plural}, not both")
            if one is None and not many:
                raise ValueError(f"{single} (or {plural}) is required")
        return self

    def sources(self) -> list[str]:
        return self.sourceAddressPrefixes or [self.sourceAddressPrefix or "*"]

    def destinations(self) -> list[str]:
        return self.destinationAddressPrefixes or [self.destinationAddressPrefix or "*"]

    def source_ports(self) -> list[str]:
        return self.sourcePortRanges or [self.sourcePortRange or "*"]

    def destination_ports(self) -> list[str]:
        return self.destinationPortRanges or [self.destinationPortRange or "*"]


class SecurityRule(Wire):
    name: str | None = None
    id: str | None = None
    properties: SecurityRuleProperties


class NetworkSecurityGroupProperties(Wire):
    securityRules: list[SecurityRule] | None = None


class NetworkSecurityGroup(Wire):
    location: str | None = None
    tags: dict[str, str] | None = None
    properties: NetworkSecurityGroupProperties = Field(default_factory=NetworkSecurityGroupProperties)


# ---- virtual network peerings -------------------------------------------------------


class PeeringProperties(Wire):
    """A peering as PUT; the defaults are the REST API's (``az`` sends every flag explicitly)."""

    remoteVirtualNetwork: Ref
    allowVirtualNetworkAccess: bool = True
    allowForwardedTraffic: bool = False
    allowGatewayTransit: bool = False
    useRemoteGateways: bool = False
    peerCompleteVnets: bool = True
    enableOnlyIPv6Peering: bool = False

    @model_validator(mode="after")
    def _supported(self) -> PeeringProperties:
        if self.useRemoteGateways:
            raise ValueError("useRemoteGateways: Corral virtual networks have no gateways to use")
        if not self.peerCompleteVnets:
            raise ValueError("peerCompleteVnets: only whole virtual networks can be peered (no subnet peering)")
        if self.enableOnlyIPv6Peering:
            raise ValueError("enableOnlyIPv6Peering: only IPv4 address spaces are supported")
        return self


class VirtualNetworkPeering(Wire):
    name: str | None = None
    id: str | None = None
    properties: PeeringProperties


# ---- route tables -----------------------------------------------------------------

NEXT_HOP_TYPES = {"virtualappliance": "VirtualAppliance", "vnetlocal": "VnetLocal", "internet": "Internet",
                  "none": "None"}


class RouteProperties(Wire):
    addressPrefix: str
    nextHopType: Literal["VirtualAppliance", "VnetLocal", "Internet", "None"]
    nextHopIpAddress: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _read_only(cls, v: Any) -> Any:
        # What a GET-then-PUT client echoes back; never stored.
        if isinstance(v, dict):
            return {k: x for k, x in v.items() if k not in ("provisioningState", "hasBgpOverride")}
        return v

    @field_validator("nextHopType", mode="before")
    @classmethod
    def _hop_type(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v.lower() in ("virtualnetworkgateway", "virtualapplianceecmp"):
                raise ValueError(f"next hop type '{v}' is not supported: Corral has no gateways and no ECMP "
                                 "appliances (use VirtualAppliance, VnetLocal, Internet or None)")
            return NEXT_HOP_TYPES.get(v.lower(), v)
        return v

    @field_validator("addressPrefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        return cidr(v)

    @model_validator(mode="after")
    def _hop(self) -> RouteProperties:
        if self.nextHopType == "VirtualAppliance":
            if not self.nextHopIpAddress:
                raise ValueError("nextHopIpAddress is required when nextHopType is VirtualAppliance")
            try:
                ip = ipaddress.ip_address(self.nextHopIpAddress)
            except ValueError:
                raise ValueError(f"nextHopIpAddress '{self.nextHopIpAddress}' is not an IP address") from None
            if ip.version != 4:
                raise ValueError("nextHopIpAddress: only IPv4 addresses are supported")
            self.nextHopIpAddress = str(ip)
        elif self.nextHopIpAddress:
            raise ValueError(f"nextHopIpAddress is only allowed when nextHopType is VirtualAppliance, "
                             f"not {self.nextHopType}")
        else:
            self.nextHopIpAddress = None
        return self


class Route(Wire):
    name: str | None = None
    id: str | None = None
    properties: RouteProperties


class RouteTableProperties(Wire):
    routes: list[Route] | None = None
    disableBgpRoutePropagation: bool | None = None


class RouteTable(Wire):
    location: str | None = None
    tags: dict[str, str] | None = None
    properties: RouteTableProperties = Field(default_factory=RouteTableProperties)


# ---- how they are stored ----------------------------------------------------------


class NetMeta(BaseModel):
    uid: str
    subscription: str
    resourceGroup: str
    name: str
    createdAt: datetime


class PeeringRecord(BaseModel):
    """One side of a peering, kept in its virtual network's record (one CAS with the overlap checks)."""

    name: str
    uid: str
    remoteId: str  # the remote virtual network's id, as given
    remoteUid: str  # that network's uid when peered: a network re-created under the name is another one
    allowVirtualNetworkAccess: bool = True
    allowForwardedTraffic: bool = False
    allowGatewayTransit: bool = False
    # The remote side was deleted after being connected; stays so until this side is updated or re-created.
    disconnected: bool = False


class SubnetRecord(BaseModel):
    name: str  # the creator's spelling
    uid: str
    properties: SubnetProperties


class VnetRecord(StoredRecord):
    """A virtual network with its subnets in one record, so subnet checks and writes are one CAS."""

    meta: NetMeta
    location: str
    tags: dict[str, str] | None = None
    addressSpace: AddressSpace
    subnets: dict[str, SubnetRecord] = Field(default_factory=dict)  # by lowercase name
    peerings: dict[str, PeeringRecord] = Field(default_factory=dict)  # by lowercase name
    extra: dict[str, Any] = Field(default_factory=dict)  # round-tripped unknown properties


class RuleRecord(BaseModel):
    name: str
    properties: SecurityRuleProperties


class NsgRecord(StoredRecord):
    meta: NetMeta
    location: str
    tags: dict[str, str] | None = None
    rules: dict[str, RuleRecord] = Field(default_factory=dict)  # by lowercase name


class RouteRecord(BaseModel):
    name: str
    properties: RouteProperties


class RouteTableRecord(StoredRecord):
    meta: NetMeta
    location: str
    tags: dict[str, str] | None = None
    disableBgpRoutePropagation: bool = False
    routes: dict[str, RouteRecord] = Field(default_factory=dict)  # by lowercase name


class NodeBlocks(BaseModel):
    """Address blocks granted to nodes out of one virtual network's subnets."""

    vnetUid: str
    blocks: dict[str, dict[str, str]] = Field(default_factory=dict)  # subnet (lowercase) -> node -> CIDR


class NetworkSettings(BaseModel):
    """Knobs of the network control plane (defaults follow the Azure VNet CNI design)."""

    default_vnet: str = "corral-default"
    default_subnet: str = "default"
    default_prefix: str = "10.240.0.0/16"
    default_resource_group: str = "corral-system"
    block_prefixlen: int = Field(24, ge=16, le=30)  # the size of each node's block
    max_groups_per_node: int = Field(250, ge=1)
    max_groups_per_vnet: int = Field(16000, ge=1)

    @field_validator("default_prefix")
    @classmethod
    def _cidr(cls, v: str) -> str:
        return cidr(v)
