"""Peering and route tables across two hosts made as network namespaces, driven by the real control plane.

Layout (``fabric_of`` from test_vnet_fabric, with this file's names): netns ``cvn-fabric`` holds the
fabric bridge (10.219.200.254/24); hosts ``cvn-h1`` and ``cvn-h2`` sit on it at .1 and .2. Each host
runs the node's own network layer (``NetworkSet``, the corral-vnet library in-process) on threads
inside its namespace, configured by ``NetworkControl.vnet_config_for`` over a real SQLite store. A
"group" is a network sandbox made by the host's NetworkSet; after each change a host refreshes its
networks, as the agent does when the link's ``wait`` reports a network key.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from test_vnet_fabric import Fabric, fabric_of, on, sh, tcp_ok

from corral.config import DEFAULT_SUBSCRIPTION
from corral.control import netkeys as K
from corral.control.netplane import NetworkControl
from corral.errors import Conflict
from corral.model.network import NetworkSecurityGroup, RouteTable, Subnet, VirtualNetwork, VirtualNetworkPeering
from corral.model.records import NODES, NodeInfo
from corral.model.sysctl import Sysctl
from corral.net.vnet import netops
from corral.node.network.networks import NetworkSet
from corral.node.network.records import PortMapping, Sandbox
from corral.node.network.sysctls import apply as apply_sysctls
from corral.store.sqlite import SqliteStore

pytestmark = pytest.mark.integration
SUB, RG = DEFAULT_SUBSCRIPTION, "cvn"
FAB_NET = "10.219.200"


@dataclass
class Host:
    name: str
    nets: NetworkSet

    def group(self, sid: str, subnet_id: str) -> Sandbox:
        return on(self.name, lambda: self.nets.create(sid, sid, subnet_id=subnet_id))

    def refresh(self) -> None:
        on(self.name, self.nets.refresh)

    def close(self) -> None:
        def work() -> None:
            for sb in self.nets.list():
                self.nets.delete(sb.id)
            self.nets.teardown()

        on(self.name, work)


@dataclass
class World:
    fab: Fabric
    net: NetworkControl
    hosts: list[Host]

    def sync(self) -> None:
        for h in self.hosts:
            h.refresh()

    def vnet(self, name: str, prefix: str | list[str], subnets: dict[str, str]) -> dict[str, str]:
        self.net.vnets.put(SUB, RG, name, VirtualNetwork.model_validate({"location": "local", "properties": {
            "addressSpace": {"addressPrefixes": [prefix] if isinstance(prefix, str) else prefix},
            "subnets": [{"name": s, "properties": {"addressPrefix": p}} for s, p in subnets.items()]}}))
        return {s: K.subnet_id(SUB, RG, name, s) for s in subnets}

    def subnet(self, vnet: str, name: str, prefix: str, **props: Any) -> None:
        self.net.vnets.put_subnet(SUB, RG, vnet, name, Subnet.model_validate(
            {"properties": {"addressPrefix": prefix, **props}}))

    def peer(self, a: str, b: str, **props: Any) -> None:
        self.net.peerings.put(SUB, RG, a, f"{a}-to-{b}", VirtualNetworkPeering.model_validate(
            {"properties": {"remoteVirtualNetwork": {"id": K.vnet_id(SUB, RG, b)}, **props}}))
        self.sync()

    def route_table(self, name: str, routes: dict[str, dict[str, str]]) -> str:
        self.net.route_tables.put(SUB, RG, name, RouteTable.model_validate({"location": "local", "properties": {
            "routes": [{"name": n, "properties": r} for n, r in routes.items()]}}))
        return K.route_table_id(SUB, RG, name)

    def unpeer(self, a: str, b: str) -> None:
        assert self.net.peerings.delete(SUB, RG, a, f"{a}-to-{b}")
        self.sync()

    def state(self, a: str, b: str) -> str:
        record, p, _ = self.net.peerings.get(SUB, RG, a, f"{a}-to-{b}")
        return self.net.peerings.state(record, p)


@contextmanager
def world_of(tmp: Path, prefix: str, fab_net: str, marks: tuple[str, ...], hosts: int) -> Iterator[World]:
    """A fabric (``fabric_of``) of ``hosts`` hosts, each running a NetworkSet configured by one control plane."""
    with fabric_of(tmp, prefix, fab_net, marks) as fab:
        store = SqliteStore(tmp / "store.db")
        net = NetworkControl(store)
        made: list[Host] = []
        try:
            for n in range(1, hosts + 1):
                name = fab.add_host(n)
                info = NodeInfo(name=name, address=fab.address(n), cpu=2, memoryGB=4, lastHeartbeat=datetime.now(UTC))
                store.put(NODES + name, info.model_dump(mode="json"))
                nets = NetworkSet(tmp / name, lambda sid, node=name: net.vnet_config_for(node, sid),
                                  netns_prefix=f"{name}-")
                made.append(Host(name, nets))
            yield World(fab, net, made)
        finally:
            for h in made:
                h.close()
            store.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    with world_of(tmp_path, "cvn", FAB_NET, ("10.216.", "10.217.", "10.218.", "10.219."), hosts=2) as w:
        yield w


def reach(src: Sandbox, dst: Sandbox, port: int = 8080, expect: bool = True) -> str:
    """Connect from one group to another; returns the source address the server saw."""
    ok, seen = tcp_ok(src.netns, dst.ip, port, dst.netns, timeout=3.0 if expect else 1.0)
    assert ok == expect, f"{src.id} -> {dst.id}:{port}: {'no connection' if expect else 'connected'}"
    return seen


class Echo:
    """A long-lived TCP connection between two groups (a server echoing what it receives)."""

    def __init__(self, client: Sandbox, server: Sandbox, port: int) -> None:
        self.received: list[bytes] = []
        ready = threading.Event()

        def listen() -> socket.socket:
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", port))
            s.listen(1)
            return s

        self._listener = netops.in_netns(server.netns_path, listen)

        self._conn: socket.socket | None = None

        def serve() -> None:
            ready.set()
            conn, _ = self._listener.accept()
            self._conn = conn
            conn.settimeout(10)
            with conn:
                try:
                    while data := conn.recv(64):
                        self.received.append(data)
                        conn.sendall(data)
                except OSError:
                    pass  # the client went quiet (its traffic is cut) or away

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(5)
        self.sock = netops.in_netns(client.netns_path, lambda: socket.create_connection((server.ip, port), timeout=3))

    def round_trip(self, data: bytes, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
            return self.sock.recv(64) == data
        except OSError:
            return False

    def close(self) -> None:
        self.sock.close()
        self._listener.close()
        if self._conn is not None:  # the client's goodbye may be cut off with its traffic: do not wait for it
            try:
                self._conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(12)


def test_peering_across_hosts(world: World) -> None:
    h1, h2 = world.hosts
    sa = world.vnet("cvn-a", "10.216.0.0/16", {"apps": "10.216.0.0/20"})["apps"]
    sb = world.vnet("cvn-b", "10.217.0.0/16", {"apps": "10.217.0.0/20"})["apps"]
    sc = world.vnet("cvn-c", "10.218.0.0/16", {"apps": "10.218.0.0/20"})["apps"]
    a1, b1 = h1.group("a1", sa), h1.group("b1", sb)
    a2, b2, c2 = h2.group("a2", sa), h2.group("b2", sb), h2.group("c2", sc)
    world.sync()  # each host learns the other's blocks
    assert reach(a1, a2) == a1.ip  # the same network reaches across hosts, as before

    reach(a1, b2, expect=False)  # two networks: no traffic before peering
    reach(b1, a1, expect=False)
    world.peer("cvn-a", "cvn-b")
    assert world.state("cvn-a", "cvn-b") == "Initiated"
    reach(a1, b2, expect=False)  # one way only: still none

    world.peer("cvn-b", "cvn-a")
    assert world.state("cvn-a", "cvn-b") == world.state("cvn-b", "cvn-a") == "Connected"
    # Both ways, across hosts and on one host, with the groups' own addresses (no NAT).
    assert reach(a1, b2) == a1.ip
    assert reach(b2, a1) == b2.ip
    assert reach(a2, b1) == a2.ip
    assert reach(b1, a1) == b1.ip
    routes = sh("ip", "netns", "exec", h1.name, "ip", "route", "show", "table", "all").stdout
    # b2's block, in the table cvn-a's peerings use on h1
    assert [r for r in routes.splitlines() if r.startswith("10.217.1.0/24 via 10.219.200.2") and " table " in r]

    # Not transitive: b peers with c too, a still cannot reach c.
    world.peer("cvn-b", "cvn-c")
    world.peer("cvn-c", "cvn-b")
    assert reach(b1, c2) == b1.ip
    reach(a1, c2, expect=False)

    # A security rule of one network still holds across the peering.
    nsg = world.net.nsgs.put(SUB, RG, "cvn-nsg", NetworkSecurityGroup.model_validate({
        "location": "local", "properties": {"securityRules": [{"name": "no-8081", "properties": {
            "priority": 100, "direction": "Inbound", "access": "Deny", "protocol": "Tcp",
            "sourceAddressPrefix": "10.216.0.0/16", "sourcePortRange": "*",
            "destinationAddressPrefix": "*", "destinationPortRange": "8081"}}]}}))[0]
    world.subnet("cvn-b", "apps", "10.217.0.0/20",
                 networkSecurityGroup={"id": K.nsg_id(SUB, RG, nsg.meta.name)})
    world.sync()
    reach(a1, b2, 8081, expect=False)
    reach(a1, b2, 8080)

    # Peering removed (one side): traffic stops at once, the open connection included.
    echo = Echo(a1, b2, 8090)
    try:
        assert echo.round_trip(b"before", 3)
        world.unpeer("cvn-b", "cvn-a")
        assert world.state("cvn-a", "cvn-b") == "Disconnected"
        assert not echo.round_trip(b"after", 1.5)
        assert echo.received == [b"before"]
    finally:
        echo.close()
    reach(a1, b2, expect=False)
    reach(b1, a1, expect=False)
    routes = sh("ip", "netns", "exec", h1.name, "ip", "route", "show", "table", "all").stdout
    assert not [r for r in routes.splitlines() if r.startswith("10.217.1.0/24") and " table " in r]


def make_router(sb: Sandbox) -> None:
    """What the node does for a group with ``sysctls: [{name: net.ipv4.ip_forward, value: "1"}]``."""
    apply_sysctls(sb.netns_path, [Sysctl(name="net.ipv4.ip_forward", value="1")])


def forwarded(router: Sandbox) -> int:
    """The router group's IP forwarding counter (ForwDatagrams of /proc/net/snmp, in its namespace)."""
    snmp = sh("ip", "netns", "exec", router.netns, "cat", "/proc/net/snmp").stdout
    lines = [line.split() for line in snmp.splitlines() if line.startswith("Ip:")]
    return int(lines[1][lines[0].index("ForwDatagrams")])


def sandbox_routes(sb: Sandbox) -> str:
    return sh("ip", "netns", "exec", sb.netns, "ip", "route").stdout


def test_route_table_through_a_router_and_to_none(world: World, tmp_path: Path) -> None:
    h1, h2 = world.hosts
    ids = world.vnet("cvn-r", "10.218.0.0/16", {"apps": "10.218.0.0/20", "dmz": "10.218.16.0/20",
                                                 "data": "10.218.32.0/20", "old": "10.218.48.0/20"})
    app = h1.group("app", ids["apps"])
    app2 = h2.group("app2", ids["apps"])  # beside the router
    target = h1.group("target", ids["data"])
    legacy = h2.group("legacy", ids["old"])
    router = h2.group("router", ids["dmz"])
    make_router(router)
    world.sync()
    before = forwarded(router)
    assert reach(app, target) == app.ip and reach(app, legacy) == app.ip
    assert forwarded(router) == before  # direct: on h1's bridges, and h1 -> h2

    table = K.route_table_id(SUB, RG, "cvn-rt")
    world.net.route_tables.put(SUB, RG, "cvn-rt", RouteTable.model_validate({"location": "local", "properties": {
        "routes": [
            {"name": "data-via-router", "properties": {"addressPrefix": "10.218.32.0/20",
                                                       "nextHopType": "VirtualAppliance",
                                                       "nextHopIpAddress": router.ip}},
            {"name": "old-dropped", "properties": {"addressPrefix": "10.218.48.0/20", "nextHopType": "None"}}]}}))
    world.subnet("cvn-r", "apps", "10.218.0.0/20", routeTable={"id": table})
    world.sync()  # live: the same sandboxes, nothing restarted

    # The router's path: h1 -> router on h2 -> back to h1; the target still sees the app's own address.
    before = forwarded(router)
    assert reach(app, target) == app.ip
    assert forwarded(router) > before
    before = forwarded(router)
    assert reach(app2, target) == app2.ip  # from the router's own node too
    assert forwarded(router) > before
    reach(app, legacy, expect=False)  # None: unreachable
    inside = sandbox_routes(app)
    assert "unreachable 10.218.48.0/20 proto 67" in inside
    assert "10.218.32.0/20 via 10.218.0.1 dev eth0 proto 67" in inside
    # The node enforces it even when a group deletes its own route (it might hold CAP_NET_ADMIN).
    sh("ip", "netns", "exec", app.netns, "ip", "route", "del", "10.218.48.0/20")
    reach(app, legacy, expect=False)

    # A runtime using the plugin executable directly (podman) gets the same routes from its config.
    conf = world.net.vnet_config_for(h1.name, ids["apps"]).model_dump(mode="json", by_alias=True)
    conf["dataDir"] = str(tmp_path / h1.name / conf["name"] / "plugin")
    other = world.fab.sandbox(h1.name, "podman")
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "cvn-podman", "CNI_NETNS": other, "CNI_IFNAME": "eth0",
           "CNI_PATH": "/usr/lib/cni", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    exe = str(Path(__import__("sys").executable).parent / "corral-vnet")
    res = subprocess.run(["ip", "netns", "exec", h1.name, exe], input=json.dumps(conf), capture_output=True,
                         text=True, env=env, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    podman_ip = json.loads(res.stdout)["ips"][0]["address"].split("/")[0]
    podman = Sandbox.model_construct(id="podman", netns=f"{h1.name}-podman", netns_path=other, ip=podman_ip)
    assert "unreachable 10.218.48.0/20 proto 67" in sandbox_routes(podman)
    before = forwarded(router)
    assert reach(podman, target) == podman_ip and forwarded(router) > before
    subprocess.run(["ip", "netns", "exec", h1.name, exe], input=json.dumps(conf), capture_output=True, text=True,
                   env={**env, "CNI_COMMAND": "DEL"}, check=True)

    # Dissociated: direct routing again, the router out of the path, the routes gone from the group.
    world.subnet("cvn-r", "apps", "10.218.0.0/20")
    world.sync()
    before = forwarded(router)
    assert reach(app, target) == app.ip and reach(app, legacy) == app.ip
    assert forwarded(router) == before
    assert "proto 67" not in sandbox_routes(app)
    assert world.net.route_tables.delete(SUB, RG, "cvn-rt")


def test_an_appliance_route_waits_for_the_appliance_bridge(world: World) -> None:
    """The appliance's subnet has a block on this node but its network is not set up yet (e.g. opened
    later after an agent restart): its traffic is dropped meanwhile, and routed once the bridge is up."""
    h1 = world.hosts[0]
    ids = world.vnet("cvn-w", "10.216.0.0/16", {"apps": "10.216.0.0/20", "dmz": "10.216.16.0/20"})
    appliance = str(ipaddress.ip_network(world.net.blocks.block_for(h1.name, ids["dmz"])).network_address + 10)
    world.net.route_tables.put(SUB, RG, "cvn-wrt", RouteTable.model_validate({"location": "local", "properties": {
        "routes": [{"name": "fw", "properties": {"addressPrefix": "10.216.32.0/20", "nextHopType": "VirtualAppliance",
                                                 "nextHopIpAddress": appliance}}]}}))
    world.subnet("cvn-w", "apps", "10.216.0.0/20", routeTable={"id": K.route_table_id(SUB, RG, "cvn-wrt")})

    def table_route() -> str:
        out = sh("ip", "netns", "exec", h1.name, "ip", "route", "show", "table", "all").stdout
        return next(line for line in out.splitlines() if line.startswith(("10.216.32.0/20", "blackhole 10.216.32")))

    h1.group("app", ids["apps"])
    assert table_route().startswith("blackhole")  # fail closed
    h1.group("router", ids["dmz"])  # its network comes up on h1
    assert table_route().startswith(f"10.216.32.0/20 via {appliance} dev ")


def test_forwarded_traffic_through_a_hub(world: World) -> None:
    """Two spokes peered with a hub, not with each other; the hub's appliance (on h2) routes between them
    (h1). What it forwards enters a spoke only when the spoke's own peering with the hub allows forwarded
    traffic, and the open connections go when it no longer does."""
    h1, h2 = world.hosts
    hub = world.vnet("cvn-hub", "10.218.0.0/16", {"dmz": "10.218.0.0/20"})["dmz"]
    nva = h2.group("nva", hub)
    make_router(nva)
    spokes = {"cvn-sa": ("10.216.0.0/16", "10.217.0.0/16"), "cvn-sb": ("10.217.0.0/16", "10.216.0.0/16")}
    for spoke, (own, other) in spokes.items():
        world.vnet(spoke, own, {"apps": own.replace("/16", "/20")})
        table = world.route_table(f"{spoke}-rt", {"other-spoke": {
            "addressPrefix": other, "nextHopType": "VirtualAppliance", "nextHopIpAddress": nva.ip}})
        world.subnet(spoke, "apps", own.replace("/16", "/20"), routeTable={"id": table})
    a1 = h1.group("a1", K.subnet_id(SUB, RG, "cvn-sa", "apps"))
    b1 = h1.group("b1", K.subnet_id(SUB, RG, "cvn-sb", "apps"))
    for spoke in spokes:
        world.peer("cvn-hub", spoke)
        world.peer(spoke, "cvn-hub")

    before = forwarded(nva)
    reach(a1, b1, expect=False)  # the appliance forwards it; b's side does not let it in
    assert forwarded(nva) > before
    world.peer("cvn-sa", "cvn-hub", allowForwardedTraffic=True)
    assert reach(b1, a1) == b1.ip  # into a, which allows it (the replies belong to b's own connection)
    reach(a1, b1, expect=False)  # into b: a's side allowing it changes nothing there
    world.peer("cvn-sb", "cvn-hub", allowForwardedTraffic=True)
    assert reach(a1, b1) == a1.ip

    echo = Echo(b1, a1, 8090)
    try:
        assert echo.round_trip(b"before", 3)
        world.peer("cvn-sa", "cvn-hub")  # allowForwardedTraffic: false again
        assert not echo.round_trip(b"after", 1.5)
        assert echo.received == [b"before"]
    finally:
        echo.close()
    reach(b1, a1, expect=False)


def test_subnets_of_a_network_with_two_address_prefixes(world: World) -> None:
    """One network with two address prefixes and three subnets on two hosts: its prefixes reach each other
    with their own addresses, and one subnet's network leaving a host keeps the routes the others share."""
    h1, h2 = world.hosts
    ids = world.vnet("cvn-m", ["10.216.0.0/16", "10.217.0.0/16"],
                     {"apps": "10.216.0.0/20", "web": "10.216.16.0/20", "data": "10.217.0.0/20"})
    apps1, web1 = h1.group("apps1", ids["apps"]), h1.group("web1", ids["web"])
    web2, data2 = h2.group("web2", ids["web"]), h2.group("data2", ids["data"])
    world.sync()
    assert reach(apps1, data2) == apps1.ip  # across prefixes and hosts, not masqueraded
    assert reach(data2, apps1) == data2.ip  # admitted as the network's own
    assert reach(web1, web2) == web1.ip

    # apps leaves h1 (its last group gone, the subnet deleted); web still needs the routes to h2's blocks.
    on(h1.name, lambda: h1.nets.delete("apps1"))
    world.net.vnets.delete_subnet(SUB, RG, "cvn-m", "apps")
    world.sync()
    assert not [n for n in h1.nets.gateways() if n.endswith(".apps")]
    assert reach(web1, web2) == web1.ip
    assert reach(web1, data2) == web1.ip


def test_a_sandbox_converges_to_the_host_ports_asked(world: World) -> None:
    """A sandbox built with host ports (a Private group's, published by an older agent) gives them up when the
    node asks for it again without them, so another group can take the port."""
    h1 = world.hosts[0]
    sid = world.vnet("cvn-p", "10.216.0.0/16", {"apps": "10.216.0.0/20"})["apps"]
    port = [PortMapping(host_port=7000, container_port=7000)]

    def hp_rules() -> list[str]:
        rules = sh("ip", "netns", "exec", h1.name, "iptables-save", "-t", "nat").stdout.splitlines()
        return [r for r in rules if "--dport 7000" in r and "DNAT" in r]

    on(h1.name, lambda: h1.nets.create("old", "old", port, subnet_id=sid))
    with pytest.raises(Conflict):
        on(h1.name, lambda: h1.nets.create("new", "new", port, subnet_id=sid))
    assert len(hp_rules()) == 1
    assert on(h1.name, lambda: h1.nets.create("old", "old", [], subnet_id=sid)).port_mappings == []
    assert hp_rules() == []
    new = on(h1.name, lambda: h1.nets.create("new", "new", port, subnet_id=sid))
    assert hp_rules() and new.ip in hp_rules()[0]
