"""Anti-spoofing: a group sends only as itself, a router group forwards, on a host made as a network namespace.

The host (``cvn-s-h1``, on a fabric of ``fabric_of``) runs the node's network layer (``NetworkSet``) configured
by the real control plane over a SQLite store, as in test_vnet_peering_fabric. Forged frames are written from
inside a group's network namespace on a packet socket, as any process of the group holding CAP_NET_RAW (a
default capability) can; each forged frame has a genuine twin that is delivered, so a frame that is not
delivered was dropped by the node, and the node's counters say so.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_vnet_fabric import on, sh
from test_vnet_peering_fabric import World, forwarded, make_router, world_of

from corral.net.vnet import guard, netops, plugin
from corral.net.vnet.ipam import attachment_key
from corral.node.network.records import Sandbox

pytestmark = pytest.mark.integration
FAKE_MAC = "02:00:00:c0:ff:ee"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with world_of(tmp_path, "cvn-s", "10.219.201", ("10.216.", "10.217.", "10.219."), hosts=1) as w:
        yield w


def mac_of(netns: str) -> str:
    return sh("ip", "netns", "exec", netns, "cat", "/sys/class/net/eth0/address").stdout.strip()


def _csum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_frame(src_mac: str, dst_mac: str, src: str, dst: str, port: int, payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, socket.IPPROTO_UDP, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return _eth(dst_mac, src_mac, 0x0800) + ip + udp


def arp_request(frame_mac: str, sender_mac: str, sender_ip: str, target_ip: str) -> bytes:
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, bytes.fromhex(sender_mac.replace(":", "")),
                      socket.inet_aton(sender_ip), b"\0" * 6, socket.inet_aton(target_ip))
    return _eth("ff:ff:ff:ff:ff:ff", frame_mac, 0x0806) + arp


def _eth(dst: str, src: str, kind: int) -> bytes:
    return bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", "")) + struct.pack("!H", kind)


def send_frames(sb: Sandbox, frames: list[bytes]) -> None:
    """Write raw frames onto the group's eth0, from inside its network namespace."""

    def work() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind(("eth0", 0))
            for f in frames:
                s.send(f)

    netops.in_netns(sb.netns_path, work)


def udp_listener(sb: Sandbox, port: int) -> socket.socket:
    def work() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", port))
        return s

    return netops.in_netns(sb.netns_path, work)


def received_until(s: socket.socket, last: bytes, timeout: float = 3.0) -> list[bytes]:
    """Datagrams read until ``last`` arrives (frames on one path keep their order)."""
    s.settimeout(timeout)
    got: list[bytes] = []
    while not got or got[-1] != last:
        got.append(s.recv(256))
    s.settimeout(0.3)  # and nothing after it
    try:
        got.append(s.recv(256))
    except TimeoutError:
        pass
    return got


def neighbours(sb: Sandbox, until: str) -> str:
    """The group's neighbour table, once it holds ``until`` (or after 2 s)."""
    end = time.monotonic() + 2
    while True:
        out = sh("ip", "netns", "exec", sb.netns, "ip", "neigh", "show", "dev", "eth0").stdout
        if until in out or time.monotonic() > end:
            return out
        time.sleep(0.02)


def port_drops(world: World, subnet_id: str, sb: Sandbox) -> int:
    h = world.hosts[0]
    conf = h.nets.manager(subnet_id).conf
    return on(h.name, lambda: guard.drops(conf)).by_port.get(plugin.host_veth_name(attachment_key(sb.id, "eth0")), 0)


def test_a_group_sends_only_from_its_own_address_and_mac(world: World) -> None:
    h = world.hosts[0]
    apps = world.vnet("cvn-s", "10.216.0.0/16", {"apps": "10.216.0.0/20"})["apps"]
    other = world.vnet("cvn-so", "10.217.0.0/16", {"apps": "10.217.0.0/20"})["apps"]
    a, b, c, o = h.group("a", apps), h.group("b", apps), h.group("c", apps), h.group("o", other)
    mac_a, mac_b = mac_of(a.netns), mac_of(b.netns)
    inbox = udp_listener(b, 9000)
    try:
        forged = [udp_frame(mac_a, mac_b, src, b.ip, 9000, f"from {src}".encode())
                  for src in (c.ip, o.ip, a.gateway)]  # another group, another network's, the node's
        forged.append(udp_frame(FAKE_MAC, mac_b, a.ip, b.ip, 9000, b"from another mac"))
        genuine = udp_frame(mac_a, mac_b, a.ip, b.ip, 9000, b"genuine")
        send_frames(a, [*forged, genuine])
        assert received_until(inbox, b"genuine") == [b"genuine"]
    finally:
        inbox.close()

    # ARP: a claims c's address, or its own from another MAC; its genuine request is answered as usual.
    send_frames(a, [arp_request(mac_a, mac_a, c.ip, b.ip), arp_request(mac_a, FAKE_MAC, a.ip, b.ip),
                    arp_request(mac_a, mac_a, a.ip, b.ip)])
    seen = neighbours(b, until=f"{a.ip} lladdr {mac_a}")
    assert f"{a.ip} lladdr {mac_a}" in seen
    assert c.ip not in seen and FAKE_MAC not in seen
    assert port_drops(world, apps, a) == 6  # every forged frame, counted on a's port
    assert port_drops(world, apps, b) == 0

    # What a group normally does still works: the node, and the groups beside it.
    assert sh("ip", "netns", "exec", a.netns, "ping", "-c1", "-W2", a.gateway, check=False).returncode == 0
    assert sh("ip", "netns", "exec", a.netns, "ping", "-c1", "-W2", c.ip, check=False).returncode == 0


def test_only_a_route_tables_next_hop_forwards(world: World) -> None:
    """A group with ip_forward on forwards others' traffic only when a route table in force names it as the
    VirtualAppliance next hop; another one's forwarded packets are dropped as spoofed."""
    h = world.hosts[0]
    ids = world.vnet("cvn-sr", "10.216.0.0/16", {"apps": "10.216.0.0/20", "dmz": "10.216.16.0/20",
                                                  "data": "10.216.32.0/20"})
    app, rogue = h.group("app", ids["apps"]), h.group("rogue", ids["apps"])
    router, target = h.group("router", ids["dmz"]), h.group("target", ids["data"])
    make_router(router)
    make_router(rogue)
    table = world.route_table("cvn-srt", {"data-via-router": {
        "addressPrefix": "10.216.32.0/20", "nextHopType": "VirtualAppliance", "nextHopIpAddress": router.ip}})
    world.subnet("cvn-sr", "apps", "10.216.0.0/20", routeTable={"id": table})
    world.sync()

    def send(payload: bytes) -> None:
        def work() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(payload, (target.ip, 9001))

        netops.in_netns(app.netns_path, work)

    inbox = udp_listener(target, 9001)
    try:
        before = forwarded(router)
        send(b"through the router")
        assert received_until(inbox, b"through the router") == [b"through the router"]
        assert forwarded(router) > before and port_drops(world, ids["dmz"], router) == 0

        # The app (it may hold CAP_NET_ADMIN) sends the target's traffic to the rogue group instead.
        sh("ip", "netns", "exec", app.netns, "ip", "route", "replace", f"{target.ip}/32", "via", rogue.ip)
        before = forwarded(rogue)
        send(b"through the rogue")
        sh("ip", "netns", "exec", app.netns, "ip", "route", "del", f"{target.ip}/32")
        send(b"through the router again")
        assert received_until(inbox, b"through the router again") == [b"through the router again"]
        assert forwarded(rogue) > before  # the rogue forwarded it, and the node dropped what it forwarded
        assert port_drops(world, ids["apps"], rogue) >= 1
    finally:
        inbox.close()
