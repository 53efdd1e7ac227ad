"""Real container groups on one node, in two virtual networks: `corral network` peers them, and a route
table sends one's traffic to the other through a router group (`sysctls: net.ipv4.ip_forward`), then drops
it, applied by the running agent to running groups (nothing restarts). The two listening groups are Private
on one port: a Private group claims no host port."""

from __future__ import annotations

import json

import groups
import pytest
from corral_server import CorralServer
from groups import LISTEN, container, delete, exec_sync, get, group, private_ip, put
from orchestration import wait_until

from corral.cli.client import ApiError, Client

RG = "cvnpeer"


def talks(client: Client, src: str, target: str, expect: bool) -> bool:
    return groups.talks(client, RG, src, target, timeout=15, expect=expect)


def forwarded(client: Client, router: str) -> int:
    """The router group's IP forwarding counter (ForwDatagrams of /proc/net/snmp)."""
    snmp = exec_sync(client, RG, router, router, "cat", "/proc/net/snmp")["stdout"]
    lines = [line.split() for line in snmp.splitlines() if line.startswith("Ip:")]
    return int(lines[1][lines[0].index("ForwDatagrams")])


def test_peering_and_route_table_verbs_on_running_groups(corral: CorralServer) -> None:
    client, cli = corral.client(), corral.cli

    def cli_json(*args: str) -> dict:  # type: ignore[type-arg]
        return json.loads(cli(*args, "-o", "json").stdout)

    base = f"/subscriptions/{client.sub}/resourceGroups/{RG}/providers/Microsoft.Network"
    for name, prefix in (("cvn-pa", "10.225"), ("cvn-pb", "10.226")):  # the CLI's own test covers these verbs
        client.request("PUT", f"{base}/virtualNetworks/{name}", json={"location": "local", "properties": {
            "addressSpace": {"addressPrefixes": [f"{prefix}.0.0/16"]},
            "subnets": [{"name": "apps", "properties": {"addressPrefix": f"{prefix}.0.0/24"}},
                        {"name": "dmz", "properties": {"addressPrefix": f"{prefix}.1.0/24"}}]}})
    try:
        private = {"type": "Private", "ports": [{"port": 7000}]}
        for name, vnet in (("cvn-ga", "cvn-pa"), ("cvn-gb", "cvn-pb")):
            sid = f"{base}/virtualNetworks/{vnet}/subnets/apps"
            put(client, RG, name, group(container(name, LISTEN, ports=[{"port": 7000}]), subnetIds=[{"id": sid}],
                                        ipAddress=private))
        ip_b = private_ip(client, RG, "cvn-gb")
        assert ip_b.startswith("10.226.0.")
        assert get(client, RG, "cvn-gb")["properties"]["ipAddress"]["ip"] == ip_b  # no public address
        assert not talks(client, "cvn-ga", ip_b, expect=False)

        peer = ["network", "vnet", "peering"]
        p = cli_json(*peer, "create", "-g", RG, "--vnet-name", "cvn-pa", "-n", "a-b", "--remote-vnet", "cvn-pb")
        assert p["properties"]["peeringState"] == "Initiated"
        cli(*peer, "create", "-g", RG, "--vnet-name", "cvn-pb", "-n", "b-a", "--remote-vnet", "cvn-pa")
        assert "Connected" in cli(*peer, "list", "-g", RG, "--vnet-name", "cvn-pa").stdout
        assert talks(client, "cvn-ga", ip_b, expect=True)

        # A router group, then a route table sending the peer's subnet through it, associated live.
        sid = f"{base}/virtualNetworks/cvn-pa/subnets/dmz"
        put(client, RG, "cvn-gr", group(container("cvn-gr", ["sleep", "3600"]), subnetIds=[{"id": sid}],
                                        sysctls=[{"name": "net.ipv4.ip_forward", "value": "1"}]))
        assert exec_sync(client, RG, "cvn-gr", "cvn-gr", "cat", "/proc/sys/net/ipv4/ip_forward")["stdout"] == "1\n"
        router = private_ip(client, RG, "cvn-gr")
        for bad, why in (({"name": "kernel.shm_rmid_forced", "value": "1"}, "not a sysctl a group may set"),
                         ({"name": "net.ipv4.tcp_congestion_control", "value": "bbr"}, "integers separated")):
            with pytest.raises(ApiError) as err:
                client.request("PUT", client.group_path(RG, "cvn-bad"),
                               json=group(container("c", ["true"]), sysctls=[bad]))
            assert err.value.status == 400 and "properties.sysctls[0]" in err.value.message and why in err.value.message
        with pytest.raises(ApiError) as err:  # built into the sandbox: fixed for the group's life
            client.request("PUT", client.group_path(RG, "cvn-gr"), json=group(
                container("cvn-gr", ["sleep", "3600"]), subnetIds=[{"id": sid}]))
        assert err.value.status == 409 and "properties.sysctls cannot change" in err.value.message
        client.request("PUT", f"{base}/routeTables/cvn-rt", json={"location": "local"})
        route = ["network", "route-table", "route", "create", "-g", RG, "--route-table-name", "cvn-rt", "-n", "to-b",
                 "--address-prefix", "10.226.0.0/24"]
        cli(*route, "--next-hop-type", "VirtualAppliance", "--next-hop-ip-address", router)
        s = cli_json("network", "subnet", "update", "-g", RG, "--vnet-name", "cvn-pa", "-n", "apps",
                     "--route-table", "cvn-rt")
        assert s["properties"]["routeTable"]["id"].endswith("/routeTables/cvn-rt")
        before = forwarded(client, "cvn-gr")
        # The node applies the route table shortly after the API answers: until then a talk goes direct.
        wait_until("cvn-ga to reach cvn-gb through the router", lambda: talks(client, "cvn-ga", ip_b, expect=True)
                   and forwarded(client, "cvn-gr") > before, timeout=15)

        # The same route to None: dropped.
        cli(*route, "--next-hop-type", "None")
        assert not talks(client, "cvn-ga", ip_b, expect=False)
        routes = exec_sync(client, RG, "cvn-ga", "cvn-ga", "ip", "route")["stdout"]
        assert "unreachable 10.226.0.0/24" in routes
        cli("network", "subnet", "update", "-g", RG, "--vnet-name", "cvn-pa", "-n", "apps", "--route-table", "null")
        assert talks(client, "cvn-ga", ip_b, expect=True)

        cli(*peer, "delete", "-g", RG, "--vnet-name", "cvn-pb", "-n", "b-a")
        assert not talks(client, "cvn-ga", ip_b, expect=False)
        assert cli_json(*peer, "show", "-g", RG, "--vnet-name", "cvn-pa", "-n", "a-b")["properties"][
            "peeringState"] == "Disconnected"
    finally:
        for name in ("cvn-ga", "cvn-gb", "cvn-gr"):
            delete(client, RG, name)
        for path in ("virtualNetworks/cvn-pa", "virtualNetworks/cvn-pb", "routeTables/cvn-rt"):
            client.http.delete(f"{base}/{path}", params={"api-version": "2024-05-01"})
