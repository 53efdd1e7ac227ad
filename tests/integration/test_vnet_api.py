"""The Microsoft.Network routes, in-process over a real SQLite store: shapes, validation, in-use checks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from corral.api.app import create_app
from corral.control.plane import ControlPlane
from corral.model.records import NODES
from corral.store.sqlite import SqliteStore

SUB = "11111111-2222-3333-4444-555555555555"
V = "2024-05-01"
RGP = f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Network"


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    store = SqliteStore(tmp_path / "store.db")
    try:
        yield ControlPlane(store, "tok")
    finally:
        store.close()


@pytest.fixture
def api(plane: ControlPlane) -> Iterator[TestClient]:
    with TestClient(create_app(plane), headers={"Authorization": "Bearer tok"}) as c:
        yield c


def call(api: TestClient, method: str, path: str, body: Any = None, status: int | tuple[int, ...] = (200, 201)):
    resp = api.request(method, path, params={"api-version": V}, json=body)
    want = (status,) if isinstance(status, int) else status
    assert resp.status_code in want, (resp.status_code, resp.text)
    return resp


def vnet(api: TestClient, name: str = "vn1", prefixes: tuple[str, ...] = ("10.10.0.0/16",), **props: Any):
    body = {"location": "local", "properties": {"addressSpace": {"addressPrefixes": list(prefixes)}, **props}}
    return call(api, "PUT", f"{RGP}/virtualNetworks/{name}", body)


def subnet(api: TestClient, prefix: str, name: str = "sn1", vnet_name: str = "vn1", status: Any = (200, 201),
           **props: Any):
    return call(api, "PUT", f"{RGP}/virtualNetworks/{vnet_name}/subnets/{name}",
                {"properties": {"addressPrefix": prefix, **props}}, status)


def group_body(**props: Any) -> dict[str, Any]:
    c = {"name": "c", "properties": {"image": "corral/busybox:latest", "command": ["sleep", "1"],
                                     "resources": {"requests": {"cpu": 0.1, "memoryInGB": 0.1}}}}
    return {"location": "local", "properties": {"containers": [c], **props}}


def test_vnet_subnet_crud_shapes(api: TestClient) -> None:
    r = vnet(api)
    assert r.status_code == 201
    assert r.headers["Azure-AsyncOperation"] and r.headers["Retry-After"]
    body = r.json()
    assert body["type"] == "Microsoft.Network/virtualNetworks"
    assert body["properties"]["provisioningState"] == "Succeeded"
    assert body["id"].endswith("/resourceGroups/rg1/providers/Microsoft.Network/virtualNetworks/vn1")
    op = api.get(r.headers["Azure-AsyncOperation"]).json()
    assert op["status"] == "Succeeded"
    assert vnet(api).status_code == 200  # idempotent re-PUT

    s = subnet(api, "10.10.1.0/24", delegations=[
        {"name": "aci", "properties": {"serviceName": "Microsoft.ContainerInstance/containerGroups"}}])
    assert s.status_code == 201
    assert s.json()["properties"]["addressPrefix"] == "10.10.1.0/24"
    assert s.json()["properties"]["delegations"][0]["properties"]["serviceName"] == \
        "Microsoft.ContainerInstance/containerGroups"
    # case-insensitive paths, as the CLI sends them
    got = call(api, "GET", f"/subscriptions/{SUB}/resourcegroups/rg1/providers/microsoft.network/"
                           "virtualnetworks/VN1/subnets/SN1").json()
    assert got["name"] == "sn1"
    listed = call(api, "GET", f"{RGP}/virtualNetworks/vn1/subnets").json()["value"]
    assert [x["name"] for x in listed] == ["sn1"]
    vn = call(api, "GET", f"{RGP}/virtualNetworks/vn1").json()
    assert [x["name"] for x in vn["properties"]["subnets"]] == ["sn1"]
    names = [x["name"] for x in call(api, "GET", f"/subscriptions/{SUB}/providers/Microsoft.Network/"
                                                 "virtualNetworks").json()["value"]]
    assert names == ["vn1"]

    assert call(api, "DELETE", f"{RGP}/virtualNetworks/vn1/subnets/sn1").status_code == 200
    call(api, "GET", f"{RGP}/virtualNetworks/vn1/subnets/sn1", status=404)
    assert call(api, "DELETE", f"{RGP}/virtualNetworks/vn1/subnets/sn1", status=204)
    assert call(api, "DELETE", f"{RGP}/virtualNetworks/vn1").status_code == 200
    call(api, "GET", f"{RGP}/virtualNetworks/vn1", status=404)
    call(api, "DELETE", f"{RGP}/virtualNetworks/vn1", status=204)


def test_inline_subnets_in_vnet_put(api: TestClient) -> None:
    r = vnet(api, subnets=[{"name": "a", "properties": {"addressPrefix": "10.10.0.0/24"}},
                           {"name": "b", "properties": {"addressPrefix": "10.10.1.0/24"}}])
    assert sorted(s["name"] for s in r.json()["properties"]["subnets"]) == ["a", "b"]
    r = vnet(api, subnets=[{"name": "a", "properties": {"addressPrefix": "10.10.0.0/24"}}])
    assert [s["name"] for s in r.json()["properties"]["subnets"]] == ["a"]
    r = vnet(api)  # no subnets key: subnets stay
    assert [s["name"] for s in r.json()["properties"]["subnets"]] == ["a"]


@pytest.mark.parametrize("prefix,code", [
    ("10.10.300.0/24", "InvalidRequestContent"),  # bad CIDR
    ("10.10.1.1/24", "InvalidRequestContent"),  # host bits set
    ("10.20.0.0/24", "InvalidAddressPrefix"),  # outside the vnet
    ("10.10.0.0/25", "InvalidAddressPrefix"),  # overlaps sn1
])
def test_subnet_validation(api: TestClient, prefix: str, code: str) -> None:
    vnet(api)
    subnet(api, "10.10.0.0/24")
    r = subnet(api, prefix, name="bad", status=400)
    assert r.json()["error"]["code"] == code, r.json()


def test_vnet_validation(api: TestClient) -> None:
    r = call(api, "PUT", f"{RGP}/virtualNetworks/vn1",
             {"location": "local", "properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/8", "10.1.0.0/16"]}}},
             status=400)
    assert "overlap" in r.json()["error"]["message"]
    call(api, "PUT", f"{RGP}/virtualNetworks/vn1", {"properties": {}}, status=400)
    vnet(api)
    subnet(api, "10.10.0.0/24")
    # shrinking the address space away from a subnet is refused
    r = call(api, "PUT", f"{RGP}/virtualNetworks/vn1",
             {"location": "local", "properties": {"addressSpace": {"addressPrefixes": ["10.11.0.0/16"]}}},
             status=400)
    assert r.json()["error"]["code"] == "InvalidAddressPrefix"
    call(api, "PUT", f"{RGP}/virtualNetworks/nope/subnets/x", {"properties": {"addressPrefix": "10.0.0.0/24"}},
         status=404)


def test_nsg_and_rules(api: TestClient) -> None:
    rule = {"properties": {"priority": 100, "direction": "Inbound", "access": "Deny", "protocol": "Tcp",
                           "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationAddressPrefix": "*",
                           "destinationPortRange": "80"}}
    r = call(api, "PUT", f"{RGP}/networkSecurityGroups/nsg1", {"location": "local"})
    assert r.status_code == 201
    assert len(r.json()["properties"]["defaultSecurityRules"]) == 6
    r = call(api, "PUT", f"{RGP}/networkSecurityGroups/nsg1/securityRules/deny80", rule)
    assert r.status_code == 201 and r.json()["properties"]["priority"] == 100
    got = call(api, "GET", f"{RGP}/networkSecurityGroups/nsg1").json()
    assert [x["name"] for x in got["properties"]["securityRules"]] == ["deny80"]
    # priority out of range, duplicate priority in a direction, bad protocol, bad port: 400
    for bad in ({"priority": 50}, {"priority": 5000}, {"protocol": "Gre"}, {"destinationPortRange": "70000"},
                {"sourceAddressPrefix": "nonsense"}):
        body = {"properties": {**rule["properties"], **bad}}
        call(api, "PUT", f"{RGP}/networkSecurityGroups/nsg1/securityRules/bad", body, status=400)
    r = call(api, "PUT", f"{RGP}/networkSecurityGroups/nsg1/securityRules/dup", rule, status=400)
    assert "same priority" in r.json()["error"]["message"]
    # attach to a subnet; then the NSG is in use
    vnet(api)
    s = subnet(api, "10.10.0.0/24", networkSecurityGroup={"id": got["id"]})
    assert s.json()["properties"]["networkSecurityGroup"]["id"] == got["id"]
    assert call(api, "GET", f"{RGP}/networkSecurityGroups/nsg1").json()["properties"]["subnets"][0]["id"] == \
        s.json()["id"]
    r = call(api, "DELETE", f"{RGP}/networkSecurityGroups/nsg1", status=409)
    assert r.json()["error"]["code"] == "InUseNetworkSecurityGroupCannotBeDeleted"
    subnet(api, "10.10.1.0/24", name="sn2", networkSecurityGroup={
        "id": f"{RGP}/networkSecurityGroups/missing"}, status=400)
    call(api, "DELETE", f"{RGP}/networkSecurityGroups/nsg1/securityRules/deny80")
    call(api, "GET", f"{RGP}/networkSecurityGroups/nsg1/securityRules/deny80", status=404)
    subnet(api, "10.10.0.0/24")  # detach
    call(api, "DELETE", f"{RGP}/networkSecurityGroups/nsg1")


def test_groups_subnet_checks_and_in_use(api: TestClient) -> None:
    gp = f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.ContainerInstance/containerGroups"
    vnet(api)
    sid = subnet(api, "10.10.0.0/24").json()["id"]
    # Private without subnetIds
    r = call(api, "PUT", f"{gp}/g0", group_body(ipAddress={"type": "Private", "ports": []}), status=400)
    assert "subnetIds" in r.json()["error"]["message"]
    # missing subnet, other subscription, malformed id
    call(api, "PUT", f"{gp}/g0", group_body(subnetIds=[{"id": sid.replace("sn1", "nope")}]), status=400)
    other = sid.replace(SUB, "99999999-2222-3333-4444-555555555555")
    r = call(api, "PUT", f"{gp}/g0", group_body(subnetIds=[{"id": other}]), status=400)
    assert "subscription" in r.json()["error"]["message"]
    call(api, "PUT", f"{gp}/g0", group_body(subnetIds=[{"id": "/bad/id"}]), status=400)
    # a group in the subnet makes it (and its vnet) undeletable
    call(api, "PUT", f"{gp}/g1", group_body(subnetIds=[{"id": sid}], ipAddress={"type": "Private", "ports": []}))
    r = call(api, "DELETE", f"{RGP}/virtualNetworks/vn1/subnets/sn1", status=409)
    assert r.json()["error"]["code"] == "InUseSubnetCannotBeDeleted"
    r = call(api, "DELETE", f"{RGP}/virtualNetworks/vn1", status=409)
    assert r.json()["error"]["code"] == "InUseSubnetCannotBeDeleted"
    r = subnet(api, "10.10.4.0/24", status=409)  # prefix change while in use
    assert "cannot change" in r.json()["error"]["message"]


def test_dns_name_label_unique_per_location(api: TestClient, plane: ControlPlane) -> None:
    gp = f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.ContainerInstance/containerGroups"
    ip = {"type": "Public", "ports": [], "dnsNameLabel": "web"}
    r = call(api, "PUT", f"{gp}/a", group_body(ipAddress=ip))
    assert r.json()["properties"]["ipAddress"]["fqdn"] == "web.local.corral.local"
    call(api, "PUT", f"{gp}/a", group_body(ipAddress=ip))  # the same group again is fine
    r = call(api, "PUT", f"{gp}/b", group_body(ipAddress=ip), status=409)
    assert r.json()["error"]["code"] == "DnsNameLabelNotAvailable"
    other = group_body(ipAddress=ip)
    other["location"] = "elsewhere"
    call(api, "PUT", f"{gp}/c", other)  # another location: free
    # once the holder is gone, the label is free again
    plane.store.delete(f"/groups/{SUB}/rg1/a")
    call(api, "PUT", f"{gp}/b", group_body(ipAddress=ip))


def test_default_vnet_created(api: TestClient, plane: ControlPlane) -> None:
    sid = plane.network.vnets.default_subnet_id()
    v = call(api, "GET", sid.split("/subnets/")[0]).json()
    assert v["name"] == "corral-default"
    assert v["properties"]["addressSpace"]["addressPrefixes"] == ["10.240.0.0/16"]


def test_node_blocks_and_vnet_config(api: TestClient, plane: ControlPlane) -> None:
    vnet(api)
    sid = subnet(api, "10.10.0.0/22").json()["id"]
    for n, addr in (("n1", "192.168.50.1"), ("n2", "192.168.50.2"), ("n3", "192.168.50.3")):
        plane.store.put(NODES + n, {"name": n, "address": addr})
    c1 = plane.link.vnet_config_for("n1", sid)
    assert c1.ipam.node_block == "10.10.0.0/24" and c1.ipam.subnet == "10.10.0.0/16"
    assert c1.max_sandboxes == 250 and c1.ipam.peers == []
    c2 = plane.link.vnet_config_for("n2", sid)
    assert c2.ipam.node_block == "10.10.1.0/24"
    assert [(p.block, p.via) for p in c2.ipam.peers] == [("10.10.0.0/24", "192.168.50.1")]
    # stable: asking again returns the same block, and n1 now sees n2
    c1 = plane.link.vnet_config_for("n1", sid)
    assert c1.ipam.node_block == "10.10.0.0/24"
    assert [(p.block, p.via) for p in c1.ipam.peers] == [("10.10.1.0/24", "192.168.50.2")]
    assert c1.name == c2.name
    shown = call(api, "GET", sid).json()["properties"]["nodeAddressBlocks"]
    assert shown == {"n1": "10.10.0.0/24", "n2": "10.10.1.0/24"}
    # returned when the node goes, and granted again
    assert plane.network.release_node("n1") == 1
    assert plane.link.vnet_config_for("n3", sid).ipam.node_block == "10.10.0.0/24"


def test_node_block_exhaustion_and_reclaim(api: TestClient, plane: ControlPlane) -> None:
    vnet(api)
    sid = subnet(api, "10.10.0.0/23").json()["id"]
    for n in ("n1", "n2", "n3"):
        plane.store.put(NODES + n, {"name": n, "address": "192.168.0.1"})
    plane.link.vnet_config_for("n1", sid)
    plane.link.vnet_config_for("n2", sid)
    from corral.errors import NetworkCapacityExceeded
    with pytest.raises(NetworkCapacityExceeded):
        plane.link.vnet_config_for("n3", sid)
    plane.store.delete(NODES + "n1")  # n1 left: its block can be reclaimed
    assert plane.link.vnet_config_for("n3", sid).ipam.node_block == "10.10.0.0/24"


def test_nsg_rules_reach_vnet_config(api: TestClient, plane: ControlPlane) -> None:
    nsg = call(api, "PUT", f"{RGP}/networkSecurityGroups/nsg1", {"location": "local", "properties": {
        "securityRules": [{"name": "web", "properties": {
            "priority": 200, "direction": "Inbound", "access": "Allow", "protocol": "Tcp",
            "sourceAddressPrefixes": ["10.1.0.0/16", "VirtualNetwork"], "sourcePortRange": "*",
            "destinationAddressPrefix": "*", "destinationPortRanges": ["80", "8000-8080"]}}]}}).json()
    vnet(api)
    sid = subnet(api, "10.10.0.0/24", networkSecurityGroup={"id": nsg["id"]}).json()["id"]
    plane.store.put(NODES + "n1", {"name": "n1", "address": "192.168.0.1"})
    rules = plane.link.vnet_config_for("n1", sid).security_rules
    combos = {(r.source_prefix, r.destination_port_range) for r in rules}
    assert combos == {("10.1.0.0/16", "80"), ("10.1.0.0/16", "8000-8080"), ("10.10.0.0/16", "80"),
                      ("10.10.0.0/16", "8000-8080")}
    assert all(r.priority == 200 and r.access == "Allow" and r.protocol == "Tcp" for r in rules)


def test_group_rules_of_a_vanished_nsg_deny_everything(api: TestClient, plane: ControlPlane) -> None:
    gone = f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Network/networkSecurityGroups/gone"
    rules = plane.link.group_rules("/groups/sub/rg1/any", gone, None)
    assert {(r.direction, r.access, r.protocol, r.source_prefix, r.destination_port_range) for r in rules} == {
        ("Inbound", "Deny", "*", "*", "*"), ("Outbound", "Deny", "*", "*", "*")}


def test_vnet_group_limit(api: TestClient, plane: ControlPlane) -> None:
    gp = f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.ContainerInstance/containerGroups"
    plane.network.settings.max_groups_per_vnet = 2
    vnet(api)
    sid = subnet(api, "10.10.0.0/24").json()["id"]
    for n in ("g1", "g2"):
        call(api, "PUT", f"{gp}/{n}", group_body(subnetIds=[{"id": sid}]))
    r = call(api, "PUT", f"{gp}/g3", group_body(subnetIds=[{"id": sid}]), status=409)
    assert r.json()["error"]["code"] == "NetworkCapacityExceeded"
    call(api, "PUT", f"{gp}/g2", group_body(subnetIds=[{"id": sid}]))  # re-PUT of a member is fine
    # Groups naming no subnet join the default virtual network, which has the same limit.
    for n in ("d1", "d2"):
        call(api, "PUT", f"{gp}/{n}", group_body())
    r = call(api, "PUT", f"{gp}/d3", group_body(), status=409)
    assert r.json()["error"]["code"] == "NetworkCapacityExceeded" and "corral-default" in r.json()["error"]["message"]


def test_concurrent_grants_never_share_a_block(api: TestClient, plane: ControlPlane) -> None:
    from concurrent.futures import ThreadPoolExecutor

    vnet(api)
    sid = subnet(api, "10.10.0.0/20").json()["id"]
    nodes = [f"n{i}" for i in range(12)]
    for n in nodes:
        plane.store.put(NODES + n, {"name": n, "address": "192.168.0.1"})
    with ThreadPoolExecutor(6) as pool:
        blocks = list(pool.map(lambda n: plane.network.blocks.block_for(n, sid), nodes * 2))
    assert blocks[:12] == blocks[12:]  # each node got one block, and the same one when it asked again
    assert len(set(blocks[:12])) == 12
    assert plane.network.blocks.blocks(sid) == dict(zip(nodes, blocks[:12], strict=True))


def test_concurrent_label_claims_one_winner(api: TestClient) -> None:
    from concurrent.futures import ThreadPoolExecutor

    gp = f"/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.ContainerInstance/containerGroups"
    body = group_body(ipAddress={"type": "Public", "ports": [], "dnsNameLabel": "race"})

    def create(i: int) -> int:
        return api.put(f"{gp}/r{i}", params={"api-version": V}, json=body).status_code

    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(create, range(8)))
    assert sorted(codes) == [201] + [409] * 7
