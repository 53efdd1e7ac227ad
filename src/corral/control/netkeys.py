"""Store keys and ARM resource ids of the network resources (on model/armids' general forms)."""

from __future__ import annotations

import re
from typing import NamedTuple

from corral.model.armids import id_pattern, resource_id, resource_key
from corral.model.records import DNS_LABELS, NODE_BLOCKS, NSGS, ROUTE_TABLES, VNETS  # noqa: F401  (the key prefixes)

PROVIDER = "Microsoft.Network"
VNET_TYPE = f"{PROVIDER}/virtualNetworks"
SUBNET_TYPE = f"{VNET_TYPE}/subnets"
NSG_TYPE = f"{PROVIDER}/networkSecurityGroups"
RULE_TYPE = f"{NSG_TYPE}/securityRules"
PEERING_TYPE = f"{VNET_TYPE}/virtualNetworkPeerings"
ROUTE_TABLE_TYPE = f"{PROVIDER}/routeTables"
ROUTE_TYPE = f"{ROUTE_TABLE_TYPE}/routes"


def vnet_key(sub: str, rg: str, name: str) -> str:
    return resource_key(VNETS, sub, rg, name)


def nsg_key(sub: str, rg: str, name: str) -> str:
    return resource_key(NSGS, sub, rg, name)


def route_table_key(sub: str, rg: str, name: str) -> str:
    return resource_key(ROUTE_TABLES, sub, rg, name)


def blocks_key(vnet_uid: str) -> str:
    return f"{NODE_BLOCKS}{vnet_uid}"


def label_key(location: str, label: str) -> str:
    return f"{DNS_LABELS}{location.lower()}/{label.lower()}"


def vnet_id(sub: str, rg: str, name: str) -> str:
    return resource_id(sub, rg, VNET_TYPE, name)


def subnet_id(sub: str, rg: str, vnet: str, name: str) -> str:
    return f"{vnet_id(sub, rg, vnet)}/subnets/{name}"


def nsg_id(sub: str, rg: str, name: str) -> str:
    return resource_id(sub, rg, NSG_TYPE, name)


def rule_id(sub: str, rg: str, nsg: str, name: str) -> str:
    return f"{nsg_id(sub, rg, nsg)}/securityRules/{name}"


def peering_id(sub: str, rg: str, vnet: str, name: str) -> str:
    return f"{vnet_id(sub, rg, vnet)}/virtualNetworkPeerings/{name}"


def route_table_id(sub: str, rg: str, name: str) -> str:
    return resource_id(sub, rg, ROUTE_TABLE_TYPE, name)


def route_id(sub: str, rg: str, table: str, name: str) -> str:
    return f"{route_table_id(sub, rg, table)}/routes/{name}"


class VnetRef(NamedTuple):
    subscription: str
    resource_group: str
    vnet: str


class RouteTableRef(NamedTuple):
    subscription: str
    resource_group: str
    route_table: str


class SubnetRef(NamedTuple):
    subscription: str
    resource_group: str
    vnet: str
    subnet: str


class NsgRef(NamedTuple):
    subscription: str
    resource_group: str
    nsg: str


_SUBNET_RE = id_pattern(VNET_TYPE, "subnets")
_NSG_RE = id_pattern(NSG_TYPE)
_VNET_RE = id_pattern(VNET_TYPE)
_ROUTE_TABLE_RE = id_pattern(ROUTE_TABLE_TYPE)


def _parse(pattern: re.Pattern[str], value: str, what: str, path: str) -> tuple[str, ...]:
    m = pattern.match(value.strip())
    if not m:
        raise ValueError(f"'{value}' is not a {what} id: expected /subscriptions/{{sub}}/resourceGroups/{{rg}}/"
                         f"providers/Microsoft.Network/{path}")
    return m.groups()


def parse_vnet_id(value: str) -> VnetRef:
    return VnetRef(*_parse(_VNET_RE, value, "virtual network", "virtualNetworks/{name}"))


def parse_route_table_id(value: str) -> RouteTableRef:
    return RouteTableRef(*_parse(_ROUTE_TABLE_RE, value, "route table", "routeTables/{name}"))


def parse_subnet_id(value: str) -> SubnetRef:
    return SubnetRef(*_parse(_SUBNET_RE, value, "subnet", "virtualNetworks/{vnet}/subnets/{subnet}"))


def parse_nsg_id(value: str) -> NsgRef:
    return NsgRef(*_parse(_NSG_RE, value, "network security group", "networkSecurityGroups/{name}"))
