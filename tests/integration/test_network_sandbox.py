"""NetworkManager with the real CNI bridge/host-local/portmap plugins, real netns and iptables."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.errors import Conflict
from corral.node.network import NetworkConfig, NetworkManager, PortMapping, Sandbox, nsfiles

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/lib/cni/bridge").exists(),
                       reason="needs root + CNI plugins"),
]

BRIDGE = "cnt0"
SUBNET = "10.199.0.0/24"


def _iptables_lines(needle: str) -> list[str]:
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if needle in line]


def _cnt_iptables() -> list[str]:
    # Everything our tests can create carries the sandbox ids, our subnet or the CNI-HOSTPORT chains.
    out = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "cnt-test" in line or "10.199.0." in line]


def _umount_under(root: Path) -> None:
    """Fallback cleanup: unmount whatever is still mounted under ``root`` (pinned uts/ipc files)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4]
        if mnt.startswith(str(root)):
            subprocess.run(["umount", "-l", mnt], check=False)


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def _teardown(mgr: NetworkManager, tmp_path: Path) -> None:
    """Remove the test network, and whatever mounts or bridge a failed test left."""
    try:
        mgr.teardown()
    finally:
        _umount_under(tmp_path)
        if _link_exists(BRIDGE):
            subprocess.run(["ip", "link", "del", BRIDGE], check=False)


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[NetworkManager]:
    before = _cnt_iptables()
    cfg = NetworkConfig(name="cnt-test", bridge=BRIDGE, subnet=SUBNET, state_dir=tmp_path / "net",
                        netns_prefix="cnt-", dns_servers=["10.199.0.1"])
    mgr = NetworkManager(cfg)
    try:
        yield mgr
    finally:
        created = [d.name for d in (tmp_path / "net" / "sandboxes").iterdir()]
        for sid in created:
            try:
                mgr.delete(sid)
            except Exception as exc:  # keep cleaning; report below
                print(f"cleanup delete {sid}: {exc}")
        for sid in created + ["a", "b", "c", "crash1", "crash2", "crash3"]:
            nsfiles.remove_namespace_file(nsfiles.netns_path(f"cnt-{sid}"))
        _teardown(mgr, tmp_path)
        assert _cnt_iptables() == before


def _listen(netns: str, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ip", "netns", "exec", netns, "busybox", "nc", "-l", "-p", str(port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _send_until_ok(argv: list[str], data: str, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while True:
        res = subprocess.run(argv, input=data, capture_output=True, text=True, timeout=deadline_s)
        if res.returncode == 0:
            return
        if time.monotonic() > end:
            raise AssertionError(f"{argv} kept failing: {res.stderr}")
        time.sleep(0.05)


def _served(server: subprocess.Popen[str]) -> str:
    try:
        out, _ = server.communicate(timeout=10)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return out


def _timed(label: str, fn, *args, **kw):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    res = fn(*args, **kw)
    print(f"{label}: {(time.perf_counter() - t0) * 1000:.1f} ms")
    return res


def _assert_gone(sb: Sandbox) -> None:
    assert not Path(sb.netns_path).exists()
    assert not Path(sb.uts_path).exists() and not Path(sb.ipc_path).exists()
    assert not Path(sb.resolv_conf).exists()
    assert _iptables_lines(f'id: \\"{sb.id}\\"') == []
    assert _iptables_lines(f"{sb.ip}/32") == []
    ports = subprocess.run(["ip", "-o", "link", "show", "master", BRIDGE], capture_output=True, text=True)
    assert ports.stdout.strip() == ""  # no veth left on the bridge


def test_two_sandboxes_reach_each_other(manager: NetworkManager) -> None:
    a = _timed("create a", manager.create, "a", "host-a")
    b = _timed("create b", manager.create, "b", "host-b")
    assert a.ip != b.ip and a.gateway == b.gateway == "10.199.0.1" and a.prefix_len == 24
    ping = subprocess.run(["ip", "netns", "exec", a.netns, "busybox", "ping", "-c1", "-W2", b.ip],
                          capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    server = _listen(b.netns, 8080)
    _send_until_ok(["ip", "netns", "exec", a.netns, "busybox", "nc", b.ip, "8080"], "hello from a\n")
    assert "hello from a" in _served(server)
    lo = subprocess.run(["ip", "netns", "exec", a.netns, "ip", "-o", "link", "show", "lo"],
                        capture_output=True, text=True)
    assert "UP" in lo.stdout


def test_hostname_and_etc_files(manager: NetworkManager) -> None:
    sb = manager.create("a", "web-1")
    out = subprocess.run(["nsenter", f"--uts={sb.uts_path}", "hostname"], capture_output=True, text=True)
    assert out.stdout.strip() == "web-1"
    assert socket.gethostname() != "web-1"
    assert "nameserver 10.199.0.1" in sb.resolv_conf.read_text()
    assert f"{sb.ip}\tweb-1" in sb.hosts.read_text()
    assert sb.hostname_file.read_text().strip() == "web-1"
    ipc = subprocess.run(["nsenter", f"--ipc={sb.ipc_path}", "true"])
    assert ipc.returncode == 0


def test_port_mapping_from_loopback(manager: NetworkManager) -> None:
    sb = _timed("create with portmap", manager.create, "a", "web",
                [PortMapping(host_port=18001, container_port=8080)])
    server = _listen(sb.netns, 8080)
    end = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", 18001), timeout=2) as s:
                s.sendall(b"via hostport\n")
            break
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)
    assert "via hostport" in _served(server)


def test_port_conflict(manager: NetworkManager) -> None:
    manager.create("a", "a", [PortMapping(host_port=18002, container_port=80)])
    with pytest.raises(Conflict) as err:
        manager.create("b", "b", [PortMapping(host_port=18002, container_port=81)])
    assert "18002" in err.value.message
    assert manager.get("b") is None
    assert not nsfiles.netns_path("cnt-b").exists()
    # Same port, other protocol is fine.
    manager.create("c", "c", [PortMapping(host_port=18002, container_port=80, protocol="udp")])


def test_delete_leaves_nothing(manager: NetworkManager) -> None:
    sb = manager.create("a", "a", [PortMapping(host_port=18003, container_port=80)])
    assert _iptables_lines(f'id: \\"{sb.id}\\"') != []
    _timed("delete with portmap", manager.delete, "a")
    _assert_gone(sb)
    assert manager.get("a") is None and manager.list() == []
    manager.delete("a")  # idempotent


def test_create_is_idempotent_and_survives_restart(manager: NetworkManager) -> None:
    first = manager.create("a", "a")
    again = _timed("create again", manager.create, "a", "a")
    assert again == first
    restarted = NetworkManager(manager.config)
    assert restarted.get("a") == first
    assert [s.id for s in restarted.list()] == ["a"]


def test_crash_netns_lost(manager: NetworkManager) -> None:
    old = manager.create("crash1", "x")
    nsfiles.remove_namespace_file(Path(old.netns_path))  # state present, netns gone
    new = manager.create("crash1", "x")
    assert Path(new.netns_path).exists()
    assert len(_iptables_lines('id: \\"crash1\\"')) == len(set(_iptables_lines('id: \\"crash1\\"')))
    if old.ip != new.ip:
        assert _iptables_lines(f"{old.ip}/32") == []


def test_crash_state_lost(manager: NetworkManager, tmp_path: Path) -> None:
    old = manager.create("crash2", "x")
    (tmp_path / "net" / "sandboxes" / "crash2" / "state.json").unlink()  # netns present, state gone
    assert manager.get("crash2") is None
    new = manager.create("crash2", "x")
    assert manager.get("crash2") == new
    if old.ip != new.ip:
        assert _iptables_lines(f"{old.ip}/32") == []
    # A bare netns with no state at all (crash right after the namespace was made).
    subprocess.run(["ip", "netns", "add", "cnt-crash3"], check=True)
    sb = manager.create("crash3", "y")
    assert nsfiles.is_pinned(Path(sb.netns_path))


def test_crash_half_built_is_recovered(manager: NetworkManager, tmp_path: Path) -> None:
    manager.create("a", "a")
    # Simulate a crash after the intent record: flip it back to "creating".
    state = tmp_path / "net" / "sandboxes" / "a" / "state.json"
    state.write_text(state.read_text().replace('"status":"ready"', '"status":"creating"'))
    assert manager.get("a") is None
    assert manager.recover() == ["a"]
    assert not nsfiles.netns_path("cnt-a").exists()
    assert not (tmp_path / "net" / "sandboxes" / "a").exists()


def test_concurrent_creates(manager: NetworkManager) -> None:
    results: dict[str, Sandbox] = {}
    errors: list[BaseException] = []

    def make(sid: str) -> None:
        try:
            results[sid] = manager.create(sid, sid)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=make, args=(f"c{i}",)) for i in range(4)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"4 concurrent creates: {(time.perf_counter() - t0) * 1000:.1f} ms")
    assert not errors
    assert len({s.ip for s in results.values()}) == 4
    for sid in list(results):
        manager.delete(sid)
    assert manager.list() == []


def test_teardown_refuses_with_sandboxes(manager: NetworkManager) -> None:
    manager.create("a", "a")
    with pytest.raises(Conflict):
        manager.teardown()
    manager.delete("a")
    manager.teardown()
    assert not _link_exists(BRIDGE)
    assert shutil.which("ip")


def test_failure_midway_rolls_back(tmp_path: Path) -> None:
    """portmap missing: bridge ADD succeeds, portmap fails; nothing may be left behind."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for p in ("bridge", "host-local"):
        (bindir / p).symlink_to(f"/usr/lib/cni/{p}")
    before = _cnt_iptables()
    cfg = NetworkConfig(name="cnt-test", bridge=BRIDGE, subnet=SUBNET, state_dir=tmp_path / "net",
                        netns_prefix="cnt-", cni_bin_dir=bindir, dns_servers=["10.199.0.1"])
    mgr = NetworkManager(cfg)
    try:
        from corral.errors import NetworkError

        with pytest.raises(NetworkError) as err:
            mgr.create("a", "a", [PortMapping(host_port=18004, container_port=80)])
        assert "portmap" in err.value.message
        assert not nsfiles.netns_path("cnt-a").exists()
        assert list((tmp_path / "net" / "sandboxes").iterdir()) == []
        assert _iptables_lines('id: \\"a\\"') == []
        ports = subprocess.run(["ip", "-o", "link", "show", "master", BRIDGE], capture_output=True, text=True)
        assert ports.stdout.strip() == ""
        ipam = tmp_path / "net" / "ipam" / "cnt-test"
        assert not any(f.name.startswith("10.") for f in ipam.iterdir()) if ipam.exists() else True
        sb = mgr.create("a", "a")  # works again without ports
        assert sb.ip.startswith("10.199.0.")
        mgr.delete("a")
    finally:
        try:
            mgr.delete("a")
        finally:
            nsfiles.remove_namespace_file(nsfiles.netns_path("cnt-a"))
        _teardown(mgr, tmp_path)
        assert _cnt_iptables() == before
