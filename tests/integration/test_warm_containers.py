"""Warm containers through the API (`corral up --warm-containers 1`): a group of one plain container
starts in a container the node started ahead, and is in every way a group like any other.

Whether a start was warm shows only in the node's runtime directory (docs/performance.md): the
container's entry there is a link to the warm container it became.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from corral_server import CorralServer, running_corral
from groups import container, delete, exec_sync, get, group, put, state, view, wait_for

from corral.node.runtime import warm

pytestmark = [pytest.mark.integration, pytest.mark.skipif(
    os.geteuid() != 0 or warm.init_path() is None, reason="needs root and the warm init (make venv)")]

RG = "it-warm"
PARENT = "/corral-test-warm"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[CorralServer]:
    with running_corral(tmp_path, bridge="ctwarm0", subnet="10.86.0.0/16", cgroup_parent=PARENT,
                        extra=["--warm-containers", "1"]) as srv:
        yield srv
    # Closed: nothing of the pool is left on the host either.
    assert not Path(f"/sys/fs/cgroup/memory{PARENT}").exists()
    assert str(tmp_path) not in Path("/proc/mounts").read_text()


def _runtime_dir(server: CorralServer) -> Path:
    return server.data_dir / "node" / "runtime"


def _warm_ready(server: CorralServer, timeout: float = 30) -> set[str]:
    """The warm containers waiting on the node, once there is one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        taken = {os.readlink(p).rsplit("/", 1)[-1] for p in (_runtime_dir(server) / "containers").iterdir()
                 if p.is_symlink()}
        waiting = {p.name for p in (_runtime_dir(server) / "warm").iterdir()} - taken
        if waiting:
            return waiting
        time.sleep(0.05)
    raise AssertionError("no warm container was made")


def _started_warm(server: CorralServer, name: str) -> bool:
    links = [p for p in (_runtime_dir(server) / "containers").iterdir() if p.name.endswith(f"-c-{name}")]
    assert len(links) == 1, links
    return links[0].is_symlink()


def _logs(client, name: str, container_name: str) -> str:  # type: ignore[no-untyped-def]
    path = client.group_path(RG, name) + f"/containers/{container_name}/logs"
    return str(client.request("GET", path).json()["content"])


def _first_start(server: CorralServer) -> None:
    """A plain group of the image, so the node keeps it warm from now on."""
    client = server.client()
    put(client, RG, "first", group(container("first", ["sleep", "3600"])))
    delete(client, RG, "first")


def test_a_group_started_warm_is_a_group_like_any_other(server: CorralServer) -> None:
    client = server.client()
    _first_start(server)
    _warm_ready(server)
    body = group(container("web", ["sh", "-c", "echo run $GREETING in $(pwd) as $(hostname); "
                                   "while [ ! -e /tmp/go ]; do sleep 0.05; done; exit 3"],
                           memory=0.25, workingDir="/tmp",
                           environmentVariables=[{"name": "GREETING", "value": "hello"},
                                                 {"name": "SECRET", "secureValue": "s3cret"}]),
                 restartPolicy="OnFailure")
    put(client, RG, "web", body)
    assert _started_warm(server, "web")
    out = exec_sync(client, RG, "web", "web", "sh", "-c", "echo $GREETING $SECRET; cat /etc/hostname; "
                    "grep -c web /etc/hosts; ls /; touch /tmp/go")
    assert out["stdout"].startswith("hello s3cret\nweb\n1\n"), out
    assert "warm" not in out["stdout"]  # nothing of the warm init is in its file system
    # It exits 3; the restart policy starts it again (cold: a warm container is only ever a first start),
    # and its log goes on.
    g = wait_for(client, RG, "web", lambda g: view(g, "web")["restartCount"] >= 1 and state(g, "web") == "Running")
    assert view(g, "web")["previousState"]["exitCode"] == 3
    assert not _started_warm(server, "web")
    assert _logs(client, "web", "web") == "run hello in /tmp as web\n" * 2
    delete(client, RG, "web")


def test_a_warm_started_group_has_its_own_limits_address_and_name(server: CorralServer) -> None:
    client = server.client()
    _first_start(server)
    _warm_ready(server)
    put(client, RG, "lim", group(container("lim", ["sleep", "3600"], cpu=0.5, memory=0.25)))
    assert _started_warm(server, "lim")
    out = exec_sync(client, RG, "lim", "lim", "sh", "-c", "hostname; ip -4 -o addr show eth0")["stdout"]
    assert out.splitlines()[0] == "lim"
    assert " inet 10.86." in out  # an address of the node's virtual network
    cid = next(p for p in (_runtime_dir(server) / "containers").iterdir() if p.name.endswith("-c-lim"))
    cgroup = f"{PARENT}/warm/{os.readlink(cid).rsplit('/', 1)[-1]}"
    limit = Path(f"/sys/fs/cgroup/memory{cgroup}/memory.limit_in_bytes").read_text().strip()
    assert int(limit) == 1024**3 // 4
    assert Path(f"/sys/fs/cgroup/cpu{cgroup}/cpu.shares").read_text().strip() == "512"
    delete(client, RG, "lim")
    assert not Path(f"/sys/fs/cgroup/memory{cgroup}").exists()


def test_groups_a_warm_container_cannot_be_start_cold_and_leave_it_waiting(server: CorralServer) -> None:
    client = server.client()
    _first_start(server)
    waiting = _warm_ready(server)
    put(client, RG, "pair", group(container("a", ["sleep", "3600"]), container("b", ["sleep", "3600"])))
    put(client, RG, "secure", group(container("secure", ["sleep", "3600"],
                                              securityContext={"capabilities": {"drop": ["NET_RAW"]}})))
    put(client, RG, "vol", group(container("vol", ["sh", "-c", "echo kept > /data/f; sleep 3600"],
                                           volumeMounts=[{"name": "d", "mountPath": "/data"}]),
                                 volumes=[{"name": "d", "emptyDir": {}}]))
    for name, c in (("pair", "a"), ("pair", "b"), ("secure", "secure"), ("vol", "vol")):
        assert state(get(client, RG, name), c) == "Running"
        assert not _started_warm(server, c)
    assert exec_sync(client, RG, "vol", "vol", "cat", "/data/f")["stdout"] == "kept\n"
    assert waiting <= _warm_ready(server)
    for name in ("pair", "secure", "vol"):
        delete(client, RG, name)


def test_a_warm_start_whose_command_cannot_run_fails_like_any_start(server: CorralServer) -> None:
    client = server.client()
    _first_start(server)
    _warm_ready(server)
    put(client, RG, "broken", group(container("broken", ["/no/such/binary"]), restartPolicy="Never"), wait=False)
    g = wait_for(client, RG, "broken", lambda g: any(
        e["name"] == "Failed" for e in view(g, "broken").get("events") or []))
    failed = [e for e in view(g, "broken")["events"] if e["name"] == "Failed"]
    assert "/no/such/binary" in failed[0]["message"]
    delete(client, RG, "broken")


def test_a_killed_server_adopts_its_warm_started_groups(server: CorralServer) -> None:
    client = server.client()
    _first_start(server)
    _warm_ready(server)
    put(client, RG, "kept", group(container("kept", ["sh", "-c", "echo up; exec sleep 3600"])))
    assert _started_warm(server, "kept")
    pid = exec_sync(client, RG, "kept", "kept", "sh", "-c", "cat /proc/1/stat")["stdout"]
    server.kill()  # the agent dies: warm containers still waiting end with it, started ones do not
    server.start()
    client = server.client()
    g = wait_for(client, RG, "kept", lambda g: state(g, "kept") == "Running")
    assert view(g, "kept")["restartCount"] == 0
    assert exec_sync(client, RG, "kept", "kept", "sh", "-c", "cat /proc/1/stat")["stdout"] == pid
    assert _logs(client, "kept", "kept") == "up\n"
    delete(client, RG, "kept")
