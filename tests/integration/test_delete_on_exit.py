"""properties.deleteOnExit: a finished group removes itself (record and host state)."""

from __future__ import annotations

import glob
import subprocess
import time
from pathlib import Path

from corral_server import CorralServer
from groups import container, container_cgroup, delete, get, group, put

RG = "it-doe"


def _gone(client, name: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        resp = client.http.get(client.group_path(RG, name), params={"api-version": "2023-05-01"})
        if resp.status_code == 404:
            return
        assert time.monotonic() < deadline, resp.json()["properties"]["instanceView"]
        time.sleep(0.2)


def _host_clean(corral: CorralServer, uid: str) -> None:
    assert uid not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert [ln for ln in Path("/proc/mounts").read_text().splitlines() if uid in ln] == []
    assert glob.glob(f"/sys/fs/cgroup/*{corral.cgroup_parent}/{uid}") == []
    assert not (corral.data_dir / "node" / "groups" / uid).exists()
    assert not (corral.data_dir / "node" / "volumes" / uid).exists()


def test_succeeded_and_failed_groups_delete_themselves(corral: CorralServer) -> None:
    client = corral.client()
    mount = [{"name": "tmp", "mountPath": "/work"}]
    ok = group(container("doe-ok", ["sh", "-c", "sleep 2; echo done > /work/x"], volumeMounts=mount),
               restartPolicy="Never", deleteOnExit=True, volumes=[{"name": "tmp", "emptyDir": {}}])
    bad = group(container("doe-bad", ["sh", "-c", "sleep 2; exit 3"]), restartPolicy="Never", deleteOnExit=True)
    try:
        g = put(client, RG, "doe-ok", ok)
        assert g["properties"]["deleteOnExit"] is True
        put(client, RG, "doe-bad", bad)
        uid_ok = Path(container_cgroup("memory", corral.cgroup_parent, "doe-ok")).parent.name
        uid_bad = Path(container_cgroup("memory", corral.cgroup_parent, "doe-bad")).parent.name
        _gone(client, "doe-ok")
        _gone(client, "doe-bad")
        _host_clean(corral, uid_ok)
        _host_clean(corral, uid_bad)
    finally:
        for name in ("doe-ok", "doe-bad"):
            delete(client, RG, name)


def test_without_delete_on_exit_a_finished_group_stays(corral: CorralServer) -> None:
    client = corral.client()
    put(client, RG, "doe-keep", group(container("doe-keep", ["true"]), restartPolicy="Never", deleteOnExit=False))
    try:
        deadline = time.monotonic() + 30
        while get(client, RG, "doe-keep")["properties"]["instanceView"]["state"] != "Succeeded":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(1)
        assert get(client, RG, "doe-keep")["properties"]["instanceView"]["state"] == "Succeeded"
    finally:
        delete(client, RG, "doe-keep")
