"""The corral-vnet executable run exactly as a CNI runtime runs it: CNI_* env + JSON on stdin.

Every test runs twice: with the node's network service taking the calls (the fast
path) and with no service (the executable does the work itself); the answers must
be the same. All of it happens inside a throw-away "host" netns (cnt-h9), so the
real host's links and iptables are untouched.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.net.vnet import netops
from corral.net.vnet.install import install_executable
from corral.net.vnet.service import CniService
from corral.node.network import cni

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not Path("/usr/lib/cni/portmap").exists(), reason="needs root + CNI"),
]

HOST = "cnt-h9"
HOST_PATH = f"/var/run/netns/{HOST}"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


@pytest.fixture(params=["service", "alone"])
def env(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    made: list[str] = []
    service: CniService | None = None
    try:
        for ns in (HOST, f"{HOST}-s1", f"{HOST}-s2"):
            sh("ip", "netns", "add", ns)
            made.append(ns)
        sh("ip", "netns", "exec", HOST, "ip", "link", "set", "lo", "up")
        bindir = tmp_path / "cni-bin"
        bindir.mkdir()
        exe = bindir / "corral-vnet"
        install_executable(exe)  # what `corral up` installs for runtimes
        sock = str(tmp_path / "vnet.sock")
        if request.param == "service":  # started in the "host" netns, like an agent on that host
            service = CniService(sock)
            assert netops.in_netns(HOST_PATH, service.start)
        for p in ("portmap", "bandwidth", "loopback"):
            (bindir / p).symlink_to(f"/usr/lib/cni/{p}")
        conf = {
            "cniVersion": "1.0.0", "name": "cnt-test", "type": "corral-vnet", "bridge": "cnt9",
            "dataDir": str(tmp_path / "data"),
            "ipam": {"subnet": "10.199.96.0/20", "nodeBlock": "10.199.97.0/24",
                     "peers": [{"block": "10.199.98.0/24", "via": "10.199.97.254"}]},
        }
        if service is not None:
            conf["serviceSocket"] = sock  # how a conflist names the service (the env var also works)
        yield {"bindir": bindir, "exe": exe, "conf": conf, "service": service, "socket": sock}
        if service is not None:  # every call was the service's (none fell back)
            assert service.served > 0 and service.declined == 0
    finally:
        if service is not None:
            service.stop()
        for ns in reversed(made):
            sh("ip", "netns", "del", ns, check=False)


def run_cni(e: dict[str, Any], command: str, conf: dict[str, Any] | str, *, cid: str = "ctr1",
            netns: str | None = f"/var/run/netns/{HOST}-s1", ifname: str = "eth0",
            drop: tuple[str, ...] = ()) -> tuple[int, Any]:
    environ = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
               "CNI_IFNAME": ifname, "CNI_PATH": str(e["bindir"]), "CORRAL_VNET_SOCKET": e["socket"]}
    if netns:
        environ["CNI_NETNS"] = netns
    for k in drop:
        environ.pop(k, None)
    stdin = conf if isinstance(conf, str) else json.dumps(conf)
    t0 = time.perf_counter()
    proc = netops.in_netns(HOST_PATH, lambda: subprocess.run(  # a runtime on that host
        [str(e["exe"])], input=stdin, env=environ, capture_output=True, text=True, timeout=60))
    print(f"exec {command}: {(time.perf_counter() - t0) * 1000:.0f} ms")
    out = proc.stdout.strip()
    return proc.returncode, (json.loads(out) if out else None)


def test_version_add_check_del(env: dict[str, Any]) -> None:
    conf = env["conf"]
    rc, doc = run_cni(env, "VERSION", {"cniVersion": "1.0.0"})
    assert rc == 0 and "1.0.0" in doc["supportedVersions"] and doc["cniVersion"] == "1.0.0"

    rc, res = run_cni(env, "ADD", conf)
    assert rc == 0, res
    assert res["cniVersion"] == "1.0.0"
    ip = res["ips"][0]["address"]
    assert ip.startswith("10.199.97.") and ip.endswith("/24") and res["ips"][0]["gateway"] == "10.199.97.1"
    sbx = res["interfaces"][res["ips"][0]["interface"]]
    assert sbx["name"] == "eth0" and sbx["sandbox"] == f"/var/run/netns/{HOST}-s1"
    have = sh("ip", "netns", "exec", f"{HOST}-s1", "ip", "-o", "-4", "addr", "show", "eth0").stdout
    assert ip in have
    routes = sh("ip", "netns", "exec", HOST, "ip", "route").stdout
    assert "10.199.98.0/24 via 10.199.97.254" in routes

    rc, again = run_cni(env, "ADD", conf)  # idempotent
    assert rc == 0 and again["ips"] == res["ips"]

    rc, out = run_cni(env, "CHECK", {**conf, "prevResult": res})
    assert rc == 0 and out is None

    rc, out = run_cni(env, "STATUS", conf, netns=None)
    assert rc == 0

    rc, out = run_cni(env, "DEL", {**conf, "prevResult": res})
    assert rc == 0 and out is None
    assert sh("ip", "netns", "exec", f"{HOST}-s1", "ip", "link", "show", "eth0", check=False).returncode != 0
    rc, out = run_cni(env, "DEL", conf)  # DEL is idempotent
    assert rc == 0
    rc, err = run_cni(env, "CHECK", {**conf, "prevResult": res})
    assert rc == 1 and err["code"] == 3 and err["msg"]

    # The address is free again: a new container can get it.
    rc, res2 = run_cni(env, "ADD", conf, cid="ctr2")
    assert rc == 0
    rc, _ = run_cni(env, "DEL", conf, cid="ctr2")
    assert rc == 0


def test_errors_follow_the_spec(env: dict[str, Any]) -> None:
    conf = env["conf"]
    rc, err = run_cni(env, "ADD", {**conf, "cniVersion": "9.9.9"})
    assert rc == 1 and err["code"] == 1 and err["cniVersion"] == "9.9.9"
    rc, err = run_cni(env, "ADD", conf, drop=("CNI_NETNS",))
    assert rc == 1 and err["code"] == 4 and "CNI_NETNS" in err["msg"]
    rc, err = run_cni(env, "ADD", "{not json")
    assert rc == 1 and err["code"] == 6
    bad = {**conf, "ipam": {**conf["ipam"], "nodeBlock": "10.199.200.0/24"}}
    rc, err = run_cni(env, "ADD", bad)
    assert rc == 1 and err["code"] == 7 and "nodeBlock" in err.get("details", "")
    rc, err = run_cni(env, "ADD", conf, netns="/var/run/netns/cnt-does-not-exist")
    assert rc == 1 and err["code"] == 4


def test_gc_frees_stale_attachments(env: dict[str, Any]) -> None:
    conf = env["conf"]
    rc, r1 = run_cni(env, "ADD", conf, cid="keep", netns=f"/var/run/netns/{HOST}-s1")
    rc2, r2 = run_cni(env, "ADD", conf, cid="stale", netns=f"/var/run/netns/{HOST}-s2")
    assert rc == rc2 == 0
    gc_conf = {**conf, "cniVersion": "1.1.0",
               "cni.dev/valid-attachments": [{"containerID": "keep", "ifname": "eth0"}]}
    rc, out = run_cni(env, "GC", gc_conf, netns=None)
    assert rc == 0, out
    rc, err = run_cni(env, "CHECK", {**conf, "prevResult": r2}, cid="stale", netns=f"/var/run/netns/{HOST}-s2")
    assert rc == 1 and err["code"] == 3
    rc, _ = run_cni(env, "CHECK", {**conf, "prevResult": r1}, cid="keep")
    assert rc == 0
    rc, _ = run_cni(env, "DEL", conf, cid="keep")
    assert rc == 0


def test_chains_with_portmap_and_bandwidth(env: dict[str, Any]) -> None:
    """A standard conflist: corral-vnet, then portmap and bandwidth consuming its prevResult."""
    vnet = {k: v for k, v in env["conf"].items() if k not in ("cniVersion", "name")}
    conflist = {"cniVersion": "1.0.0", "name": "cnt-test", "plugins": [
        vnet,
        {"type": "portmap", "capabilities": {"portMappings": True}, "snat": True},
        {"type": "bandwidth", "capabilities": {"bandwidth": True}},
    ]}
    runtime = {"portMappings": [{"hostPort": 18010, "containerPort": 8080, "protocol": "tcp"}],
               "bandwidth": {"ingressRate": 100_000_000, "ingressBurst": 1_000_000,
                             "egressRate": 100_000_000, "egressBurst": 1_000_000}}
    netns = f"/var/run/netns/{HOST}-s1"

    def add() -> dict[str, Any]:
        return cni.add(env["bindir"], conflist, container_id="ctr-chain", netns=netns, ifname="eth0",
                       runtime=runtime)

    res = netops.in_netns(f"/var/run/netns/{HOST}", add)
    ip = res["ips"][0]["address"].split("/")[0]
    nat = sh("ip", "netns", "exec", HOST, "iptables-save", "-t", "nat").stdout
    assert f"--to-destination {ip}:8080" in nat
    qdisc = sh("ip", "netns", "exec", HOST, "tc", "qdisc", "show").stdout
    assert "tbf" in qdisc

    # The host port reaches a listener in the sandbox from the host's loopback.
    got: list[bytes] = []

    def serve() -> None:
        def work() -> None:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", 8080))
                s.listen(1)
                s.settimeout(5)
                conn, _ = s.accept()
                got.append(conn.recv(100))
                conn.close()

        netops.in_netns(netns, work)

    t = threading.Thread(target=serve)
    t.start()
    time.sleep(0.1)

    def client() -> None:
        with socket.create_connection(("127.0.0.1", 18010), timeout=5) as c:
            c.sendall(b"through portmap")

    netops.in_netns(f"/var/run/netns/{HOST}", client)
    t.join()
    assert got == [b"through portmap"]

    def delete() -> None:
        cni.delete(env["bindir"], conflist, container_id="ctr-chain", netns=netns, ifname="eth0",
                   prev=res, runtime=runtime)

    netops.in_netns(f"/var/run/netns/{HOST}", delete)
    nat = sh("ip", "netns", "exec", HOST, "iptables-save", "-t", "nat").stdout
    assert f"{ip}:8080" not in nat


@pytest.mark.parametrize("native", [True, False], ids=["native", "python-launcher"])
def test_service_elsewhere_declines(tmp_path: Path, native: bool) -> None:
    """A service in other namespaces than the caller's sends the call back: the executable does it
    (the native client through the Python launcher beside it, which does not ask again)."""
    sh("ip", "netns", "add", HOST)
    sh("ip", "netns", "add", f"{HOST}-s1")
    service = CniService(str(tmp_path / "vnet.sock"))
    assert service.start()  # in this process's (the real host's) namespaces
    try:
        exe = tmp_path / "corral-vnet"
        install_executable(exe, native=native)
        e = {"bindir": tmp_path, "exe": exe, "socket": service.path}
        conf = {"cniVersion": "1.0.0", "name": "cnt-test", "type": "corral-vnet", "bridge": "cnt9",
                "dataDir": str(tmp_path / "data"), "ipam": {"subnet": "10.199.96.0/20", "nodeBlock": "10.199.97.0/24"}}
        rc, res = run_cni(e, "ADD", conf)
        assert rc == 0 and res["ips"][0]["address"].startswith("10.199.97.")
        rc, _ = run_cni(e, "DEL", conf)
        assert rc == 0
        assert service.served == 0 and service.declined == 2
    finally:
        service.stop()
        sh("ip", "netns", "del", f"{HOST}-s1", check=False)
        sh("ip", "netns", "del", HOST, check=False)
    assert not Path(service.path).exists()


def test_python_launcher_through_the_service(env: dict[str, Any]) -> None:
    """Where no native client was built, the Python launcher is installed and takes the same route."""
    if env["service"] is None:
        pytest.skip("the service case only")
    install_executable(env["exe"], native=False)
    assert env["exe"].read_text().startswith("#!")
    before = env["service"].served
    rc, res = run_cni(env, "ADD", env["conf"], cid="py1")
    assert rc == 0 and res["ips"][0]["address"].startswith("10.199.97.")
    rc, _ = run_cni(env, "DEL", env["conf"], cid="py1")
    assert rc == 0 and env["service"].served == before + 2
