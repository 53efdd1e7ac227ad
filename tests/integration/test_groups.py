"""Container groups on a real node: limits, restart policies, init containers, networking, teardown."""

from __future__ import annotations

import glob
import subprocess
import time
from pathlib import Path

import httpx
from corral_server import CorralServer, free_port
from groups import container, container_cgroup, delete, exec_sync, get, group, put, state, view, wait_for

RG = "it-groups"


def test_cpu_and_memory_limits_are_applied_in_the_cgroup(corral: CorralServer) -> None:
    client = corral.client()
    body = group(container("limits", ["sleep", "3600"], cpu=0.5, memory=0.25,
                           resources={"limits": {"cpu": 0.5, "memoryInGB": 0.25}}))
    put(client, RG, "limits", body)
    try:
        cpu = Path(container_cgroup("cpu", corral.cgroup_parent, "limits"))
        mem = Path(container_cgroup("memory", corral.cgroup_parent, "limits"))
        assert int((cpu / "cpu.cfs_period_us").read_text()) == 100000
        assert int((cpu / "cpu.cfs_quota_us").read_text()) == 50000  # half a core
        assert int((cpu / "cpu.shares").read_text()) == 512
        assert int((mem / "memory.limit_in_bytes").read_text()) == int(0.25 * 1024**3)
    finally:
        delete(client, RG, "limits")


def test_non_zero_exit_restarts_under_on_failure_not_under_never(corral: CorralServer) -> None:
    client = corral.client()
    crash = ["sh", "-c", "echo crashing; exit 3"]
    put(client, RG, "onfailure", group(container("crash-of", crash), restartPolicy="OnFailure"))
    put(client, RG, "never", group(container("crash-nv", crash), restartPolicy="Never"))
    try:
        g = wait_for(client, RG, "onfailure", lambda g: view(g, "crash-of")["restartCount"] >= 2)
        prev = view(g, "crash-of")["previousState"]
        assert prev["state"] == "Terminated" and prev["exitCode"] == 3 and prev["detailStatus"] == "Error"

        g = wait_for(client, RG, "never", lambda g: g["properties"]["instanceView"]["state"] == "Failed")
        iv = view(g, "crash-nv")
        assert iv["currentState"]["state"] == "Terminated" and iv["currentState"]["exitCode"] == 3
        time.sleep(2.5)  # longer than the first back-off: it must still not have restarted
        assert view(get(client, RG, "never"), "crash-nv")["restartCount"] == 0
        logs = client.request("GET", client.group_path(RG, "never") + "/containers/crash-nv/logs").json()
        assert logs["content"] == "crashing\n"
    finally:
        delete(client, RG, "onfailure")
        delete(client, RG, "never")


def test_successful_exit_under_on_failure_ends_succeeded(corral: CorralServer) -> None:
    client = corral.client()
    put(client, RG, "job", group(container("job", ["sh", "-c", "echo done"]), restartPolicy="OnFailure"))
    try:
        g = wait_for(client, RG, "job", lambda g: g["properties"]["instanceView"]["state"] == "Succeeded")
        assert view(g, "job")["currentState"]["exitCode"] == 0
        assert view(g, "job")["restartCount"] == 0
    finally:
        delete(client, RG, "job")


def test_init_containers_run_in_order_before_the_containers(corral: CorralServer) -> None:
    client = corral.client()
    body = group(
        container("main", ["sh", "-c", "cat /tmp/order 2>/dev/null; echo main >> /tmp/order; sleep 3600"]),
        initContainers=[
            {"name": "first", "properties": {"image": "corral/busybox:latest",
                                             "command": ["sh", "-c", "sleep 0.3; echo first"]}},
            {"name": "second", "properties": {"image": "corral/busybox:latest",
                                              "command": ["sh", "-c", "echo second"]}},
        ],
    )
    put(client, RG, "inits", body)
    try:
        g = wait_for(client, RG, "inits", lambda g: state(g, "main") == "Running")
        first, second = view(g, "first")["currentState"], view(g, "second")["currentState"]
        main = view(g, "main")["currentState"]
        assert first["state"] == second["state"] == "Terminated"
        assert first["exitCode"] == second["exitCode"] == 0
        assert first["finishTime"] <= second["startTime"] <= second["finishTime"] <= main["startTime"]
        logs = client.request("GET", client.group_path(RG, "inits") + "/containers/first/logs").json()
        assert logs["content"] == "first\n"
    finally:
        delete(client, RG, "inits")


def test_containers_of_a_group_talk_over_localhost(corral: CorralServer) -> None:
    client = corral.client()
    body = group(
        container("server", ["sh", "-c", "while true; do echo pong | nc -l -p 7000; done"]),
        container("client", ["sleep", "3600"]),
    )
    put(client, RG, "pair", body)
    try:
        deadline = time.monotonic() + 10
        while True:
            res = exec_sync(client, RG, "pair", "client", "sh", "-c", "echo ping | nc 127.0.0.1 7000")
            if res["stdout"].strip() == "pong":
                break
            assert time.monotonic() < deadline, res
            time.sleep(0.2)
        # They share the UTS namespace too: one hostname, the group's name.
        assert exec_sync(client, RG, "pair", "server", "hostname")["stdout"].strip() == "pair"
        assert exec_sync(client, RG, "pair", "client", "hostname")["stdout"].strip() == "pair"
    finally:
        delete(client, RG, "pair")


def test_public_port_reaches_the_group_and_ip_is_reported(corral: CorralServer) -> None:
    client = corral.client()
    port = free_port()
    body = group(
        container("web", ["httpd", "-f", "-p", "80", "-h", "/var/www"], ports=[{"port": 80}]),
        ipAddress={"type": "Public", "ports": [{"port": 80, "publicPort": port}]},
    )
    g = put(client, RG, "web", body)
    try:
        ip = g["properties"]["ipAddress"]["ip"]
        assert ip == "127.0.0.1"
        deadline = time.monotonic() + 10
        while True:
            try:
                page = httpx.get(f"http://{ip}:{port}/", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert page.status_code == 200 and "Hello from Corral" in page.text
    finally:
        delete(client, RG, "web")


def _netns_of(pid: int) -> str:
    return subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True).stdout.strip()


def _host_peer_ifindex(netns: str) -> int:
    out = subprocess.run(["ip", "-n", netns, "-o", "link", "show", "eth0"], capture_output=True, text=True).stdout
    return int(out.split("@if", 1)[1].split(":", 1)[0])


def test_delete_leaves_nothing_behind(corral: CorralServer) -> None:
    client = corral.client()
    port = free_port()
    body = group(
        container("gone-a", ["httpd", "-f", "-p", "80"], ports=[{"port": 80}]),
        container("gone-b", ["sleep", "3600"]),
        ipAddress={"type": "Public", "ports": [{"port": 80, "publicPort": port}]},
    )
    put(client, RG, "gone", body)
    cgroup = Path(container_cgroup("memory", corral.cgroup_parent, "gone-a"))
    uid = cgroup.parent.name
    netns = _netns_of(int((cgroup / "cgroup.procs").read_text().split()[0]))
    assert netns
    veth = _host_peer_ifindex(netns)
    addr = exec_sync(client, RG, "gone", "gone-b", "sh", "-c", "ip -4 -o addr show eth0")["stdout"].split()[3]
    ip = addr.split("/")[0]
    # A group started later must not pin the first group's namespaces after it is deleted.
    put(client, RG, "bystander", group(container("bystander", ["sleep", "3600"])))
    delete(client, RG, "gone")

    assert netns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not (Path("/var/run/netns") / netns).exists()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not any(ln.startswith(f"{veth}:") for ln in links.splitlines())  # its veth is gone
    assert [ln for ln in Path("/proc/mounts").read_text().splitlines() if uid in ln] == []
    assert glob.glob(f"/sys/fs/cgroup/*{corral.cgroup_parent}/{uid}") == []
    assert subprocess.run(["pgrep", "-f", uid], capture_output=True).stdout == b""
    rules = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    assert uid not in rules and f"{ip}:" not in rules and f"{ip}/32" not in rules and f"dport {port} " not in rules
    assert not (corral.data_dir / "node" / "groups" / uid).exists()
    delete(client, RG, "bystander")


def test_windows_group_stays_pending_with_the_reason_and_never_runs(corral: CorralServer) -> None:
    client = corral.client()
    body = group(container("win", ["cmd.exe"]), osType="Windows")
    resp = client.request("PUT", client.group_path(RG, "win"), json=body)
    try:
        result = client.wait_operation(resp, timeout=30)
        assert result["status"] == "Failed" and "osType Windows" in result["error"]["message"]
        g = get(client, RG, "win")
        assert g["properties"]["instanceView"]["state"] == "Pending"
        events = g["properties"]["instanceView"]["events"]
        assert any(e["name"] == "FailedScheduling" and "osType Windows not supported" in e["message"]
                   for e in events)
        assert glob.glob(f"/sys/fs/cgroup/memory{corral.cgroup_parent}/*/*-c-win") == []
    finally:
        delete(client, RG, "win")
