"""Pure logic of corral-vnet: config validation, the address store, security rule translation, the guard's routers."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from corral.errors import NetworkCapacityExceeded
from corral.net.vnet import cli, guard, nftset
from corral.net.vnet.config import VnetConf
from corral.net.vnet.firewall import _level
from corral.net.vnet.ipam import AddressStore
from corral.net.vnet.nsg import SecurityRule, rule_lines


def conf(**ipam: object) -> VnetConf:
    base = {"subnet": "10.199.0.0/16", "nodeBlock": "10.199.1.0/24"}
    return VnetConf.model_validate({"name": "cnt-test", "ipam": {**base, **ipam}})


def test_config_defaults_and_validation() -> None:
    c = conf(peers=[{"block": "10.199.2.0/24", "via": "192.0.2.2"}])
    assert str(c.ipam.gateway_ip) == "10.199.1.1"
    assert c.bridge_name.startswith("cvb-") and len(c.bridge_name) <= 15
    assert c.max_sandboxes == 250
    with pytest.raises(ValidationError):
        conf(nodeBlock="10.200.0.0/24")  # outside the subnet
    with pytest.raises(ValidationError):
        conf(peers=[{"block": "10.199.1.128/25", "via": "192.0.2.2"}])  # overlaps our block
    with pytest.raises(ValidationError):
        conf(gateway="10.199.9.1")


def test_store_allocates_releases_and_limits(tmp_path: Path) -> None:
    block = ipaddress.IPv4Network("10.199.1.0/29")  # 6 usable, minus the gateway
    st = AddressStore(tmp_path, block, reserved=[ipaddress.IPv4Address("10.199.1.1")], limit=4)
    ips = [st.allocate(f"c{i}", "eth0") for i in range(4)]
    assert [str(i) for i in ips] == ["10.199.1.2", "10.199.1.3", "10.199.1.4", "10.199.1.5"]
    assert st.allocate("c0", "eth0") == ips[0]  # same attachment, same address
    with pytest.raises(NetworkCapacityExceeded) as err:
        st.allocate("c9", "eth0")
    assert "limit is 4" in err.value.message
    assert st.release("c1", "eth0") == "10.199.1.3"
    assert st.release("c1", "eth0") is None
    nxt = st.allocate("c5", "eth0")
    assert str(nxt) == "10.199.1.6"  # round robin: the freed .3 is not re-used at once
    assert st.lookup("c5", "eth0") == "10.199.1.6"


def test_store_survives_crash_between_intent_and_claim(tmp_path: Path) -> None:
    st = AddressStore(tmp_path, ipaddress.IPv4Network("10.199.1.0/28"))
    (tmp_path / "ids" / "crashed__eth0").write_text("10.199.1.7")  # intent written, claim never made
    assert str(st.allocate("crashed", "eth0")) == "10.199.1.7"  # the retry finishes it
    (tmp_path / "addr" / "10.199.1.9").write_text(json.dumps({"owner": "other__eth0"}))
    (tmp_path / "ids" / "late__eth0").write_text("10.199.1.9")  # its intent lost the race
    got = st.allocate("late", "eth0")
    assert str(got) != "10.199.1.9"  # never handed out twice
    assert st.allocations()["10.199.1.9"] == "other__eth0"


def test_store_gc(tmp_path: Path) -> None:
    st = AddressStore(tmp_path, ipaddress.IPv4Network("10.199.1.0/28"))
    a = st.allocate("keep", "eth0")
    b = st.allocate("gone", "eth0")
    assert st.gc({"keep__eth0"}) == [str(b)]
    assert st.allocations() == {str(a): "keep__eth0"}
    assert st.lookup("gone", "eth0") is None


def test_store_rename(tmp_path: Path) -> None:
    st = AddressStore(tmp_path, ipaddress.IPv4Network("10.199.1.0/28"))
    ip = st.allocate("pool-1", "eth0")
    assert st.rename("pool-1", "group", "eth0") == str(ip)
    assert st.lookup("group", "eth0") == str(ip) and st.lookup("pool-1", "eth0") is None


def test_rule_translation() -> None:
    rules = [
        SecurityRule(name="web", priority=300, direction="Inbound", access="Allow", protocol="Tcp",
                     destination_port_range="8000-8100", source_prefix="10.0.0.0/8"),
        SecurityRule(name="no-dns", priority=100, direction="Inbound", access="Deny", protocol="*",
                     destination_port_range="53"),
        SecurityRule(name="ping", priority=200, direction="Inbound", access="Allow", protocol="Icmp"),
        SecurityRule(name="src", priority=400, direction="Inbound", access="Deny", protocol="*",
                     source_port_range="1000-1999"),
    ]
    lines = rule_lines("C", rules)
    assert lines == [
        '-A C -p tcp -m tcp --dport 53 -m comment --comment "nsg no-dns" -j DROP',
        '-A C -p udp -m udp --dport 53 -m comment --comment "nsg no-dns" -j DROP',
        '-A C -p icmp -m comment --comment "nsg ping" -j ACCEPT',
        '-A C -s 10.0.0.0/8 -p tcp -m tcp --dport 8000:8100 -m comment --comment "nsg web" -j ACCEPT',
        '-A C -p tcp -m tcp --sport 1000:1999 -m comment --comment "nsg src" -j DROP',
        '-A C -p udp -m udp --sport 1000:1999 -m comment --comment "nsg src" -j DROP',
    ]
    inbound = _level("C", rules[2:], inbound=True)
    assert inbound[0].endswith("-j MARK --set-xmark 0x40000/0x40000") and inbound[1].endswith("-j RETURN")
    assert _level("C", rules[2:], inbound=False)[0].endswith("-j RETURN")
    with pytest.raises(ValidationError):
        SecurityRule(name="x", priority=100, direction="Inbound", access="Allow", destination_port_range="9-1")
    alias = SecurityRule.model_validate({"name": "a", "priority": 100, "direction": "Outbound", "access": "Deny",
                                         "destinationAddressPrefix": "10.1.2.3"})
    assert alias.destination_prefix == "10.1.2.3/32"


def test_cli_version_and_errors() -> None:
    doc = cli.run("VERSION", b'{"cniVersion": "0.4.0"}', {})
    assert doc == {"cniVersion": "0.4.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}
    from corral.net.vnet import plugin

    with pytest.raises(plugin.CniFailure) as err:
        cli.run("ADD", b'{"cniVersion": "0.1.0"}', {})
    assert err.value.cni_code == 1
    doc = plugin.error_doc(err.value, "0.1.0")
    assert doc["code"] == 1 and doc["cniVersion"] == "0.1.0" and "details" in doc


def test_result_shapes() -> None:
    from corral.net.vnet import plugin

    att = plugin.Attachment(container_id="c", ifname="eth0", netns="/var/run/netns/x", ip="10.199.1.5",
                            prefix_len=24, gateway="10.199.1.1", host_veth="cvabc", mac="m1", host_mac="m2",
                            bridge_mac="m3")
    res = plugin.result(conf(), att, {"nameservers": ["10.199.1.1"]})
    assert res["ips"] == [{"address": "10.199.1.5/24", "gateway": "10.199.1.1", "interface": 2}]
    assert res["interfaces"][2] == {"name": "eth0", "mac": "m1", "sandbox": "/var/run/netns/x"}
    assert "sandbox" not in res["interfaces"][1]  # the host veth, for bandwidth/portmap
    assert res["dns"] == {"nameservers": ["10.199.1.1"]}
    old = VnetConf.model_validate({**conf().model_dump(by_alias=True, mode="json"), "cniVersion": "0.4.0"})
    assert plugin.result(old, att)["ips"][0]["version"] == "4"


def test_route_plan_tables_rules_and_next_hops() -> None:
    from corral.net.vnet import routing

    c = VnetConf.model_validate({
        "name": "cvn-plan", "ipam": {"subnet": "10.216.0.0/16", "nodeBlock": "10.216.1.0/24",
                                     "peers": [{"block": "10.216.2.0/24", "via": "192.0.2.2"}]},
        "peerings": [{"name": "b", "addressPrefixes": ["10.217.0.0/16"],
                      "peers": [{"block": "10.217.2.0/24", "via": "192.0.2.2"}]}],
        "routes": [{"name": "fw", "addressPrefix": "0.0.0.0/0", "nextHopType": "VirtualAppliance",
                    "nextHopIpAddress": "10.216.2.9"},
                   {"name": "drop", "addressPrefix": "10.230.0.0/16", "nextHopType": "None"},
                   {"name": "local", "addressPrefix": "10.216.1.0/24", "nextHopType": "VnetLocal"}],
        "applianceRoutes": [{"sourceAddressPrefix": "10.218.0.0/24", "addressPrefix": "10.231.0.0/16",
                             "nextHopIpAddress": "10.216.1.5"},
                            {"sourceAddressPrefix": "10.218.0.0/24", "addressPrefix": "10.232.0.0/16",
                             "nextHopIpAddress": "10.216.2.5"}],  # another node's appliance: not ours
    })
    rules, routes = routing.plan(c)
    base, br = routing.table_base(c.tag), c.bridge_name
    assert routing.RuleSpec(routing.PRIO_ROUTES, base, iif=br) in rules
    assert routing.RuleSpec(routing.PRIO_PEERS, base + 1, iif=br) in rules
    assert routing.RuleSpec(routing.PRIO_DUTY_SKIP, iif=br, src="10.218.0.0/24", dst="10.231.0.0/16",
                            goto=routing.PRIO_ROUTES) in rules
    assert routing.RuleSpec(routing.PRIO_DUTY, base + 2, src="10.218.0.0/24", dst="10.231.0.0/16") in rules
    assert not [r for r in rules if r.dst == "10.232.0.0/16"]
    by_dst = {(r.table, r.dst, r.metric): r for r in routes}
    assert by_dst[(base, "0.0.0.0/0", 0)].gateway == "192.0.2.2"  # the appliance's node
    assert by_dst[(base, "10.230.0.0/16", 0)].kind == "blackhole"
    assert by_dst[(base, "10.216.1.0/24", 0)].kind == "throw"
    assert {d for (t, d, m) in by_dst if m == routing.SYSTEM_METRIC} == {"10.216.0.0/16", "10.217.0.0/16"}
    assert by_dst[(base + 1, "10.217.2.0/24", 0)].gateway == "192.0.2.2"
    assert by_dst[(base + 2, "10.231.0.0/16", 0)].gateway == "10.216.1.5"
    # Inside sandboxes: everything but the block's own prefix (its connected route stays).
    assert routing.sandbox_routes(c) == [("0.0.0.0/0", False), ("10.230.0.0/16", True)]
    # Nothing wanted: nothing planned.
    assert routing.plan(conf()) == ([], [])


def test_peering_and_route_config_validation() -> None:
    ipam = {"subnet": "10.216.0.0/16", "nodeBlock": "10.216.1.0/24"}
    bad = [
        {"peerings": [{"name": "x", "addressPrefixes": ["10.216.128.0/17"]}]},  # overlaps our own space
        {"peerings": [{"name": "x", "addressPrefixes": ["10.217.0.0/16"]},
                      {"name": "y", "addressPrefixes": ["10.217.0.0/24"]}]},  # two peers overlap
        {"routes": [{"name": "r", "addressPrefix": "10.0.0.0/8", "nextHopType": "VirtualAppliance"}]},
        {"routes": [{"name": "r", "addressPrefix": "10.0.0.0/8", "nextHopType": "None",
                     "nextHopIpAddress": "10.0.0.1"}]},
        {"routes": [{"name": "r", "addressPrefix": "10.0.0.1/8", "nextHopType": "None"}]},
    ]
    for extra in bad:
        with pytest.raises(ValidationError):
            VnetConf.model_validate({"name": "cvn-x", "ipam": ipam, **extra})


def test_address_prefixes_and_forwarded_sources() -> None:
    from corral.net.vnet import routing

    ipam = {"subnet": "10.216.0.0/16", "nodeBlock": "10.216.1.0/24"}
    two = VnetConf.model_validate({"name": "cvn-m", "ipam": {**ipam, "addressPrefixes": ["10.216.0.0/16",
                                                                                         "10.217.0.0/16"]}})
    assert two.ipam.spaces == ["10.216.0.0/16", "10.217.0.0/16"]
    assert conf().ipam.spaces == ["10.199.0.0/16"]  # a config without them: the subnet alone
    for bad in ({"addressPrefixes": ["10.217.0.0/16"]},  # must hold the subnet
                {"addressPrefixes": ["10.216.0.0/16", "10.216.128.0/17"]}):  # overlapping
        with pytest.raises(ValidationError):
            VnetConf.model_validate({"name": "cvn-x", "ipam": {**ipam, **bad}})
    with pytest.raises(ValidationError):  # a peer inside the second prefix
        VnetConf.model_validate({**two.model_dump(by_alias=True, mode="json"),
                                 "peerings": [{"name": "p", "addressPrefixes": ["10.217.5.0/24"]}]})

    def hop(prefix: str, ip: str) -> dict[str, str]:
        return {"name": prefix, "addressPrefix": prefix, "nextHopType": "VirtualAppliance", "nextHopIpAddress": ip}

    c = VnetConf.model_validate({
        "name": "cvn-f", "ipam": ipam,
        "peerings": [{"name": "hub", "addressPrefixes": ["10.218.0.0/16"], "allowForwardedTraffic": True},
                     {"name": "other", "addressPrefixes": ["10.219.0.0/16"]}],
        "routes": [hop("0.0.0.0/0", "10.218.0.4"), hop("10.230.0.0/16", "10.219.0.4"),
                   {"name": "x", "addressPrefix": "10.231.0.0/16", "nextHopType": "Internet"},
                   hop("10.232.0.0/16", "10.218.0.5"), hop("10.233.0.0/24", "10.219.0.4")]})
    # Longest prefix first: what the route table sends to the allowing peer's appliances is admitted; a more
    # specific prefix routed elsewhere is not (RETURN), and nothing after the last admitted one is listed.
    assert routing.forwarded_sources(c) == [("10.233.0.0/24", False), ("10.230.0.0/16", False),
                                            ("10.231.0.0/16", False), ("10.232.0.0/16", True),
                                            ("0.0.0.0/0", True)]
    no_flag = c.model_copy(update={"peerings": [p.model_copy(update={"allow_forwarded_traffic": False})
                                                for p in c.peerings]})
    assert routing.forwarded_sources(no_flag) == []


def test_routers_are_the_route_tables_next_hops_in_this_nodes_block() -> None:
    c = VnetConf.model_validate({
        "name": "cnt-test", "ipam": {"subnet": "10.199.0.0/16", "nodeBlock": "10.199.1.0/24"},
        "routes": [{"name": "fw", "addressPrefix": "10.30.0.0/16", "nextHopType": "VirtualAppliance",
                    "nextHopIpAddress": "10.199.1.4"},
                   {"name": "far", "addressPrefix": "10.31.0.0/16", "nextHopType": "VirtualAppliance",
                    "nextHopIpAddress": "10.199.2.4"},  # another node's block: a router there, not here
                   {"name": "drop", "addressPrefix": "10.32.0.0/16", "nextHopType": "None"}],
        "applianceRoutes": [{"sourceAddressPrefix": "10.50.0.0/24", "addressPrefix": "10.30.0.0/16",
                             "nextHopIpAddress": "10.199.1.9"}]})
    assert guard.routers(c) == {"10.199.1.4", "10.199.1.9"}
    assert guard.routers(conf()) == set()
    script = guard._script(c, [])
    assert "ip saddr != 10.199.1.1 meta iif . ether saddr @routers accept" in script  # never the gateway's
    assert script.rstrip().endswith("counter name other drop")  # what is not IPv4 or ARP


def test_set_element_keys_are_padded_as_the_kernel_compares_them() -> None:
    assert nftset.ether("02:00:00:c0:ff:ee") == bytes.fromhex("020000c0ffee0000")  # 6 bytes + 2
    assert nftset.ipv4("10.199.1.4") == bytes([10, 199, 1, 4]) and len(nftset.iface_index(7)) == 4
