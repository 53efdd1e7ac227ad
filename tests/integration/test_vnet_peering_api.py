"""Peerings and route tables through the Microsoft.Network routes, in-process over a real SQLite store:
states as Azure shows them, validation, associations, and what nodes are told (``vnet_config_for``)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from test_vnet_api import RGP, SUB, api, call, plane, subnet, vnet  # noqa: F401

from corral.control.plane import ControlPlane
from corral.model.records import NODES, ROUTE_TABLES, VNETS

VN = f"{RGP}/virtualNetworks"
RT = f"{RGP}/routeTables"


def peer(api: TestClient, vnet_name: str, name: str, remote: str, status: Any = (200, 201), **props: Any):  # noqa: F811
    body = {"properties": {"remoteVirtualNetwork": {"id": f"{VN}/{remote}"}, **props}}
    return call(api, "PUT", f"{VN}/{vnet_name}/virtualNetworkPeerings/{name}", body, status)


def state(api: TestClient, vnet_name: str, name: str) -> str:  # noqa: F811
    return call(api, "GET", f"{VN}/{vnet_name}/virtualNetworkPeerings/{name}").json()["properties"]["peeringState"]


def error(resp: Any) -> tuple[str, str]:
    e = resp.json()["error"]
    return e["code"], e["message"]


def test_peering_states_and_shapes(api: TestClient) -> None:  # noqa: F811
    vnet(api, "va", ("10.210.0.0/16",))
    vnet(api, "vb", ("10.211.0.0/16",))
    r = peer(api, "va", "a-to-b", "vb", allowForwardedTraffic=True)
    assert r.status_code == 201 and r.headers["Azure-AsyncOperation"]
    p = r.json()
    assert p["type"] == "Microsoft.Network/virtualNetworks/virtualNetworkPeerings"
    assert p["id"] == f"{VN}/va/virtualNetworkPeerings/a-to-b"
    props = p["properties"]
    assert props["peeringState"] == "Initiated" and props["peeringSyncLevel"] == "FullyInSync"
    assert props["allowVirtualNetworkAccess"] is True and props["allowForwardedTraffic"] is True
    assert props["remoteAddressSpace"] == {"addressPrefixes": ["10.211.0.0/16"]}
    assert props["remoteVirtualNetwork"]["id"].endswith("/virtualNetworks/vb")

    peer(api, "vb", "b-to-a", "va")
    assert state(api, "va", "a-to-b") == state(api, "vb", "b-to-a") == "Connected"
    listed = call(api, "GET", f"{VN}/va/virtualNetworkPeerings").json()["value"]
    assert [x["name"] for x in listed] == ["a-to-b"]
    got = call(api, "GET", f"{VN}/va").json()["properties"]["virtualNetworkPeerings"]
    assert got[0]["properties"]["peeringState"] == "Connected"
    # A GET-then-PUT of the network (az network vnet update) echoes its peerings: they are kept.
    whole = call(api, "GET", f"{VN}/va").json()
    whole["properties"]["addressSpace"]["addressPrefixes"].append("10.212.0.0/16")
    call(api, "PUT", f"{VN}/va", whole)
    assert state(api, "va", "a-to-b") == "Connected"

    # One side deleted: the other is Disconnected, and cannot be answered until updated.
    call(api, "DELETE", f"{VN}/vb/virtualNetworkPeerings/b-to-a")
    assert call(api, "DELETE", f"{VN}/vb/virtualNetworkPeerings/b-to-a", status=204)
    assert state(api, "va", "a-to-b") == "Disconnected"
    code, msg = error(peer(api, "vb", "b-to-a", "va", status=400))
    assert code == "RemotePeeringIsDisconnected" and "a-to-b" in msg
    peer(api, "va", "a-to-b", "vb")  # updating it starts over
    assert state(api, "va", "a-to-b") == "Initiated"
    peer(api, "vb", "b-to-a", "va")
    assert state(api, "va", "a-to-b") == "Connected"

    # The remote network deleted (with its side): Disconnected.
    call(api, "DELETE", f"{VN}/vb")
    assert state(api, "va", "a-to-b") == "Disconnected"


def test_peering_validation(api: TestClient) -> None:  # noqa: F811
    vnet(api, "va", ("10.210.0.0/16",))
    vnet(api, "vb", ("10.211.0.0/16",))
    vnet(api, "vlap", ("10.210.128.0/17",))
    vnet(api, "vc", ("10.220.0.0/16",))
    vnet(api, "vc2", ("10.220.0.0/24",))
    cases = [
        ("vlap", {}, "VnetAddressSpacesOverlap", "10.210.0.0/16"),
        ("va", {}, "InvalidRequestContent", "itself"),
        ("nope", {}, "InvalidRequestContent", "does not exist"),
        ("vb", {"useRemoteGateways": True}, "InvalidRequestContent", "useRemoteGateways"),
        ("vb", {"peerCompleteVnets": False}, "InvalidRequestContent", "peerCompleteVnets"),
    ]
    for remote, props, code, words in cases:
        got = error(peer(api, "va", "p", remote, status=400, **props))
        assert got[0] == code and words in got[1], got
    bad_id = call(api, "PUT", f"{VN}/va/virtualNetworkPeerings/p",
                  {"properties": {"remoteVirtualNetwork": {"id": "/not/an/id"}}}, 400)
    assert "not a virtual network id" in error(bad_id)[1]
    assert call(api, "GET", f"{VN}/va/virtualNetworkPeerings/p", status=404)

    peer(api, "va", "to-c", "vc")
    code, msg = error(peer(api, "va", "again", "vc", status=400))
    assert "already peered" in msg
    code, msg = error(peer(api, "va", "to-c2", "vc2", status=400))  # overlaps another peer of va
    assert code == "VnetAddressSpacesOverlap" and "to-c" in msg
    code, msg = error(peer(api, "va", "to-c", "vb", status=400))
    assert "cannot change" in msg
    # The address space of a peered network cannot grow into its peer.
    r = call(api, "PUT", f"{VN}/va", {"location": "local", "properties": {
        "addressSpace": {"addressPrefixes": ["10.210.0.0/16", "10.220.0.0/24"]}}}, 400)
    assert error(r)[0] == "VnetAddressSpacesOverlap"
    assert call(api, "GET", f"{VN}/va").json()["properties"]["addressSpace"]["addressPrefixes"] == ["10.210.0.0/16"]


def test_route_tables_and_associations(api: TestClient, plane: ControlPlane) -> None:  # noqa: F811
    r = call(api, "PUT", f"{RT}/rt1", {"location": "local", "properties": {"routes": [
        {"name": "via-fw", "properties": {"addressPrefix": "10.230.0.0/16", "nextHopType": "virtualappliance",
                                          "nextHopIpAddress": "10.210.1.4"}}]}})
    assert r.status_code == 201
    t = r.json()
    assert t["type"] == "Microsoft.Network/routeTables" and t["properties"]["subnets"] == []
    route = t["properties"]["routes"][0]
    assert route["type"] == "Microsoft.Network/routeTables/routes"
    assert route["properties"]["nextHopType"] == "VirtualAppliance"
    r = call(api, "PUT", f"{RT}/rt1/routes/drop", {"properties": {"addressPrefix": "10.231.0.0/16",
                                                                   "nextHopType": "None"}})
    assert r.status_code == 201 and "nextHopIpAddress" not in r.json()["properties"]
    # An update echoing what was read (az route update) keeps the routes.
    call(api, "PUT", f"{RT}/rt1", {"location": "local", "tags": {"k": "v"}})
    assert len(call(api, "GET", f"{RT}/rt1/routes").json()["value"]) == 2

    bad = [
        ({"addressPrefix": "10.232.0.0/16", "nextHopType": "VirtualAppliance"}, "nextHopIpAddress is required"),
        ({"addressPrefix": "10.232.0.0/16", "nextHopType": "None", "nextHopIpAddress": "10.0.0.1"}, "only allowed"),
        ({"addressPrefix": "10.232.0.1/16", "nextHopType": "None"}, "host bits"),
        ({"addressPrefix": "10.232.0.0/16", "nextHopType": "VirtualNetworkGateway"}, "not supported"),
        ({"addressPrefix": "10.231.0.0/16", "nextHopType": "Internet"}, "both have address prefix"),
    ]
    for props, words in bad:
        resp = call(api, "PUT", f"{RT}/rt1/routes/bad", {"properties": props}, 400)
        assert words in error(resp)[1], (props, resp.text)
    assert call(api, "PUT", f"{RT}/nope/routes/x", {"properties": {"addressPrefix": "10.0.0.0/8",
                                                                  "nextHopType": "None"}}, 404)

    vnet(api, "va", ("10.210.0.0/16",))
    rt_id = t["id"]
    s = subnet(api, "10.210.0.0/24", name="apps", vnet_name="va", routeTable={"id": rt_id, "etag": "echoed"}).json()
    assert s["properties"]["routeTable"] == {"id": rt_id}
    dmz = subnet(api, "10.210.1.0/24", name="dmz", vnet_name="va").json()
    assert call(api, "GET", f"{RT}/rt1").json()["properties"]["subnets"] == [{"id": s["id"]}]
    missing = subnet(api, "10.210.2.0/24", name="x", vnet_name="va", status=400,
                     routeTable={"id": f"{RGP}/routeTables/none"})
    assert "does not exist" in error(missing)[1]
    code, msg = error(call(api, "DELETE", f"{RT}/rt1", status=409))
    assert code == "InUseRouteTableCannotBeDeleted" and "apps" in msg

    # What the nodes are told: the subnet's routes, and the appliance's node the routes it serves.
    plane.store.put(NODES + "n1", {"name": "n1", "address": "192.168.60.1"})
    conf = plane.link.vnet_config_for("n1", s["id"])
    assert [(x.address_prefix, x.next_hop_type, x.next_hop_ip) for x in conf.routes] == [
        ("10.231.0.0/16", "None", None), ("10.230.0.0/16", "VirtualAppliance", "10.210.1.4")]
    dconf = plane.link.vnet_config_for("n1", dmz["id"])
    assert dconf.ipam.node_block == "10.210.1.0/24" and dconf.routes == []
    assert [(a.source_prefix, a.address_prefix, a.next_hop_ip) for a in dconf.appliance_routes] == [
        ("10.210.0.0/24", "10.230.0.0/16", "10.210.1.4")]

    # The node follows route tables through the link's wait.
    rev = plane.store.revision()
    call(api, "DELETE", f"{RT}/rt1/routes/drop")
    _, keys = plane.link.wait("n1", rev, 1.0)
    assert keys and any(k.startswith(ROUTE_TABLES) for k in keys)

    subnet(api, "10.210.0.0/24", name="apps", vnet_name="va")  # dissociated
    assert plane.link.vnet_config_for("n1", s["id"]).routes == []
    call(api, "DELETE", f"{RT}/rt1")
    assert call(api, "DELETE", f"{RT}/rt1", status=204)


def test_peered_networks_reach_node_configs(api: TestClient, plane: ControlPlane) -> None:  # noqa: F811
    vnet(api, "va", ("10.210.0.0/16",))
    vnet(api, "vb", ("10.211.0.0/16",))
    sa = subnet(api, "10.210.0.0/20", name="apps", vnet_name="va").json()["id"]
    sb = subnet(api, "10.211.0.0/20", name="apps", vnet_name="vb").json()["id"]
    nsg = call(api, "PUT", f"{RGP}/networkSecurityGroups/nsgb", {"location": "local", "properties": {
        "securityRules": [{"name": "from-vnet", "properties": {
            "priority": 100, "direction": "Inbound", "access": "Deny", "protocol": "Tcp",
            "sourceAddressPrefix": "VirtualNetwork", "sourcePortRange": "*",
            "destinationAddressPrefix": "*", "destinationPortRange": "22"}}]}}).json()
    subnet(api, "10.211.0.0/20", name="apps", vnet_name="vb", networkSecurityGroup={"id": nsg["id"]})
    for n, addr in (("n1", "192.168.60.1"), ("n2", "192.168.60.2")):
        plane.store.put(NODES + n, {"name": n, "address": addr})
    for n in ("n1", "n2"):
        plane.link.vnet_config_for(n, sa)
        plane.link.vnet_config_for(n, sb)

    peer(api, "va", "a-b", "vb")
    assert plane.link.vnet_config_for("n1", sa).peerings == []  # Initiated carries nothing
    rev = plane.store.revision()
    peer(api, "vb", "b-a", "va")
    _, keys = plane.link.wait("n1", rev, 1.0)
    assert keys and any(k.startswith(VNETS) for k in keys)
    conf = plane.link.vnet_config_for("n1", sa)
    assert [(p.name, p.address_prefixes) for p in conf.peerings] == [("vb", ["10.211.0.0/16"])]
    assert [(x.block, x.via) for x in conf.peerings[0].peers] == [("10.211.1.0/24", "192.168.60.2")]
    assert conf.ipam.address_prefixes == []  # one prefix: the config as before
    # Each side's own allowForwardedTraffic; a second address prefix reaches the nodes (and its blocks).
    peer(api, "vb", "b-a", "va", allowForwardedTraffic=True)
    call(api, "PUT", f"{VN}/va", {"location": "local", "properties": {
        "addressSpace": {"addressPrefixes": ["10.210.0.0/16", "10.212.0.0/16"]}}})
    s2 = subnet(api, "10.212.0.0/20", name="more", vnet_name="va").json()["id"]
    plane.link.vnet_config_for("n2", s2)
    conf = plane.link.vnet_config_for("n1", sa)
    assert conf.ipam.subnet == "10.210.0.0/16"
    assert conf.ipam.address_prefixes == ["10.210.0.0/16", "10.212.0.0/16"]
    assert ("10.212.0.0/24", "192.168.60.2") in [(x.block, x.via) for x in conf.ipam.peers]
    assert conf.peerings[0].allow_forwarded_traffic is False
    assert plane.link.vnet_config_for("n1", sb).peerings[0].allow_forwarded_traffic is True
    # VirtualNetwork in the peer's rules now covers the peered address space too (both of va's prefixes).
    rules = plane.link.vnet_config_for("n2", sb).security_rules
    assert sorted(r.source_prefix for r in rules) == ["10.210.0.0/16", "10.211.0.0/16", "10.212.0.0/16"]

    # Access disallowed on either side: no traffic, though both sides still show Connected.
    peer(api, "vb", "b-a", "va", allowVirtualNetworkAccess=False)
    assert state(api, "va", "a-b") == "Connected"
    assert plane.link.vnet_config_for("n1", sa).peerings == []
    assert plane.link.vnet_config_for("n1", sb).peerings == []
    call(api, "GET", f"/subscriptions/{SUB}/providers/Microsoft.Network/routeTables")
