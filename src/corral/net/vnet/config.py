"""The plugin's network configuration (the CNI JSON on stdin) as pydantic models."""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from corral.net.vnet.nsg import SecurityRule

DEFAULT_DATA_DIR = Path("/var/lib/corral/vnet")
from corral.net.vnet.version import SUPPORTED_VERSIONS  # noqa: E402,F401  (re-exported)


class Peer(BaseModel):
    """Another node's block of this virtual network and the node address that routes to it."""

    model_config = ConfigDict(populate_by_name=True)

    block: str
    via: str

    @field_validator("block")
    @classmethod
    def _net(cls, v: str) -> str:
        return str(ipaddress.ip_network(v, strict=True))


def _cidr(v: str) -> str:
    net = ipaddress.ip_network(v, strict=True)
    if net.version != 4:
        raise ValueError(f"{v}: only IPv4 prefixes are supported")
    return str(net)


class PeeredNetwork(BaseModel):
    """A virtual network peered with this one (Connected both ways): its address space is admitted
    and not masqueraded, and its blocks on other nodes are routed to those nodes."""

    model_config = ConfigDict(populate_by_name=True)

    name: str
    address_prefixes: list[str] = Field(alias="addressPrefixes", min_length=1)
    peers: list[Peer] = Field(default_factory=list)  # its blocks on other nodes
    # This side's peering admits traffic an appliance of the peer forwards (a source outside the peer's
    # address space): the sources this subnet's route table sends to an appliance in the peer.
    allow_forwarded_traffic: bool = Field(False, alias="allowForwardedTraffic")

    @field_validator("address_prefixes")
    @classmethod
    def _nets(cls, v: list[str]) -> list[str]:
        return [_cidr(p) for p in v]


class Route(BaseModel):
    """One route of the subnet's route table (Azure's user-defined routes)."""

    model_config = ConfigDict(populate_by_name=True)

    name: str
    address_prefix: str = Field(alias="addressPrefix")
    next_hop_type: Literal["VirtualAppliance", "VnetLocal", "Internet", "None"] = Field(alias="nextHopType")
    next_hop_ip: str | None = Field(None, alias="nextHopIpAddress")

    @field_validator("address_prefix")
    @classmethod
    def _net(cls, v: str) -> str:
        return _cidr(v)

    @model_validator(mode="after")
    def _hop(self) -> Route:
        if (self.next_hop_type == "VirtualAppliance") != bool(self.next_hop_ip):
            raise ValueError(f"route {self.name}: nextHopIpAddress is required for VirtualAppliance, "
                             "and only for it")
        if self.next_hop_ip:
            self.next_hop_ip = str(ipaddress.IPv4Address(self.next_hop_ip))
        return self


class ApplianceRoute(BaseModel):
    """Traffic of another subnet's route table that this node must hand to an appliance on this network:
    packets from ``sourceAddressPrefix`` to ``addressPrefix`` arriving here go to ``nextHopIpAddress``."""

    model_config = ConfigDict(populate_by_name=True)

    source_prefix: str = Field(alias="sourceAddressPrefix")
    address_prefix: str = Field(alias="addressPrefix")
    next_hop_ip: str = Field(alias="nextHopIpAddress")

    @field_validator("source_prefix", "address_prefix")
    @classmethod
    def _net(cls, v: str) -> str:
        return _cidr(v)

    @field_validator("next_hop_ip")
    @classmethod
    def _ip(cls, v: str) -> str:
        return str(ipaddress.IPv4Address(v))


class IpamConf(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    subnet: str  # the virtual network's address prefix holding this node's block
    # The virtual network's whole address space when it has several prefixes (optional: default [subnet]).
    address_prefixes: list[str] = Field(default_factory=list, alias="addressPrefixes")
    node_block: str = Field(alias="nodeBlock")  # this node's share of it
    gateway: str | None = None  # default: the block's first address (put on the bridge)
    peers: list[Peer] = Field(default_factory=list)

    @field_validator("address_prefixes")
    @classmethod
    def _nets(cls, v: list[str]) -> list[str]:
        return [_cidr(p) for p in v]

    @model_validator(mode="after")
    def _check(self) -> IpamConf:
        subnet = ipaddress.ip_network(self.subnet, strict=True)
        block = ipaddress.ip_network(self.node_block, strict=True)
        if subnet.version != 4 or not block.subnet_of(subnet):  # type: ignore[arg-type]
            raise ValueError(f"nodeBlock {block} must be an IPv4 block inside subnet {subnet}")
        if self.address_prefixes and str(subnet) not in self.address_prefixes:
            raise ValueError(f"addressPrefixes {self.address_prefixes} must include subnet {subnet}")
        nets = [ipaddress.IPv4Network(p) for p in self.address_prefixes]
        for i, a in enumerate(nets):
            if any(a.overlaps(b) for b in nets[i + 1:]):
                raise ValueError(f"addressPrefixes {self.address_prefixes} overlap each other")
        if block.num_addresses < 4:
            raise ValueError(f"nodeBlock {block} is too small")
        if self.gateway is not None and ipaddress.ip_address(self.gateway) not in block:
            raise ValueError(f"gateway {self.gateway} is not inside nodeBlock {block}")
        for p in self.peers:
            if ipaddress.ip_network(p.block).overlaps(block):
                raise ValueError(f"peer block {p.block} overlaps this node's block {block}")
        return self

    @property
    def spaces(self) -> list[str]:
        """Every address prefix of the virtual network."""
        return self.address_prefixes or [self.subnet]

    @property
    def block_net(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.node_block)

    @property
    def gateway_ip(self) -> ipaddress.IPv4Address:
        if self.gateway:
            return ipaddress.IPv4Address(self.gateway)
        return self.block_net.network_address + 1


class VnetConf(BaseModel):
    """One virtual network as this node sees it. Extra CNI keys are ignored."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    cni_version: str = Field("1.0.0", alias="cniVersion")
    name: str
    type: str = "corral-vnet"
    bridge: str | None = None  # default: derived from the network name
    mtu: int = 1500
    data_dir: Path = Field(DEFAULT_DATA_DIR, alias="dataDir")
    max_sandboxes: int = Field(250, alias="maxSandboxes", ge=1)
    snat: bool = True
    ipam: IpamConf
    security_rules: list[SecurityRule] = Field(default_factory=list, alias="securityRules")
    peerings: list[PeeredNetwork] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    appliance_routes: list[ApplianceRoute] = Field(default_factory=list, alias="applianceRoutes")
    prev_result: dict[str, Any] | None = Field(None, alias="prevResult")
    runtime_config: dict[str, Any] = Field(default_factory=dict, alias="runtimeConfig")
    valid_attachments: list[dict[str, str]] | None = Field(None, alias="cni.dev/valid-attachments")

    @field_validator("bridge")
    @classmethod
    def _ifname(cls, v: str | None) -> str | None:
        if v is not None and not (0 < len(v) <= 15):
            raise ValueError("bridge name must be 1-15 characters")
        return v

    @model_validator(mode="after")
    def _peers_apart(self) -> VnetConf:
        seen: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [ipaddress.ip_network(p) for p in self.ipam.spaces]
        for pn in self.peerings:
            for p in pn.address_prefixes:
                net = ipaddress.ip_network(p)
                if any(net.overlaps(o) for o in seen):
                    raise ValueError(f"peered network {pn.name}: {p} overlaps this network or another peer")
                seen.append(net)
        return self

    @property
    def peered_prefixes(self) -> list[str]:
        return [p for pn in self.peerings for p in pn.address_prefixes]

    @property
    def tag(self) -> str:
        """A short stable id of the network for chain and device names."""
        return hashlib.sha256(self.name.encode()).hexdigest()[:8]

    @property
    def bridge_name(self) -> str:
        return self.bridge or f"cvb-{self.tag}"

    @property
    def net_dir(self) -> Path:
        return self.data_dir / self.name
