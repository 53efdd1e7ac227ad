"""The plugin's network configuration (the CNI JSON on stdin) as pydantic models."""

from __future__ import annotations

import hashlib
import ipaddress
from pathlib import Path
from typing import Any

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


class IpamConf(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    subnet: str  # the virtual network's whole address space
    node_block: str = Field(alias="nodeBlock")  # this node's share of it
    gateway: str | None = None  # default: the block's first address (put on the bridge)
    peers: list[Peer] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> IpamConf:
        subnet = ipaddress.ip_network(self.subnet, strict=True)
        block = ipaddress.ip_network(self.node_block, strict=True)
        if subnet.version != 4 or not block.subnet_of(subnet):  # type: ignore[arg-type]
            raise ValueError(f"nodeBlock {block} must be an IPv4 block inside subnet {subnet}")
        if block.num_addresses < 4:
            raise ValueError(f"nodeBlock {block} is too small")
        if self.gateway is not None and ipaddress.ip_address(self.gateway) not in block:
            raise ValueError(f"gateway {self.gateway} is not inside nodeBlock {block}")
        for p in self.peers:
            if ipaddress.ip_network(p.block).overlaps(block):
                raise ValueError(f"peer block {p.block} overlaps this node's block {block}")
        return self

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
    prev_result: dict[str, Any] | None = Field(None, alias="prevResult")
    runtime_config: dict[str, Any] = Field(default_factory=dict, alias="runtimeConfig")
    valid_attachments: list[dict[str, str]] | None = Field(None, alias="cni.dev/valid-attachments")

    @field_validator("bridge")
    @classmethod
    def _ifname(cls, v: str | None) -> str | None:
        if v is not None and not (0 < len(v) <= 15):
            raise ValueError("bridge name must be 1-15 characters")
        return v

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
