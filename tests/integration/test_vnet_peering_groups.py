"""Real container groups on one node, in two virtual networks: `corral network` peers them, and a route
table drops one's traffic to the other, applied by the running agent to running groups (nothing restarts)."""

from __future__ import annotations

import json

import groups
from corral_server import CorralServer
from groups import LISTEN, container, delete, exec_sync, group, private_ip, put

from corral.cli.client import Client

RG = "cvnpeer"


def talks(client: Client, src: str, target: str, expect: bool) -> bool:
    return groups.talks(client, RG, src, target, timeout=15, expect=expect)


def test_peering_and_route_table_verbs_on_running_groups(corral: CorralServer) -> None:
    client, cli = corral.client(), corral.cli

    def cli_json(*args: str) -> dict:  # type: ignore[type-arg]
        return json.loads(cli(*args, "-o", "json").stdout)

    base = f"/subscriptions/{client.sub}/resourceGroups/{RG}/providers/Microsoft.Network"
    for name, prefix in (("cvn-pa", "10.225"), ("cvn-pb", "10.226")):  # the CLI's own test covers these verbs
        client.request("PUT", f"{base}/virtualNetworks/{name}", json={"location": "local", "properties": {
            "addressSpace": {"addressPrefixes": [f"{prefix}.0.0/16"]},
            "subnets": [{"name": "apps", "properties": {"addressPrefix": f"{prefix}.0.0/24"}}]}})
    try:
        for name, vnet in (("cvn-ga", "cvn-pa"), ("cvn-gb", "cvn-pb")):
            sid = f"{base}/virtualNetworks/{vnet}/subnets/apps"
            put(client, RG, name, group(container(name, LISTEN), subnetIds=[{"id": sid}]))
        ip_b = private_ip(client, RG, "cvn-gb")
        assert ip_b.startswith("10.226.0.")
        assert not talks(client, "cvn-ga", ip_b, expect=False)

        peer = ["network", "vnet", "peering"]
        p = cli_json(*peer, "create", "-g", RG, "--vnet-name", "cvn-pa", "-n", "a-b", "--remote-vnet", "cvn-pb")
        assert p["properties"]["peeringState"] == "Initiated"
        cli(*peer, "create", "-g", RG, "--vnet-name", "cvn-pb", "-n", "b-a", "--remote-vnet", "cvn-pa")
        assert "Connected" in cli(*peer, "list", "-g", RG, "--vnet-name", "cvn-pa").stdout
        assert talks(client, "cvn-ga", ip_b, expect=True)

        # A route table sending the peer's subnet to None, associated and dissociated live.
        client.request("PUT", f"{base}/routeTables/cvn-rt", json={"location": "local"})
        cli("network", "route-table", "route", "create", "-g", RG, "--route-table-name", "cvn-rt", "-n", "drop-b",
            "--address-prefix", "10.226.0.0/24", "--next-hop-type", "None")
        s = cli_json("network", "subnet", "update", "-g", RG, "--vnet-name", "cvn-pa", "-n", "apps",
                     "--route-table", "cvn-rt")
        assert s["properties"]["routeTable"]["id"].endswith("/routeTables/cvn-rt")
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
        for name in ("cvn-ga", "cvn-gb"):
            delete(client, RG, name)
        for path in ("virtualNetworks/cvn-pa", "virtualNetworks/cvn-pb", "routeTables/cvn-rt"):
            client.http.delete(f"{base}/{path}", params={"api-version": "2024-05-01"})
