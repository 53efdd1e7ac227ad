"""Volumes wired into container groups, through the API with real containers."""

from __future__ import annotations

import base64
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from corral_server import CorralServer, running_corral
from groups import container, container_cgroup, delete, exec_sync, get, group, put, state, view, wait_for

from corral.cli.client import ApiError

RG = "it-volumes"


@pytest.fixture(scope="module")
def corral(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorralServer]:
    """This module's own Corral: its node-reset test stops and restarts the server."""
    with running_corral(tmp_path_factory.mktemp("corral-nf"), bridge="ctnf0", subnet="10.68.0.0/16",
                        cgroup_parent="/corral-test-nf") as server:
        yield server


def _uid(corral: CorralServer, name: str) -> str:
    return Path(container_cgroup("memory", corral.cgroup_parent, name)).parent.name


def _mounts_with(text: str) -> list[str]:
    return [ln for ln in Path("/proc/mounts").read_text().splitlines() if text in ln]


def test_empty_dir_is_shared_by_the_containers_of_a_group_and_removed_with_it(corral: CorralServer) -> None:
    client = corral.client()
    mount = [{"name": "scratch", "mountPath": "/shared"}]
    body = group(
        container("ed-writer", ["sh", "-c", "echo from-writer > /shared/note; sleep 3600"], volumeMounts=mount),
        container("ed-reader", ["sleep", "3600"], volumeMounts=mount),
        volumes=[{"name": "scratch", "emptyDir": {}}],
    )
    put(client, RG, "emptydir", body)
    try:
        uid = _uid(corral, "ed-writer")
        vol = corral.data_dir / "node" / "volumes" / uid
        assert vol.is_dir()
        out = ""
        for _ in range(50):
            out = exec_sync(client, RG, "emptydir", "ed-reader", "cat", "/shared/note")["stdout"]
            if out:
                break
        assert out == "from-writer\n"
        assert exec_sync(client, RG, "emptydir", "ed-reader", "sh", "-c", "echo back > /shared/reply")["exitCode"] == 0
        assert exec_sync(client, RG, "emptydir", "ed-writer", "cat", "/shared/reply")["stdout"] == "back\n"
    finally:
        delete(client, RG, "emptydir")
    assert not vol.exists()


def test_secret_volume_is_0400_on_tmpfs_and_never_returned(corral: CorralServer) -> None:
    client = corral.client()
    secret = {"password": base64.b64encode(b"hunter2").decode()}
    body = group(
        container("sec-app", ["sleep", "3600"], volumeMounts=[{"name": "creds", "mountPath": "/etc/creds"}]),
        volumes=[{"name": "creds", "secret": secret}],
    )
    g = put(client, RG, "secret", body)
    try:
        assert g["properties"]["volumes"][0]["secret"] == {"password": None}
        listed = client.request("GET", client.group_path(RG)).text
        assert "hunter2" not in listed and secret["password"] not in listed
        assert secret["password"] not in client.request("GET", client.group_path(RG, "secret")).text
        res = exec_sync(client, RG, "secret", "sec-app", "sh", "-c",
                        "cat /etc/creds/password; stat -c ' %a' /etc/creds/password; grep ' /etc/creds ' /proc/mounts")
        assert res["stdout"].startswith("hunter2 400\n"), res
        assert " ro," in res["stdout"]  # a secret volume is always read-only in the container
        uid = _uid(corral, "sec-app")
        host = [ln for ln in _mounts_with(uid) if "/secrets " in ln]
        assert len(host) == 1 and host[0].split()[2] == "tmpfs", host
        assert exec_sync(client, RG, "secret", "sec-app", "sh", "-c", "echo x > /etc/creds/new")["exitCode"] != 0
    finally:
        delete(client, RG, "secret")
    assert _mounts_with(uid) == []


@pytest.fixture
def bare_repo(tmp_path: Path) -> Path:
    work, bare = tmp_path / "work", tmp_path / "repo.git"
    env = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / "README").write_text("first\n")
    subprocess.run(["git", *env, "-C", str(work), "add", "README"], check=True)
    subprocess.run(["git", *env, "-C", str(work), "commit", "-q", "-m", "one"], check=True)
    subprocess.run(["git", *env, "-C", str(work), "tag", "v1"], check=True)
    (work / "README").write_text("second\n")
    subprocess.run(["git", *env, "-C", str(work), "commit", "-q", "-am", "two"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return bare


def test_git_repo_is_cloned_at_its_revision_before_the_containers_start(
    corral: CorralServer, bare_repo: Path
) -> None:
    client = corral.client()
    body = group(
        container("git-app", ["sh", "-c", "cat /src/app/README; sleep 3600"],
                  volumeMounts=[{"name": "code", "mountPath": "/src"}]),
        volumes=[{"name": "code", "gitRepo": {"repository": str(bare_repo), "directory": "app", "revision": "v1"}}],
    )
    put(client, RG, "gitrepo", body)
    try:
        assert exec_sync(client, RG, "gitrepo", "git-app", "cat", "/src/app/README")["stdout"] == "first\n"
        logs = client.request("GET", client.group_path(RG, "gitrepo") + "/containers/git-app/logs").json()
        assert logs["content"].startswith("first\n")
    finally:
        delete(client, RG, "gitrepo")


@pytest.fixture
def share(corral: CorralServer) -> Iterator[str]:
    name = "itacct/itshare"
    corral.cli("share", "create", name, "--quota", "1", "--data-dir", str(corral.data_dir))
    try:
        yield name
    finally:
        corral.cli("share", "delete", name, "--data-dir", str(corral.data_dir))


def _afile(read_only: bool = False) -> dict[str, object]:
    return {"name": "data", "azureFile": {"shareName": "itshare", "storageAccountName": "itacct",
                                          "storageAccountKey": "c2VjcmV0", "readOnly": read_only}}


def test_two_groups_share_an_azure_file_share_and_a_read_only_mount_refuses_writes(
    corral: CorralServer, share: str
) -> None:
    client = corral.client()
    listed = corral.cli("share", "list", "-o", "json", "--data-dir", str(corral.data_dir)).stdout
    assert '"name": "itacct/itshare"' in listed and '"quotaGB": 1' in listed
    mount = [{"name": "data", "mountPath": "/mnt/data"}]
    put(client, RG, "share-a", group(container("sh-a", ["sleep", "3600"], volumeMounts=mount), volumes=[_afile()]))
    put(client, RG, "share-b", group(container("sh-b", ["sleep", "3600"], volumeMounts=mount), volumes=[_afile()]))
    ro_mount = [{"name": "data", "mountPath": "/mnt/data", "readOnly": True}]
    put(client, RG, "share-ro", group(container("sh-ro", ["sleep", "3600"], volumeMounts=ro_mount),
                                      volumes=[_afile()]))
    put(client, RG, "share-rov", group(container("sh-rov", ["sleep", "3600"], volumeMounts=mount),
                                       volumes=[_afile(read_only=True)]))
    try:
        g = get(client, RG, "share-a")
        assert "storageAccountKey" not in g["properties"]["volumes"][0]["azureFile"]
        assert exec_sync(client, RG, "share-a", "sh-a", "sh", "-c", "echo hello-from-a > /mnt/data/a")["exitCode"] == 0
        assert exec_sync(client, RG, "share-b", "sh-b", "cat", "/mnt/data/a")["stdout"] == "hello-from-a\n"
        assert exec_sync(client, RG, "share-b", "sh-b", "sh", "-c", "echo hello-from-b > /mnt/data/b")["exitCode"] == 0
        assert exec_sync(client, RG, "share-a", "sh-a", "cat", "/mnt/data/b")["stdout"] == "hello-from-b\n"
        for name, ctr in (("share-ro", "sh-ro"), ("share-rov", "sh-rov")):
            assert exec_sync(client, RG, name, ctr, "cat", "/mnt/data/a")["stdout"] == "hello-from-a\n"
            res = exec_sync(client, RG, name, ctr, "sh", "-c", "echo no > /mnt/data/c")
            assert res["exitCode"] != 0 and "Read-only file system" in res["stderr"], res
    finally:
        for name in ("share-a", "share-b", "share-ro", "share-rov"):
            delete(client, RG, name)
    # The share outlives the groups.
    assert (corral.data_dir / "shares" / "itacct" / "itshare" / "data" / "b").read_text() == "hello-from-b\n"


def test_a_missing_share_fails_provisioning_with_a_clear_error(corral: CorralServer) -> None:
    client = corral.client()
    body = group(container("noshare", ["sleep", "3600"], volumeMounts=[{"name": "data", "mountPath": "/d"}]),
                 volumes=[{"name": "data", "azureFile": {"shareName": "nosuch", "storageAccountName": "itacct"}}])
    resp = client.request("PUT", client.group_path(RG, "noshare"), json=body)
    try:
        result = client.wait_operation(resp, timeout=60)
        assert result["status"] == "Failed"
        assert "itacct/nosuch does not exist" in result["error"]["message"], result
        g = wait_for(client, RG, "noshare", lambda g: any(e["name"] == "VolumeSetupFailed"
                                                           for e in g["properties"]["instanceView"]["events"]))
        assert state(g, "noshare") == "Waiting"
    finally:
        delete(client, RG, "noshare")


def test_node_reset_releases_volumes_of_groups_it_tears_down(corral: CorralServer) -> None:
    """teardown_group (used for orphans and by `corral node reset`) unmounts secrets and removes emptyDirs."""
    client = corral.client()
    mounts = [{"name": "creds", "mountPath": "/c"}, {"name": "scratch", "mountPath": "/s"}]
    body = group(container("reset-vol", ["sleep", "3600"], volumeMounts=mounts),
                 volumes=[{"name": "creds", "secret": {"k": base64.b64encode(b"v").decode()}},
                          {"name": "scratch", "emptyDir": {}}])
    put(client, RG, "resetvol", body)
    uid = _uid(corral, "reset-vol")
    vol = corral.data_dir / "node" / "volumes" / uid
    assert vol.is_dir() and _mounts_with(uid)
    corral.kill()  # as a crash would: containers and mounts stay
    try:
        assert _mounts_with(uid)
        res = corral.cli("node", "reset", *corral.node_flags)
        assert _mounts_with(uid) == [], (res.stdout, res.stderr)
        assert not vol.exists(), (list(vol.rglob("*")), res.stdout, res.stderr)
    finally:
        corral.start()
    client = corral.client()
    try:
        # The record survived: the restarted agent builds the group again, volumes included.
        # (Until its first pass the API still shows the status reported before the crash.)
        deadline = time.monotonic() + 60
        while True:
            try:
                out = exec_sync(client, RG, "resetvol", "reset-vol", "cat", "/c/k")["stdout"]
                break
            except ApiError:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert out == "v"
        iv = view(get(client, RG, "resetvol"), "reset-vol")
        assert iv["restartCount"] == 1 and iv["previousState"]["detailStatus"] == "Lost", iv
        assert any(e["name"] == "Lost" for e in iv["events"])
    finally:
        delete(client, RG, "resetvol")
    assert _mounts_with(uid) == [] and not vol.exists()
