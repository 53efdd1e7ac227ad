"""`corral network ...` and `corral container create --vnet --subnet` against a real `corral up`,
and Corral's DNS server answering for the groups it runs."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from corral_server import CorralServer, free_port, running_corral
from dnslib import QTYPE, RCODE, DNSRecord
from groups import container, delete, group, put, wait_for

RG = "netcli"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorralServer]:
    dns_port = free_port()
    with running_corral(tmp_path_factory.mktemp("vnetcli"), bridge="ctvn0", subnet="10.77.0.0/16",
                        cgroup_parent="/corral-test-vn", extra=["--dns-listen", f"127.0.0.1:{dns_port}"],
                        env={"COLUMNS": "200"}) as srv:  # wide tables in the captured CLI output
        srv.dns_port = dns_port  # type: ignore[attr-defined]
        yield srv


def cli_json(server: CorralServer, *args: str) -> object:
    return json.loads(server.cli(*args, "-o", "json").stdout)


def ask(server: CorralServer, name: str) -> DNSRecord:
    raw = DNSRecord.question(name).send("127.0.0.1", server.dns_port, timeout=2)  # type: ignore[attr-defined]
    return DNSRecord.parse(raw)


def test_network_cli_round_trip(server: CorralServer) -> None:
    v = cli_json(server, "network", "vnet", "create", "-g", RG, "-n", "vn1", "--address-prefixes", "10.50.0.0/16",
                 "--subnet-name", "front", "--subnet-prefixes", "10.50.0.0/24")
    assert v["properties"]["subnets"][0]["name"] == "front"  # type: ignore[index]
    cli_json(server, "network", "nsg", "create", "-g", RG, "-n", "nsg1")
    r = cli_json(server, "network", "nsg", "rule", "create", "-g", RG, "--nsg-name", "nsg1", "-n", "deny-ssh",
                 "--priority", "100", "--access", "Deny", "--protocol", "Tcp", "--destination-port-ranges", "22")
    assert r["properties"]["destinationPortRange"] == "22"  # type: ignore[index]
    s = cli_json(server, "network", "subnet", "create", "-g", RG, "--vnet-name", "vn1", "-n", "back",
                 "--address-prefixes", "10.50.1.0/24", "--nsg", "nsg1",
                 "--delegations", "Microsoft.ContainerInstance/containerGroups")
    assert s["properties"]["networkSecurityGroup"]["id"].endswith("/networkSecurityGroups/nsg1")  # type: ignore[index]
    # az's spelling works too
    got = cli_json(server, "network", "vnet", "subnet", "show", "-g", RG, "--vnet-name", "vn1", "-n", "back")
    assert got["properties"]["addressPrefix"] == "10.50.1.0/24"  # type: ignore[index]
    subnets = cli_json(server, "network", "subnet", "list", "-g", RG, "--vnet-name", "vn1")
    assert sorted(x["name"] for x in subnets) == ["back", "front"]  # type: ignore[union-attr,index]
    assert "vn1" in server.cli("network", "vnet", "list", "-g", RG).stdout
    assert "deny-ssh" in server.cli("network", "nsg", "show", "-g", RG, "-n", "nsg1", "-o", "table").stdout
    bad = server.cli("network", "subnet", "create", "-g", RG, "--vnet-name", "vn1", "-n", "x",
                     "--address-prefixes", "10.99.0.0/24", check=False)
    assert bad.returncode != 0 and "InvalidAddressPrefix" in bad.stderr
    busy = server.cli("network", "nsg", "delete", "-g", RG, "-n", "nsg1", check=False)
    assert busy.returncode != 0 and "InUseNetworkSecurityGroupCannotBeDeleted" in busy.stderr
    server.cli("network", "nsg", "rule", "delete", "-g", RG, "--nsg-name", "nsg1", "-n", "deny-ssh")
    server.cli("network", "subnet", "delete", "-g", RG, "--vnet-name", "vn1", "-n", "back")
    server.cli("network", "nsg", "delete", "-g", RG, "-n", "nsg1")
    server.cli("network", "vnet", "delete", "-g", RG, "-n", "vn1")
    assert "vn1" not in server.cli("network", "vnet", "list", "-g", RG).stdout


def test_container_in_subnet_resolves_by_name(server: CorralServer) -> None:
    server.cli("network", "vnet", "create", "-g", RG, "-n", "vn2", "--address-prefixes", "10.60.0.0/16",
               "--subnet-name", "apps", "--subnet-prefixes", "10.60.0.0/24")
    client = server.client()
    try:
        server.cli("container", "create", "-g", RG, "-n", "svc1", "--image", "corral/busybox:latest",
                   "--cpu", "0.1", "--memory", "0.1", "--command-line", "sleep 3600", "--vnet", "vn2",
                   "--subnet", "apps")
        g = wait_for(client, RG, "svc1", lambda g: g["properties"]["instanceView"]["state"] == "Running")
        assert g["properties"]["subnetIds"][0]["id"].endswith("/virtualNetworks/vn2/subnets/apps")
        busy = server.cli("network", "subnet", "delete", "-g", RG, "--vnet-name", "vn2", "-n", "apps", check=False)
        assert busy.returncode != 0 and "InUseSubnetCannotBeDeleted" in busy.stderr
        reply = ask(server, f"svc1.{RG}.corral.local")
        assert reply.header.rcode == RCODE.NOERROR
        addr = [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]
        assert len(addr) == 1 and addr[0] != "127.0.0.1"
    finally:
        delete(client, RG, "svc1")
    assert ask(server, f"svc1.{RG}.corral.local").header.rcode == RCODE.NXDOMAIN
    server.cli("network", "vnet", "delete", "-g", RG, "-n", "vn2")


def test_dns_name_label_resolves_and_conflicts(server: CorralServer) -> None:
    client = server.client()
    port = free_port()
    ip = {"type": "Public", "ports": [{"port": 80, "protocol": "TCP"}], "dnsNameLabel": "labelled"}
    body = group(container("web", ["httpd", "-f", "-p", "80"], ports=[{"port": 80}]), ipAddress=ip)
    body["properties"]["ipAddress"]["ports"][0]["publicPort"] = port
    try:
        g = put(client, RG, "pub1", body)
        assert g["properties"]["ipAddress"]["fqdn"] == "labelled.local.corral.local"
        reply = ask(server, "labelled.local.corral.local")
        assert [str(rr.rdata) for rr in reply.rr] == [g["properties"]["ipAddress"]["ip"]]
        other = client.http.put(client.group_path(RG, "pub2"), params={"api-version": "2023-05-01"}, json=body)
        assert other.status_code == 409 and other.json()["error"]["code"] == "DnsNameLabelNotAvailable"
    finally:
        delete(client, RG, "pub1")
    assert ask(server, "labelled.local.corral.local").header.rcode == RCODE.NXDOMAIN
