"""Container groups on virtual networks, end to end through the agent: reach by address and by
name inside a virtual network, isolation between virtual networks, security rules applied live."""

from __future__ import annotations

from collections.abc import Iterator

import groups
import pytest
from corral_server import CorralServer, running_corral
from groups import LISTEN, container, delete, exec_sync, group, put

from corral.cli.client import ApiError, Client

RG = "vnetgroups"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorralServer]:
    with running_corral(tmp_path_factory.mktemp("vnetgroups"), bridge="ctvg0", subnet="10.78.0.0/16",
                        cgroup_parent="/corral-test-vg") as srv:
        yield srv


def net(client: Client, method: str, path: str, body: dict | None = None) -> dict:  # type: ignore[type-arg]
    base = f"/subscriptions/{client.sub}/resourceGroups/{RG}/providers/Microsoft.Network"
    resp = client.request(method, base + path, json=body)
    return resp.json() if resp.content else {}


def subnet_id(client: Client, vnet: str, subnet: str) -> str:
    return (f"/subscriptions/{client.sub}/resourceGroups/{RG}/providers/Microsoft.Network/virtualNetworks/"
            f"{vnet}/subnets/{subnet}")


def private_ip(client: Client, name: str) -> str:
    return groups.private_ip(client, RG, name)


def talks(client: Client, src: str, target: str, timeout: float = 10, expect: bool = True) -> bool:
    return groups.talks(client, RG, src, target, timeout, expect)


def test_groups_in_a_virtual_network_reach_each_other_by_address_and_name(server: CorralServer) -> None:
    client = server.client()
    put(client, RG, "alpha", group(container("alpha", LISTEN)))
    put(client, RG, "beta", group(container("beta", LISTEN)))
    try:
        a, b = private_ip(client, "alpha"), private_ip(client, "beta")
        assert a != b and a.startswith("10.78.") and b.startswith("10.78.")
        assert talks(client, "beta", a)
        assert talks(client, "alpha", f"beta.{RG}.corral.local")  # service discovery through Corral's DNS
        assert talks(client, "alpha", "beta")  # the resource group is the search domain
        resolv = exec_sync(client, RG, "alpha", "alpha", "cat", "/etc/resolv.conf")["stdout"]
        assert f"search {RG}.corral.local" in resolv
    finally:
        delete(client, RG, "alpha")
        delete(client, RG, "beta")


def test_different_virtual_networks_stay_apart(server: CorralServer) -> None:
    client = server.client()
    net(client, "PUT", "/virtualNetworks/red", {"location": "local", "properties": {
        "addressSpace": {"addressPrefixes": ["10.81.0.0/16"]},
        "subnets": [{"name": "s", "properties": {"addressPrefix": "10.81.0.0/20"}}]}})
    try:
        put(client, RG, "red1", group(container("red1", LISTEN), subnetIds=[{"id": subnet_id(client, "red", "s")}]))
        put(client, RG, "default1", group(container("default1", LISTEN)))
        red = private_ip(client, "red1")
        assert red.startswith("10.81.")
        assert not talks(client, "default1", red, timeout=3, expect=False)
        assert not talks(client, "red1", private_ip(client, "default1"), timeout=3, expect=False)
    finally:
        delete(client, RG, "red1")
        delete(client, RG, "default1")
        net(client, "DELETE", "/virtualNetworks/red")


def test_deny_rule_blocks_and_its_removal_restores_traffic(server: CorralServer) -> None:
    client = server.client()
    net(client, "PUT", "/networkSecurityGroups/guard", {"location": "local", "properties": {}})
    net(client, "PUT", "/virtualNetworks/blue", {"location": "local", "properties": {
        "addressSpace": {"addressPrefixes": ["10.82.0.0/16"]},
        "subnets": [{"name": "s", "properties": {"addressPrefix": "10.82.0.0/20", "networkSecurityGroup": {
            "id": f"/subscriptions/{client.sub}/resourceGroups/{RG}/providers/Microsoft.Network/"
                  "networkSecurityGroups/guard"}}}]}})
    sid = subnet_id(client, "blue", "s")
    try:
        put(client, RG, "server", group(container("server", LISTEN), subnetIds=[{"id": sid}]))
        put(client, RG, "client", group(container("client", LISTEN), subnetIds=[{"id": sid}]))
        target = private_ip(client, "server")
        assert talks(client, "client", target)
        net(client, "PUT", "/networkSecurityGroups/guard/securityRules/no-7000", {"properties": {
            "priority": 100, "direction": "Inbound", "access": "Deny", "protocol": "Tcp",
            "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationAddressPrefix": "*",
            "destinationPortRange": "7000"}})
        assert not talks(client, "client", target, expect=False), "the deny rule must block, live"
        net(client, "DELETE", "/networkSecurityGroups/guard/securityRules/no-7000")
        assert talks(client, "client", target), "removing the rule must restore traffic"
    finally:
        delete(client, RG, "server")
        delete(client, RG, "client")
        net(client, "DELETE", "/virtualNetworks/blue")
        net(client, "DELETE", "/networkSecurityGroups/guard")


def test_security_group_attached_to_one_group(server: CorralServer) -> None:
    client = server.client()
    nsg_id = (f"/subscriptions/{client.sub}/resourceGroups/{RG}/providers/Microsoft.Network/"
              "networkSecurityGroups/own")
    bad = client.http.put(client.group_path(RG, "guarded"), params={"api-version": "2023-05-01"},
                          json=group(container("guarded", LISTEN), networkSecurityGroup={"id": nsg_id}))
    assert bad.status_code == 400 and "networkSecurityGroup" in bad.json()["error"]["message"] + str(
        bad.json()["error"].get("target"))
    net(client, "PUT", "/networkSecurityGroups/own", {"location": "local", "properties": {"securityRules": [
        {"name": "no-7000", "properties": {
            "priority": 100, "direction": "Inbound", "access": "Deny", "protocol": "Tcp",
            "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationAddressPrefix": "*",
            "destinationPortRange": "7000"}}]}})
    try:
        put(client, RG, "guarded", group(container("guarded", LISTEN), networkSecurityGroup={"id": nsg_id}))
        put(client, RG, "open", group(container("open", LISTEN)))
        guarded, open_ = private_ip(client, "guarded"), private_ip(client, "open")
        assert talks(client, "guarded", open_)  # the other group is not affected
        assert not talks(client, "open", guarded, timeout=3, expect=False)  # the rule holds for its group
        net(client, "DELETE", "/networkSecurityGroups/own/securityRules/no-7000")
        assert talks(client, "open", guarded), "removing the rule must restore traffic, live"
        # In use by a group: deleting the security group is refused, and it stays.
        with pytest.raises(ApiError) as busy:
            net(client, "DELETE", "/networkSecurityGroups/own")
        assert busy.value.code == "InUseNetworkSecurityGroupCannotBeDeleted" and "guarded" in str(busy.value)
        assert net(client, "GET", "/networkSecurityGroups/own")["name"] == "own"
    finally:
        delete(client, RG, "guarded")
        delete(client, RG, "open")
        net(client, "DELETE", "/networkSecurityGroups/own")
