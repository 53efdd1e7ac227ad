"""azureFile shares on GlusterFS: a storage server started by `corral storage`, a replicated volume, and two
nodes mounting it through FUSE, each seeing the other's writes, so a group that moves finds its files."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from corral_server import CorralServer
from groups import container, delete, exec_sync, group, put

from corral.node.volumes.backends import share_backend, shares_root, unmount_shares
from corral.node.volumes.gluster import GlusterShares
from corral.node.volumes.manager import VolumeManager
from corral.storage.glusterd import GlusterServer

CORRAL = str(Path(sys.executable).parent / "corral")
SLOT = int(os.environ.get("CORRAL_TEST_SLOT", "0"))
VOLUME_SPEC = {"name": "data", "azureFile": {"shareName": "data", "storageAccountName": "acct1",
                                             "storageAccountKey": "k"}}


def corral(*args: object) -> str:
    r = subprocess.run([CORRAL, *map(str, args)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"corral {' '.join(map(str, args))}: {r.stdout}{r.stderr}"
    return r.stdout


@pytest.fixture(scope="module")
def volume(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A started replica-2 volume on a storage server of the test's own; yields its gluster:// source."""
    root = tmp_path_factory.mktemp("cetgluster")
    address = f"127.{90 + SLOT}.{random.randint(1, 250)}.{random.randint(2, 250)}"
    name = f"cet{uuid.uuid4().hex[:8]}"
    state = root / "storage"
    server = GlusterServer(state, address)
    try:
        corral("storage", "start", "--state-dir", state, "--address", address,
               "--brick-ports", f"{49300 + SLOT * 50}-{49349 + SLOT * 50}")
        corral("storage", "create-volume", name, f"{address}:{root}/bricks/b1", f"{address}:{root}/bricks/b2",
               "--replica", "2", "--state-dir", state)
        assert [(v.name, v.status, v.type) for v in server.volumes()] == [(name, "Started", "Replicate")]
        yield f"gluster://{address}/{name}"
        server.delete_volume(name)  # what `corral storage delete-volume` does
        assert server.volumes() == []
    finally:
        if server.pid():  # a failed test: leave no volume behind
            server.delete_volume(name)
        server.stop()  # `corral storage stop`
        assert server.pid() is None


def volume_manager(data_dir: Path, source: str | None = None) -> VolumeManager:
    """What build_host gives a node agent whose NodeSettings.shares is ``source``."""
    return VolumeManager(data_dir / "node" / "volumes", shares_root(data_dir), shares=share_backend(data_dir, source))


def test_a_share_follows_its_group_to_another_node(volume: str, tmp_path: Path) -> None:
    node_a, node_b = tmp_path / "node-a", tmp_path / "node-b"
    try:
        corral("storage", "mount", volume, "--data-dir", node_a)  # node A: by hand
        vm_b = volume_manager(node_b, volume)  # node B: as its agent is told (mounted on first use)
        corral("share", "create", "acct1/data", "--quota", "1", "--data-dir", node_a)
        listed = json.loads(corral("share", "list", "-o", "json", "--data-dir", node_b))
        assert [s["name"] for s in listed] == ["acct1/data"]  # one cluster, one set of shares

        vm_a = volume_manager(node_a)
        on_a = vm_a.prepare("g1", [VOLUME_SPEC])["data"]
        (on_a / "state.txt").write_text("written on A")
        vm_a.release("g1")  # the group leaves node A...
        on_b = vm_b.prepare("g1", [VOLUME_SPEC])["data"]  # ...and starts on node B
        assert (on_b / "state.txt").read_text() == "written on A"
        (on_b / "more.txt").write_text("written on B")
        assert (on_a / "more.txt").read_text() == "written on B"  # both ways, while both mount it

        # Node B's FUSE client dies: the next group start there mounts the volume again.
        shares_b = vm_b.shares
        assert isinstance(shares_b, GlusterShares)
        pid = shares_b.mount.client_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        vm_b.release("g1")
        assert (vm_b.prepare("g2", [VOLUME_SPEC])["data"] / "more.txt").read_text() == "written on B"
        assert shares_b.mount.client_pid() not in (None, pid)
    finally:
        for node in (node_a, node_b):
            unmount_shares(node)
    for node in (node_a, node_b):
        assert not os.path.ismount(shares_root(node))


def test_containers_read_and_write_a_share_through_gluster(volume: str, corral: CorralServer, tmp_path: Path) -> None:
    """A real group on the session's node, its share on the volume, another node reading what it wrote."""
    other = tmp_path / "other-node"
    corral.cli("storage", "mount", volume, "--data-dir", str(corral.data_dir))
    client = corral.client()
    try:
        corral.cli("share", "create", "acct2/web", "--data-dir", str(corral.data_dir))
        afile = {"name": "web", "azureFile": {"shareName": "web", "storageAccountName": "acct2",
                                              "storageAccountKey": "k"}}
        put(client, "it-gluster", "gl-writer", group(
            container("w", ["sh", "-c", "echo from-the-container > /web/index.html; sleep 3600"],
                      volumeMounts=[{"name": "web", "mountPath": "/web"}]), volumes=[afile]))
        try:
            vm = volume_manager(other, volume)
            path = vm.prepare("elsewhere", [afile])["web"]
            deadline = time.monotonic() + 30
            while not (path / "index.html").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            assert (path / "index.html").read_text() == "from-the-container\n"
            (path / "reply").write_text("from the other node")
            out = exec_sync(client, "it-gluster", "gl-writer", "w", "cat", "/web/reply")
            assert out["stdout"] == "from the other node"
        finally:
            delete(client, "it-gluster", "gl-writer")
            corral.cli("share", "delete", "acct2/web", "--data-dir", str(corral.data_dir))
    finally:
        corral.cli("storage", "unmount", "--data-dir", str(corral.data_dir))
        unmount_shares(other)
    assert not os.path.ismount(corral.data_dir / "shares")
