"""corral-vnet across several "hosts" (network namespaces joined by a fabric bridge).

Layout: netns ``cnt-fabric`` holds bridge ``fab0`` (10.199.200.254/24); each host
``cnt-hN`` has a veth ``fab`` into it (10.199.200.N/24) and runs the plugin
in-process on a thread inside its namespace. Everything, including iptables
state, lives inside namespaces the fixture deletes, so the real host is untouched.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from corral.errors import NetworkCapacityExceeded
from corral.net.vnet import netops, plugin
from corral.net.vnet.config import VnetConf
from corral.net.vnet.nsg import SecurityRule
from corral.node.network import nsfiles

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

T = TypeVar("T")
FABRIC = "cnt-fabric"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


@dataclass
class Fabric:
    tmp: Path
    namespaces: list[str] = field(default_factory=list)
    prefix: str = "cnt"  # names of everything made on the host: <prefix>-fabric, <prefix>-hN, <prefix>f-hN
    net: str = "10.199.200"  # the fabric's /24; host N is .N, the fabric itself .254

    @property
    def name(self) -> str:
        return f"{self.prefix}-fabric"

    def netns(self, name: str) -> str:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up")
        return f"/var/run/netns/{name}"

    def start(self) -> None:
        self.netns(self.name)
        sh("ip", "netns", "exec", self.name, "ip", "link", "add", "fab0", "type", "bridge")
        sh("ip", "netns", "exec", self.name, "ip", "addr", "add", f"{self.net}.254/24", "dev", "fab0")
        sh("ip", "netns", "exec", self.name, "ip", "link", "set", "fab0", "up")

    def address(self, n: int) -> str:
        return f"{self.net}.{n}"

    def add_host(self, n: int) -> str:
        host, veth = f"{self.prefix}-h{n}", f"{self.prefix}f-h{n}"
        self.netns(host)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "fab", "netns", host)
        sh("ip", "link", "set", veth, "netns", self.name)
        sh("ip", "netns", "exec", self.name, "ip", "link", "set", veth, "master", "fab0", "up")
        sh("ip", "netns", "exec", host, "ip", "addr", "add", f"{self.address(n)}/24", "dev", "fab")
        sh("ip", "netns", "exec", host, "ip", "link", "set", "fab", "up")
        return host

    def sandbox(self, host: str, name: str) -> str:
        return self.netns(f"{host}-{name}")

    def cleanup(self) -> None:
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)


def on(host: str, fn: Callable[[], T]) -> T:
    """Run library code as the node agent of ``host`` would (inside its netns)."""
    return netops.in_netns(f"/var/run/netns/{host}", fn)


@contextmanager
def fabric_of(tmp: Path, prefix: str, net: str, marks: tuple[str, ...]) -> Iterator[Fabric]:
    """A fabric whose namespaces are all named ``<prefix>-...``; the real host is left as it was (no
    iptables rule naming one of ``marks``, the address ranges the test uses, appears on it)."""

    def host_rules() -> list[str]:
        # The real host's rules that could be ours (Corral servers of other tests keep their own meanwhile).
        return [line for line in sh("iptables-save").stdout.splitlines() if any(m in line for m in marks)]

    before = host_rules()
    fab = Fabric(tmp, prefix=prefix, net=net)
    try:
        fab.start()
        yield fab
    finally:
        fab.cleanup()
        assert host_rules() == before  # nothing leaked into the real host
        leftover = [ns for ns in sh("ip", "netns", "list").stdout.split() if ns.startswith(f"{prefix}-")]
        assert leftover == []


@pytest.fixture
def fabric(tmp_path: Path) -> Iterator[Fabric]:
    with fabric_of(tmp_path, "cnt", "10.199.200", ("10.199.",)) as fab:
        yield fab


def vnet(name: str, bridge: str, subnet: str, blocks: dict[str, str], host: str, tmp: Path,
         **extra: Any) -> VnetConf:
    """The plugin config of vnet ``name`` as ``host`` sees it: its block, routes to the others."""
    me = int(host.removeprefix("cnt-h"))
    peers = [{"block": b, "via": f"10.199.200.{int(h.removeprefix('cnt-h'))}"}
             for h, b in blocks.items() if h != host]
    return VnetConf.model_validate({
        "cniVersion": "1.0.0", "name": name, "type": "corral-vnet", "bridge": bridge,
        "dataDir": str(tmp / f"h{me}"),
        "ipam": {"subnet": subnet, "nodeBlock": blocks[host], "peers": peers}, **extra,
    })


def attach(fab: Fabric, host: str, conf: VnetConf, name: str) -> tuple[str, str]:
    """A sandbox netns on ``host`` attached to ``conf``; returns (netns name, ip)."""
    path = fab.sandbox(host, name)
    t0 = time.perf_counter()
    att = on(host, lambda: plugin.add(conf, f"{host}-{name}", path, "eth0"))
    print(f"in-process ADD {host}/{name}: {(time.perf_counter() - t0) * 1000:.1f} ms -> {att.ip}")
    return f"{host}-{name}", att.ip


def tcp_ok(src_netns: str, ip: str, port: int, server_netns: str, timeout: float = 3.0,
           source_port: int = 0) -> tuple[bool, str]:
    """Open a fresh TCP connection from ``src_netns`` (from ``source_port`` if given) to ip:port
    served in ``server_netns``.

    Returns (connected, the peer address the server saw).
    """
    seen: list[str] = []
    ready = threading.Event()

    def serve() -> None:
        def work() -> None:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", port))
                s.listen(1)
                s.settimeout(timeout)
                ready.set()
                try:
                    conn, peer = s.accept()
                    seen.append(peer[0])
                    conn.close()
                except OSError:
                    pass

        netops.in_netns(f"/var/run/netns/{server_netns}", work)

    t = threading.Thread(target=serve)
    t.start()
    ready.wait(5)

    def client() -> bool:
        try:
            with socket.create_connection((ip, port), timeout=timeout, source_address=("0.0.0.0", source_port)):
                return True
        except OSError:
            return False

    ok = netops.in_netns(f"/var/run/netns/{src_netns}", client)
    t.join()
    return ok, (seen[0] if seen else "")


def ping(src_netns: str, ip: str) -> bool:
    return sh("ip", "netns", "exec", src_netns, "busybox", "ping", "-c1", "-W1", ip, check=False).returncode == 0


BLOCKS_A = {"cnt-h1": "10.199.1.0/24", "cnt-h2": "10.199.2.0/24"}
BLOCKS_B = {"cnt-h1": "10.199.65.0/24", "cnt-h2": "10.199.66.0/24"}


def test_cross_host_reach_isolation_and_snat(fabric: Fabric) -> None:
    h1, h2 = fabric.add_host(1), fabric.add_host(2)
    a1 = vnet("cnt-va", "cnt1", "10.199.0.0/18", BLOCKS_A, h1, fabric.tmp)
    a2 = vnet("cnt-va", "cnt1", "10.199.0.0/18", BLOCKS_A, h2, fabric.tmp)
    b1 = vnet("cnt-vb", "cnt2", "10.199.64.0/18", BLOCKS_B, h1, fabric.tmp)
    b2 = vnet("cnt-vb", "cnt2", "10.199.64.0/18", BLOCKS_B, h2, fabric.tmp)
    sa1, ip_a1 = attach(fabric, h1, a1, "a")
    sa1b, ip_a1b = attach(fabric, h1, a1, "a2")
    sa2, ip_a2 = attach(fabric, h2, a2, "a")
    sb1, ip_b1 = attach(fabric, h1, b1, "b")
    sb2, ip_b2 = attach(fabric, h2, b2, "b")
    assert ip_a1.startswith("10.199.1.") and ip_a2.startswith("10.199.2.") and ip_b2.startswith("10.199.66.")

    # Same vnet, across hosts, no NAT inside the vnet: the server sees the real source.
    assert ping(sa1, ip_a2)
    ok, peer = tcp_ok(sa1, ip_a2, 8080, sa2)
    assert ok and peer == ip_a1
    ok, _ = tcp_ok(sa1, ip_a1b, 8080, sa1b)  # same host, same bridge
    assert ok
    assert tcp_ok(sb1, ip_b2, 8080, sb2)[0]

    # Different vnets stay apart, on one host and across hosts.
    assert not tcp_ok(sa1, ip_b1, 8080, sb1, timeout=1)[0]
    assert not tcp_ok(sa1, ip_b2, 8080, sb2, timeout=1)[0]
    assert not tcp_ok(sb2, ip_a2, 8080, sa2, timeout=1)[0]
    assert not ping(sb1, ip_a2)

    # Leaving the vnet: SNAT to the node's address.
    ok, peer = tcp_ok(sa1, "10.199.200.254", 9090, FABRIC)
    assert ok and peer == "10.199.200.1"

    # From outside the vnet nothing reaches a sandbox unless a rule allows it.
    sh("ip", "netns", "exec", FABRIC, "ip", "route", "add", "10.199.1.0/24", "via", "10.199.200.1")
    assert not tcp_ok(FABRIC, ip_a1, 8080, sa1, timeout=1)[0]
    allow = SecurityRule(name="fabric-in", priority=200, direction="Inbound", access="Allow", protocol="Tcp",
                         source_prefix="10.199.200.0/24", destination_port_range="8080")
    on(h1, lambda: plugin.set_security_rules(a1, [allow]))
    assert tcp_ok(FABRIC, ip_a1, 8080, sa1)[0]
    assert not tcp_ok(FABRIC, ip_a1, 8081, sa1, timeout=1)[0]  # only the allowed port

    for host, conf, name in ((h1, a1, "a"), (h1, a1, "a2"), (h2, a2, "a"), (h1, b1, "b"), (h2, b2, "b")):
        on(host, lambda c=conf, h=host, n=name: plugin.delete(c, f"{h}-{n}", f"/var/run/netns/{h}-{n}", "eth0"))
    for host, conf in ((h1, a1), (h2, a2), (h1, b1), (h2, b2)):
        on(host, lambda c=conf: plugin.teardown(c))
    left = sh("ip", "netns", "exec", h1, "iptables-save").stdout
    assert "CVN-" not in left and "CORRAL-VNET" not in left
    assert "10.199.2.0/24" not in sh("ip", "netns", "exec", h1, "ip", "route").stdout


def test_deny_rule_blocks_and_removal_restores(fabric: Fabric) -> None:
    h1, h2 = fabric.add_host(1), fabric.add_host(2)
    a1 = vnet("cnt-va", "cnt1", "10.199.0.0/18", BLOCKS_A, h1, fabric.tmp)
    a2 = vnet("cnt-va", "cnt1", "10.199.0.0/18", BLOCKS_A, h2, fabric.tmp)
    sa1, ip_a1 = attach(fabric, h1, a1, "a")
    sa2, ip_a2 = attach(fabric, h2, a2, "a")
    sa3, ip_a3 = attach(fabric, h2, a2, "c")
    assert tcp_ok(sa1, ip_a2, 8080, sa2)[0]

    deny = SecurityRule(name="no-8080", priority=100, direction="Inbound", access="Deny", protocol="Tcp",
                        destination_port_range="8080")
    t0 = time.perf_counter()
    on(h2, lambda: plugin.set_security_rules(a2, [deny]))
    print(f"live rule update: {(time.perf_counter() - t0) * 1000:.1f} ms")
    assert not tcp_ok(sa1, ip_a2, 8080, sa2, timeout=1)[0]
    assert not tcp_ok(sa3, ip_a2, 8080, sa2, timeout=1)[0]  # also on the same bridge
    assert tcp_ok(sa1, ip_a2, 8081, sa2)[0]  # other ports unaffected
    on(h2, lambda: plugin.set_security_rules(a2, []))
    assert tcp_ok(sa1, ip_a2, 8080, sa2)[0]

    # Source port ranges count too: only connections from 40000-40100 are refused.
    src_deny = SecurityRule(name="no-src", priority=100, direction="Inbound", access="Deny", protocol="Tcp",
                            source_port_range="40000-40100")
    on(h2, lambda: plugin.set_security_rules(a2, [src_deny]))
    assert not tcp_ok(sa1, ip_a2, 8080, sa2, timeout=1, source_port=40050)[0]
    assert tcp_ok(sa1, ip_a2, 8080, sa2, source_port=40150)[0]
    on(h2, lambda: plugin.set_security_rules(a2, []))

    # A sandbox-level outbound deny, then removed.
    out_deny = SecurityRule(name="no-out", priority=100, direction="Outbound", access="Deny",
                            destination_prefix=ip_a1 + "/32")
    on(h2, lambda: plugin.set_security_rules(a2, [out_deny], container_id=f"{h2}-c"))
    assert not tcp_ok(sa3, ip_a1, 8080, sa1, timeout=1)[0]
    assert tcp_ok(sa2, ip_a1, 8080, sa1)[0]
    on(h2, lambda: plugin.set_security_rules(a2, [], container_id=f"{h2}-c"))
    assert tcp_ok(sa3, ip_a1, 8080, sa1)[0]
    assert "CVS-" not in sh("ip", "netns", "exec", h2, "iptables-save").stdout


def test_allocate_all_250_delete_and_again(fabric: Fabric, tmp_path: Path) -> None:
    h1 = fabric.add_host(1)
    conf = vnet("cnt-vc", "cnt3", "10.199.16.0/20", {"cnt-h1": "10.199.17.0/24"}, h1, fabric.tmp)
    ns_dir = tmp_path / "ns"
    names = [f"cnt-h1-n{i}" for i in range(250)]

    def make_ns() -> None:
        for n in names:
            nsfiles.create_namespaces(nsfiles.netns_path(n), ns_dir / f"{n}.uts", ns_dir / f"{n}.ipc", n)

    def drop_ns() -> None:
        for n in names:
            for p in (nsfiles.netns_path(n), ns_dir / f"{n}.uts", ns_dir / f"{n}.ipc"):
                nsfiles.remove_namespace_file(p)

    make_ns()
    try:
        def fill() -> list[str]:
            return [plugin.add(conf, n, str(nsfiles.netns_path(n)), "eth0").ip for n in names]

        t0 = time.perf_counter()
        first = on(h1, fill)
        print(f"250 in-process ADDs: {(time.perf_counter() - t0):.2f} s")
        assert len(set(first)) == 250
        extra = fabric.sandbox(h1, "extra")
        with pytest.raises(NetworkCapacityExceeded):
            on(h1, lambda: plugin.add(conf, "extra", extra, "eth0"))
        with pytest.raises(plugin.CniFailure):
            on(h1, lambda: plugin.status(conf))

        def empty() -> None:
            for n in names:
                plugin.delete(conf, n, str(nsfiles.netns_path(n)), "eth0")

        on(h1, empty)
        assert plugin.store(conf).allocations() == {}
        assert "cv" not in " ".join(
            line.split()[1] for line in sh("ip", "netns", "exec", h1, "ip", "-o", "link").stdout.splitlines())
        second = on(h1, fill)
        assert len(set(second)) == 250  # round robin: not necessarily the same addresses
        on(h1, empty)
        on(h1, lambda: plugin.teardown(conf))
    finally:
        drop_ns()


def test_gc_reclaims_gone_containers(fabric: Fabric) -> None:
    h1 = fabric.add_host(1)
    conf = vnet("cnt-vd", "cnt4", "10.199.32.0/20", {"cnt-h1": "10.199.33.0/24"}, h1, fabric.tmp)
    s1, ip1 = attach(fabric, h1, conf, "keep")
    s2, ip2 = attach(fabric, h1, conf, "gone")
    # A crash between allocation and use: an address claimed, nothing built.
    on(h1, lambda: plugin.store(conf).allocate("crashed", "eth0"))
    assert len(plugin.store(conf).allocations()) == 3
    freed = on(h1, lambda: plugin.gc(conf, [(s1, "eth0")]))
    assert len(freed) == 2 and ip2 in freed and ip1 not in freed
    assert set(plugin.store(conf).allocations()) == {ip1}
    on(h1, lambda: plugin.check(conf, s1, f"/var/run/netns/{s1}", "eth0"))
    on(h1, lambda: plugin.delete(conf, s1, f"/var/run/netns/{s1}", "eth0"))
    on(h1, lambda: plugin.teardown(conf))


def test_gc_stale_without_a_runtime_list(fabric: Fabric) -> None:
    h1 = fabric.add_host(1)
    conf = vnet("cnt-ve", "cnt6", "10.199.48.0/20", {"cnt-h1": "10.199.49.0/24"}, h1, fabric.tmp)
    s1, ip1 = attach(fabric, h1, conf, "alive")
    s2, ip2 = attach(fabric, h1, conf, "dead")
    sh("ip", "netns", "del", s2)  # its netns is gone: the runtime forgot to DEL
    fabric.namespaces.remove(s2)
    on(h1, lambda: plugin.store(conf).allocate("in-flight", "eth0"))  # a young claim, no record yet
    freed = on(h1, lambda: plugin.gc_stale(conf, grace_s=60))
    assert freed == [ip2]
    assert set(plugin.store(conf).allocations().values()) == {f"{s1}__eth0", "in-flight__eth0"}
    freed = on(h1, lambda: plugin.gc_stale(conf, grace_s=0))  # past the grace period
    assert len(freed) == 1 and set(plugin.store(conf).allocations().values()) == {f"{s1}__eth0"}
    on(h1, lambda: plugin.delete(conf, s1, f"/var/run/netns/{s1}", "eth0"))
    on(h1, lambda: plugin.teardown(conf))
