"""Pure logic of the network models: validation, id parsing, rule expansion, DNS index, resolv settings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from corral.control import netkeys as K
from corral.control.nodeblocks import network_name, node_rules
from corral.model.group import GroupProperties
from corral.model.network import (
    AddressSpace,
    NetMeta,
    NsgRecord,
    RuleRecord,
    SecurityRuleProperties,
    SubnetProperties,
    SubnetRecord,
    VnetRecord,
)
from corral.net.dns.index import DnsIndex
from corral.net.dns.resolv import dns_settings

META = NetMeta(uid="abcdef0123456789", subscription="s", resourceGroup="rg", name="n", createdAt=datetime.now(UTC))


def rule(**kw: object) -> SecurityRuleProperties:
    base: dict[str, object] = {"priority": 100, "direction": "Inbound", "access": "Allow", "protocol": "Tcp",
                               "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationAddressPrefix": "*",
                               "destinationPortRange": "80"}
    base.update(kw)
    return SecurityRuleProperties.model_validate(base)


def test_address_space_validation() -> None:
    assert AddressSpace(addressPrefixes=["10.0.0.0/16"]).addressPrefixes == ["10.0.0.0/16"]
    for bad in (["10.0.0.1/16"], ["10.0.0.0/33"], ["nonsense"], ["fd00::/64"], ["10.0.0.0/8", "10.1.0.0/16"], []):
        with pytest.raises(ValidationError):
            AddressSpace(addressPrefixes=bad)


def test_subnet_properties() -> None:
    assert SubnetProperties.model_validate({"addressPrefixes": ["10.0.1.0/24"]}).addressPrefix == "10.0.1.0/24"
    with pytest.raises(ValidationError, match="exactly one"):
        SubnetProperties.model_validate({})
    with pytest.raises(ValidationError, match="exactly one"):
        SubnetProperties.model_validate({"addressPrefixes": ["10.0.1.0/24", "10.0.2.0/24"]})
    with pytest.raises(ValidationError, match="delegation"):
        SubnetProperties.model_validate({"addressPrefix": "10.0.1.0/24", "delegations": [
            {"name": "x", "properties": {"serviceName": "Microsoft.Web/serverFarms"}}]})


def test_security_rule_validation() -> None:
    r = rule(protocol="tcp", access="deny", direction="outbound", sourceAddressPrefix="internet")
    assert (r.protocol, r.access, r.direction, r.sourceAddressPrefix) == ("Tcp", "Deny", "Outbound", "Internet")
    assert rule(destinationPortRange="8080-8080").destinationPortRange == "8080"
    for bad in ({"priority": 99}, {"priority": 4097}, {"protocol": "Gre"}, {"destinationPortRange": "9-1"},
                {"destinationPortRange": "x"}, {"sourceAddressPrefix": "10.0.0.0/99"}, {"access": "Maybe"},
                {"destinationPortRanges": ["80"]}):  # both single and plural given
        with pytest.raises(ValidationError):
            rule(**bad)
    with pytest.raises(ValidationError, match="required"):
        rule(destinationPortRange=None)


def test_ids_round_trip() -> None:
    sid = K.subnet_id("S", "RG", "V", "N")
    assert K.parse_subnet_id(sid) == ("S", "RG", "V", "N")
    assert K.parse_subnet_id(sid.replace("resourceGroups", "resourcegroups").lower()).subnet == "n"
    assert K.parse_nsg_id(K.nsg_id("S", "RG", "G")) == ("S", "RG", "G")
    for bad in ("", "/subscriptions/s", sid + "/extra", K.nsg_id("S", "RG", "G")):
        with pytest.raises(ValueError):
            K.parse_subnet_id(bad)


def test_node_rules_expand_combinations_and_tags() -> None:
    vnet = VnetRecord(meta=META, location="l", addressSpace=AddressSpace(addressPrefixes=["10.5.0.0/16"]))
    nsg = NsgRecord(meta=META, location="l", rules={
        "a": RuleRecord(name="a", properties=rule(priority=300, sourceAddressPrefix=None,
                                                   sourceAddressPrefixes=["VirtualNetwork", "1.2.3.4"],
                                                   destinationPortRange=None,
                                                   destinationPortRanges=["22", "0-65535"])),
        "b": RuleRecord(name="b", properties=rule(priority=100, protocol="*", sourceAddressPrefix="AzureLoadBalancer")),
        "c": RuleRecord(name="c", properties=rule(priority=200, access="Deny", destinationPortRange="0-10")),
        "d": RuleRecord(name="d", properties=rule(priority=400, access="Deny", sourcePortRange=None,
                                                   sourcePortRanges=["1000-1999", "3000"])),
    })
    out = node_rules(nsg, vnet)
    # priority order; b matches nothing here
    assert [r.name for r in out] == ["c", "a-0", "a-1", "a-2", "a-3", "d-0", "d-1"]
    assert out[0].destination_port_range == "1-10"
    assert [r.source_port_range for r in out[-2:]] == ["1000-1999", "3000"]
    assert {(r.source_prefix, r.destination_port_range) for r in out[1:5]} == {
        ("10.5.0.0/16", "22"), ("10.5.0.0/16", "*"), ("1.2.3.4/32", "22"), ("1.2.3.4/32", "*")}
    assert node_rules(None, vnet) == []


def test_network_name_is_path_safe_and_stable() -> None:
    vnet = VnetRecord(meta=META, location="l", addressSpace=AddressSpace(addressPrefixes=["10.5.0.0/16"]))
    sn = SubnetRecord(name="Apps", uid="u", properties=SubnetProperties(addressPrefix="10.5.0.0/24"))
    assert network_name(vnet, sn) == "abcdef0123.apps"


def test_dns_index() -> None:
    idx = DnsIndex("Corral.Local.")
    group = {"spec": {"location": "West", "properties": {"ipAddress": {"type": "Public", "dnsNameLabel": "Web"}}},
             "meta": {"uid": "u1", "name": "G1", "resourceGroup": "RG", "node": "n1"}}
    idx.apply("/groups/s/rg/g1", group)
    idx.apply("/nodes/n1", {"address": "192.0.2.1"})
    assert idx.lookup("web.west.corral.local.") == ["192.0.2.1"]  # node address until status comes
    assert idx.lookup("g1.rg.corral.local") == []  # no private address known yet
    idx.apply("/status/u1", {"ip": "192.0.2.1", "privateIp": "10.0.0.7"})
    assert idx.lookup("G1.RG.corral.local") == ["10.0.0.7"]
    assert idx.in_zone("x.corral.local") and not idx.in_zone("corral.local.evil")
    idx.apply("/groups/s/rg/g1", {**group, "meta": {**group["meta"], "deleting": True}})
    assert idx.lookup("web.west.corral.local") == [] and idx.lookup("g1.rg.corral.local") == []
    idx.apply("/groups/s/rg/g1", group)
    idx.apply("/groups/s/rg/g1", None)
    assert idx.lookup("web.west.corral.local") == []
    assert idx.lookup("a.b.c.corral.local") == [] and idx.lookup("example.com") == []


def test_resolv_settings_honour_dns_config() -> None:
    c = [{"name": "c", "properties": {"image": "i"}}]
    plain = GroupProperties.model_validate({"containers": c})
    s = dns_settings(plain, "Shop", "corral.local", "10.240.0.1")
    assert (s.nameservers, s.search, s.options) == (["10.240.0.1"], ["shop.corral.local"], [])
    custom = GroupProperties.model_validate({"containers": c, "dnsConfig": {
        "nameServers": ["9.9.9.9"], "searchDomains": "a.example b.example", "options": "ndots:2"}})
    s = dns_settings(custom, "shop", "corral.local", "10.240.0.1")
    assert (s.nameservers, s.search, s.options) == (["9.9.9.9"], ["a.example", "b.example"], ["ndots:2"])
