"""VnetNetworkManager: corral-vnet in-process with a standby pool, on a simulated host netns."""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.errors import Conflict, NetworkError
from corral.net.vnet import netops, plugin
from corral.net.vnet.config import VnetConf
from corral.node.network import PortMapping, nsfiles, vnet_backend
from corral.node.network.claims import HostPortClaims
from corral.node.network.vnet_backend import VnetNetworkConfig, VnetNetworkManager

pytestmark = [pytest.mark.integration, pytest.mark.skipif(os.geteuid() != 0, reason="needs root")]

HOST = "cnt-h5"
HOST_PATH = f"/var/run/netns/{HOST}"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def _cnt_netns() -> set[str]:
    return {n for n in sh("ip", "netns", "list").stdout.split() if n.startswith("cnt-")}


@pytest.fixture
def host(tmp_path: Path) -> Iterator[Path]:
    before = _cnt_netns()
    sh("ip", "netns", "add", HOST)
    sh("ip", "netns", "exec", HOST, "ip", "link", "set", "lo", "up")
    try:
        yield tmp_path
    finally:
        # Fallback cleanup (the tests tear down themselves): namespaces and mounts under tmp_path.
        for n in _cnt_netns() - before - {HOST}:
            nsfiles.remove_namespace_file(nsfiles.netns_path(n))
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mnt = line.split()[4]
            if mnt.startswith(str(tmp_path)):
                subprocess.run(["umount", "-l", mnt], check=False)
        sh("ip", "netns", "del", HOST, check=False)
        assert _cnt_netns() == before


def make(tmp: Path, pool: int, second: bool = False, ports: HostPortClaims | None = None,
         max_sandboxes: int = 250) -> VnetNetworkManager:
    """The test network, or (``second``) another one on the same host."""
    name, bridge, subnet, block = (("cnt-vq", "cnt6", "10.199.144.0/20", "10.199.145.0/24") if second else
                                   ("cnt-vp", "cnt5", "10.199.128.0/20", "10.199.129.0/24"))
    conf = VnetConf.model_validate({
        "name": name, "bridge": bridge, "dataDir": str(tmp / name / "data"), "maxSandboxes": max_sandboxes,
        "ipam": {"subnet": subnet, "nodeBlock": block},
    })
    return VnetNetworkManager(VnetNetworkConfig(vnet=conf, state_dir=tmp / name / "state", netns_prefix="cnt-",
                                                pool_size=pool, dns_servers=[block.replace(".0/24", ".1")],
                                                host_netns=HOST_PATH), ports)


def ms(t0: float) -> str:
    return f"{(time.perf_counter() - t0) * 1000:.1f} ms"


def connect(src_netns: str, ip: str, port: int, server_netns: str, server_port: int | None = None) -> bool:
    ready = threading.Event()
    got: list[bytes] = []

    def serve() -> None:
        def work() -> None:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", server_port or port))
                s.listen(1)
                s.settimeout(3)
                ready.set()
                try:
                    conn, _ = s.accept()
                    got.append(conn.recv(10))
                    conn.close()
                except OSError:
                    pass

        netops.in_netns(server_netns, work)

    t = threading.Thread(target=serve)
    t.start()
    ready.wait(5)

    def client() -> None:
        try:
            with socket.create_connection((ip, port), timeout=3) as c:
                c.sendall(b"hi")
        except OSError:
            pass

    netops.in_netns(src_netns, client)
    t.join()
    return got == [b"hi"]


def test_pool_create_delete_and_no_leak(host: Path) -> None:
    mgr = make(host, pool=2)
    assert mgr.wait_pool(30), mgr.pool_errors
    t0 = time.perf_counter()
    g1 = mgr.create("g1", "web-1")
    print(f"create from pool: {ms(t0)}")
    assert g1.ip.startswith("10.199.129.") and g1.netns.startswith("cnt-pool-")
    out = sh("nsenter", f"--uts={g1.uts_path}", "hostname").stdout.strip()
    assert out == "web-1"
    assert f"{g1.ip}\tweb-1" in g1.hosts.read_text()
    g2 = mgr.create("g2", "web-2")
    assert connect(g1.netns_path, g2.ip, 8080, g2.netns_path)
    assert mgr.wait_pool(30)  # refilled in the background
    assert mgr.create("g1", "web-1") == g1  # idempotent
    assert {s.id for s in mgr.list()} == {"g1", "g2"}

    # A restarted agent finds its sandboxes and the ready slots.
    mgr.stop_pool()
    again = make(host, pool=0)
    assert again.get("g1") == g1 and again.pool_count() == 2

    t0 = time.perf_counter()
    again.delete("g1")
    print(f"delete: {ms(t0)}")
    again.delete("g2")
    again.delete("g2")
    assert again.list() == []
    assert len(plugin.store(again.conf).allocations()) == 2  # only the two standby slots
    again.teardown()
    assert plugin.store(again.conf).allocations() == {}
    assert not any(n.startswith("cnt-pool-") for n in sh("ip", "netns", "list").stdout.split())
    links = sh("ip", "netns", "exec", HOST, "ip", "-o", "link").stdout
    assert "cnt5" not in links and " cv" not in links


def test_a_reserved_slot_becomes_the_sandbox_made_from_it_and_no_one_elses(host: Path) -> None:
    mgr = make(host, pool=2)
    assert mgr.wait_pool(30), mgr.pool_errors
    reserved = mgr.reserve()
    assert reserved is not None
    slot, pooled = reserved
    assert mgr.wait_pool(30)  # the pool makes another in its place
    other = mgr.create("g0", "other")  # a plain create never gets the reserved slot
    assert other.netns != pooled.netns
    mgr.recover()  # nor does recovery destroy it
    g1 = mgr.create("g1", "web-1", slot=slot)
    assert (g1.netns, g1.ip) == (pooled.netns, pooled.ip)
    assert sh("nsenter", f"--uts={g1.uts_path}", "hostname").stdout.strip() == "web-1"
    with pytest.raises(NetworkError):
        mgr.create("g2", "web-2", slot=slot)  # taken: no second sandbox from it
    again = mgr.reserve()
    assert again is not None
    mgr.release(again[0])
    mgr.release(again[0])
    assert not any(n == again[1].netns for n in sh("ip", "netns", "list").stdout.split())
    for sid in ("g0", "g1", "g2"):
        mgr.delete(sid)
    mgr.teardown()
    assert plugin.store(mgr.conf).allocations() == {}


def test_host_ports_in_process_and_conflict(host: Path) -> None:
    mgr = make(host, pool=0)
    t0 = time.perf_counter()
    sb = mgr.create("p1", "p1", [PortMapping(host_port=18020, container_port=8080)])
    print(f"create without pool, with a host port: {ms(t0)}")
    assert connect(HOST_PATH, "127.0.0.1", 18020, sb.netns_path, 8080)
    with pytest.raises(Conflict) as err:
        mgr.create("p2", "p2", [PortMapping(host_port=18020, container_port=80)])
    assert "18020" in err.value.message and mgr.get("p2") is None
    # Networks of one node share their claims: a host port is the node's.
    claims = HostPortClaims()
    a, b = make(host, pool=0, ports=claims), make(host, pool=0, second=True, ports=claims)
    with pytest.raises(Conflict):
        b.create("p4", "p4", [PortMapping(host_port=18020, container_port=80)])
    assert b.get("p4") is None and a.get("p1") is not None
    b.teardown()
    mgr.delete("p1")
    nat = sh("ip", "netns", "exec", HOST, "iptables-save", "-t", "nat").stdout
    assert "18020" not in nat
    t0 = time.perf_counter()
    plain = mgr.create("p3", "p3")
    print(f"create without pool: {ms(t0)}")
    assert mgr.create("p3", "p3") == plain
    mgr.delete("p3")
    mgr.teardown()
    assert "CVN-" not in sh("ip", "netns", "exec", HOST, "iptables-save").stdout
    assert "table bridge" not in sh("ip", "netns", "exec", HOST, "nft", "list", "tables").stdout  # the guard's


def test_crash_leftovers_are_recovered(host: Path) -> None:
    mgr = make(host, pool=0)
    sb = mgr.create("c1", "c1")
    nsfiles.remove_namespace_file(Path(sb.netns_path))  # the netns vanished under a crash
    assert mgr.recover() == ["c1"]
    assert plugin.store(mgr.conf).allocations() == {}
    sb = mgr.create("c1", "c1")  # and it can be built again
    assert nsfiles.is_pinned(Path(sb.netns_path))
    mgr.delete("c1")
    mgr.teardown()


def test_pool_crash_leftovers_never_leak(host: Path) -> None:
    mgr = make(host, pool=2)
    assert mgr.wait_pool(30), mgr.pool_errors
    mgr.stop_pool()
    # A refill that crashed after allocating: a slot dir with a "creating" record and a claimed address.
    dead = mgr.config.state_dir / "pool" / "pool-dead"
    dead.mkdir()
    (dead / "state.json").write_text(
        '{"id": "pool-dead", "status": "creating", "attachment": "pool-dead", "netns": "cnt-pool-dead"}')
    mgr.conf.net_dir.mkdir(parents=True, exist_ok=True)
    plugin.store(mgr.conf).allocate("pool-dead", "eth0")
    # A ready slot whose netns vanished: create must not hand it out.
    restarted = make(host, pool=0)
    assert restarted.pool_count() == 2
    broken = restarted._ready[0]
    nsfiles.remove_namespace_file(nsfiles.netns_path(f"cnt-{broken}"))
    sb = restarted.create("g1", "g1")
    assert nsfiles.is_pinned(Path(sb.netns_path)) and sb.netns != f"cnt-{broken}"
    assert restarted.recover() == []
    assert not dead.exists()
    owners = set(plugin.store(restarted.conf).allocations().values())
    assert owners == {f"{s}__eth0" for s in {r.name for r in (mgr.config.state_dir / "pool").iterdir()}} | {
        f"{sb.netns.removeprefix('cnt-')}__eth0"}
    # A take cut short by a crash: the slot renamed to a sandbox, not yet rewritten for it.
    filler = make(host, pool=1)
    assert filler.wait_pool(30), filler.pool_errors
    filler.stop_pool()
    cut = filler._ready[0]
    os.rename(mgr.config.state_dir / "pool" / cut, mgr.config.state_dir / "sandboxes" / "g2")
    after = make(host, pool=0)
    assert after.get("g2") is None and [s.id for s in after.list()] == ["g1"]
    assert after.recover() == ["g2"]
    assert f"{cut}__eth0" not in plugin.store(after.conf).allocations().values()
    assert not nsfiles.is_pinned(nsfiles.netns_path(f"cnt-{cut}"))
    g2 = after.create("g2", "g2")  # and the id can be used again
    assert nsfiles.is_pinned(Path(g2.netns_path)) and after.get("g2") == g2
    after.delete("g2")
    restarted.delete("g1")
    restarted.teardown()
    assert plugin.store(restarted.conf).allocations() == {}


def test_published_port_from_outside_and_isolation(host: Path) -> None:
    """A client outside the node reaches a published port, but not the sandbox address itself."""
    client = "cnt-h5c"
    sh("ip", "netns", "add", client)
    try:
        sh("ip", "link", "add", "cnt5x", "netns", HOST, "type", "veth", "peer", "name", "up0", "netns", client)
        sh("ip", "netns", "exec", HOST, "ip", "addr", "add", "10.199.201.1/30", "dev", "cnt5x")
        sh("ip", "netns", "exec", HOST, "ip", "link", "set", "cnt5x", "up")
        sh("ip", "netns", "exec", client, "ip", "addr", "add", "10.199.201.2/30", "dev", "up0")
        sh("ip", "netns", "exec", client, "ip", "link", "set", "up0", "up")
        sh("ip", "netns", "exec", client, "ip", "route", "add", "10.199.129.0/24", "via", "10.199.201.1")
        mgr = make(host, pool=0)
        sb = mgr.create("pub", "pub", [PortMapping(host_port=18021, container_port=8080)])
        client_path = f"/var/run/netns/{client}"
        assert connect(client_path, "10.199.201.1", 18021, sb.netns_path, 8080)
        assert not connect(client_path, sb.ip, 8080, sb.netns_path)  # not published: dropped
        mgr.delete("pub")
        mgr.teardown()
    finally:
        sh("ip", "netns", "del", client, check=False)


def test_concurrent_creates_with_pool(host: Path) -> None:
    mgr = make(host, pool=2)
    assert mgr.wait_pool(30)
    made: dict[str, str] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            made[f"c{i}"] = mgr.create(f"c{i}", f"c{i}").ip
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(made.values())) == 5
    for sid in made:
        mgr.delete(sid)
    mgr.teardown()
    assert plugin.store(mgr.conf).allocations() == {}


def test_a_full_node_gives_its_last_sandboxes_to_groups_not_to_the_pool(host: Path) -> None:
    """At the node's sandbox limit, addresses the refill holds for slots it is building go to the groups that
    come meanwhile: every create up to the limit succeeds, whenever it lands against the refill."""
    mgr = make(host, pool=2, max_sandboxes=4)
    errors: list[BaseException] = []
    try:
        for round_ in range(8):
            assert mgr.wait_pool(30)
            first = f"r{round_}a"
            mgr.create(first, first)  # a take: the refill starts building its replacement after REFILL_QUIET
            time.sleep(vnet_backend.REFILL_QUIET + 0.005 * round_)  # land on that build, earlier or later
            rest = [f"r{round_}{c}" for c in "bcd"]

            def one(sid: str) -> None:
                try:
                    mgr.create(sid, sid)
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=one, args=(sid,)) for sid in rest]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors, errors
            assert {sb.id for sb in mgr.list()} == {first, *rest}
            for sid in (first, *rest):
                mgr.delete(sid)
    finally:
        for sb in mgr.list():  # what a failed round left: teardown refuses while sandboxes exist
            mgr.delete(sb.id)
        mgr.teardown()
    assert plugin.store(mgr.conf).allocations() == {}
