"""Across hosts joined by a fabric: groups reach each other by name, and a public port and a DNS
name work from the fabric.

Two hosts are network namespaces on a fabric bridge (the fabric fixture of test_vnet_fabric). The
control-plane side is real: a SQLite store, the group service, the agent link reporting status, and
Corral's DNS server listening on host 1's fabric address. Host 1 runs a group's sandbox through the
node's in-process network manager (with a published port); host 2 attaches one through the plugin.
"""

from __future__ import annotations

import socket
import threading
from datetime import UTC, datetime
from pathlib import Path

from dnslib import QTYPE, DNSRecord
from test_vnet_fabric import BLOCKS_A, FABRIC, Fabric, attach, fabric, on, tcp_ok, vnet  # noqa: F401

from corral.control.groups import GroupService
from corral.link.local import LocalLink
from corral.model.group import ContainerGroup
from corral.model.records import NodeInfo
from corral.model.status import GroupStatus
from corral.net.dns.server import DnsServer
from corral.net.vnet import netops, plugin
from corral.node.network.records import PortMapping
from corral.node.network.vnet_backend import VnetNetworkConfig, VnetNetworkManager
from corral.store.sqlite import SqliteStore

SUB, RG, ZONE = "00000000-0000-0000-0000-000000000000", "fab", "corral.local"
H1_ADDR = "10.199.200.1"


def resolve(netns: str, name: str) -> list[str]:
    """An A query from inside ``netns`` to the DNS server on host 1, as a group's resolver would send it."""
    def ask() -> bytes:
        return DNSRecord.question(name).send(H1_ADDR, 53, timeout=3)

    reply = DNSRecord.parse(netops.in_netns(f"/var/run/netns/{netns}", ask))
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]


def serve_once(netns_path: str, port: int, reply: bytes) -> threading.Thread:
    ready = threading.Event()

    def work() -> None:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port))
            s.listen(1)
            s.settimeout(5)
            ready.set()
            try:
                conn, _ = s.accept()
                conn.sendall(reply)
                conn.close()
            except OSError:
                pass

    t = threading.Thread(target=lambda: netops.in_netns(netns_path, work))
    t.start()
    ready.wait(5)
    return t


def fetch(netns: str, host: str, port: int) -> bytes:
    def work() -> bytes:
        with socket.create_connection((host, port), timeout=3) as c:
            return c.recv(64)

    return netops.in_netns(f"/var/run/netns/{netns}", work)


def test_names_and_public_port_across_hosts(fabric: Fabric, tmp_path: Path) -> None:  # noqa: F811
    h1, h2 = fabric.add_host(1), fabric.add_host(2)
    a1 = vnet("cnt-va", "cnt1", "10.199.0.0/18", BLOCKS_A, h1, fabric.tmp)
    a2 = vnet("cnt-va", "cnt1", "10.199.0.0/18", BLOCKS_A, h2, fabric.tmp)

    # Host 1: a group's sandbox from the node's network manager, port 18080 published on the host.
    mgr = VnetNetworkManager(VnetNetworkConfig(vnet=a1, state_dir=tmp_path / "h1", netns_prefix="cnt-",
                                               dns_servers=[H1_ADDR], host_netns=f"/var/run/netns/{h1}"))
    web = mgr.create("web", "web", [PortMapping(host_port=18080, container_port=80)])
    # Host 2: another group's sandbox, attached through the plugin.
    sa2, ip2 = attach(fabric, h2, a2, "api")

    store = SqliteStore(tmp_path / "store.db")
    dns = DnsServer(LocalLink(store), ZONE, f"{H1_ADDR}:53")
    try:
        link, groups = LocalLink(store), GroupService(store)
        now = datetime.now(UTC)
        for node, addr in ((h1, H1_ADDR), (h2, "10.199.200.2")):
            link.register(NodeInfo(name=node, address=addr, cpu=2, memoryGB=4, lastHeartbeat=now))
        for name, node, ip, public in (("web", h1, web.ip, True), ("api", h2, ip2, False)):
            ipaddr = {"type": "Public", "ports": [{"port": 80}], "dnsNameLabel": "fabweb"} if public else None
            body = ContainerGroup.model_validate({"location": "local", "properties": {
                "containers": [{"name": name, "properties": {"image": "corral/busybox", "ports": [{"port": 80}]}}],
                **({"ipAddress": ipaddr} if ipaddr else {})}})
            view, _, _ = groups.create_or_update(SUB, RG, name, body)
            link.report(view.key, GroupStatus(uid=view.record.meta.uid, node=node, state="Running", privateIp=ip,
                                    ip=H1_ADDR if public else ip))
        on(h1, dns.start)

        # By name, across hosts: host 2's group finds host 1's, and connects to what the name says.
        assert resolve(sa2, f"web.{RG}.{ZONE}") == [web.ip]
        ok, peer = tcp_ok(sa2, resolve(sa2, f"web.{RG}.{ZONE}")[0], 8080, web.netns)
        assert ok and peer == ip2
        assert resolve(web.netns, f"api.{RG}.{ZONE}") == [ip2]

        # From the fabric: the DNS name gives host 1's address, whose public port reaches the group.
        assert resolve(FABRIC, f"fabweb.local.{ZONE}") == [H1_ADDR]
        server = serve_once(web.netns_path, 80, b"hello from web")
        assert fetch(FABRIC, resolve(FABRIC, f"fabweb.local.{ZONE}")[0], 18080) == b"hello from web"
        server.join()
    finally:
        dns.stop()
        store.close()
        mgr.delete("web")
        mgr.teardown()
        on(h2, lambda: plugin.delete(a2, f"{h2}-api", f"/var/run/netns/{h2}-api", "eth0"))
        on(h2, lambda: plugin.teardown(a2))
