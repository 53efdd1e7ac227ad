"""Volumes for container groups: real tmpfs mounts, real git clones, real share directories."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.errors import InvalidRequest, VolumeError
from corral.node.images import overlay
from corral.node.volumes import ShareStore, VolumeManager, VolumeSpec
from corral.node.volumes.mounts import mounts_under, unmount_all_under

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="tmpfs mounts need root"),
]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[VolumeManager]:
    try:
        yield VolumeManager(tmp_path / "volumes", tmp_path / "shares")
    finally:
        unmount_all_under(tmp_path)


def _fstype(path: Path) -> str:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            if overlay._unescape(fields[4]) == target:
                return fields[fields.index("-") + 1]
    return ""


def test_empty_dir_is_per_group_writable_and_released(vm: VolumeManager) -> None:
    paths = vm.prepare("g1", [{"name": "scratch", "emptyDir": {}}])
    scratch = paths["scratch"]
    assert scratch.is_dir() and stat.S_IMODE(scratch.stat().st_mode) == 0o777
    (scratch / "f").write_text("kept")
    assert vm.prepare("g1", [{"name": "scratch", "emptyDir": {}}]) == paths  # idempotent
    assert (scratch / "f").read_text() == "kept"
    other = vm.prepare("g2", [{"name": "scratch", "emptyDir": {}}])["scratch"]
    assert other != scratch and not (other / "f").exists()
    assert vm.groups() == ["g1", "g2"]
    vm.release("g1")
    vm.release("g1")  # idempotent
    assert not scratch.exists() and other.is_dir()
    vm.release("g2")
    assert vm.groups() == []


def test_secret_lives_on_tmpfs_with_0400_files(vm: VolumeManager, tmp_path: Path) -> None:
    spec = {"name": "creds", "secret": {"password": b64(b"hunter2"), "config.json": b64(b'{"a":1}')}}
    path = vm.prepare("g1", [spec])["creds"]
    assert (path / "password").read_bytes() == b"hunter2"
    assert (path / "config.json").read_bytes() == b'{"a":1}'
    assert stat.S_IMODE((path / "password").stat().st_mode) == 0o400
    assert _fstype(path.parent) == "tmpfs"
    assert VolumeSpec.model_validate(spec).read_only

    # Re-running with a changed secret converges: new value, dropped key gone, still one mount.
    path2 = vm.prepare("g1", [{"name": "creds", "secret": {"password": b64(b"rotated")}}])["creds"]
    assert path2 == path and (path / "password").read_bytes() == b"rotated"
    assert not (path / "config.json").exists()
    assert len(mounts_under(vm.group_dir("g1"))) == 1

    vm.release("g1")
    assert not mounts_under(tmp_path) and not vm.group_dir("g1").exists()


def test_secret_permissions_set_modes_and_the_owning_group(vm: VolumeManager) -> None:
    # As kubelet writes a configMap volume with defaultMode 0440, one item 0400, and fsGroup 2000.
    spec = {"name": "cfg", "secret": {"a": b64(b"1"), "b": b64(b"2")},
            "secretPermissions": {"defaultMode": 0o440, "modes": {"b": 0o400}, "group": 2000}}
    path = vm.prepare("g1", [spec])["cfg"]
    a, b = (path / "a").stat(), (path / "b").stat()
    assert (stat.S_IMODE(a.st_mode), a.st_uid, a.st_gid) == (0o440, 0, 2000)
    assert (stat.S_IMODE(b.st_mode), b.st_gid) == (0o440, 2000)  # the group always gets read access
    vm.prepare("g1", [{**spec, "secretPermissions": {"defaultMode": 0o644}}])  # changed in place
    assert stat.S_IMODE((path / "a").stat().st_mode) == 0o644 and (path / "a").stat().st_gid == 0
    vm.release("g1")


def test_secret_size_limit(tmp_path: Path) -> None:
    vm = VolumeManager(tmp_path / "v", tmp_path / "s", secret_tmpfs_bytes=1 << 20)
    with pytest.raises(InvalidRequest, match="limit"):
        vm.prepare("g", [{"name": "big", "secret": {"blob": b64(b"x" * (1 << 20))}}])
    assert not mounts_under(tmp_path)


def _git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.test",
                           "-c", "init.defaultBranch=main", *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.fixture
def bare_repo(tmp_path: Path) -> tuple[Path, str, str]:
    """A local bare repository with two commits; returns (path, first sha, second sha)."""
    bare, work = tmp_path / "site.git", tmp_path / "work"
    _git("init", "--bare", "--quiet", str(bare))
    _git("init", "--quiet", str(work))
    (work / "index.html").write_text("v1\n")
    _git("add", ".", cwd=work)
    _git("commit", "--quiet", "-m", "one", cwd=work)
    first = _git("rev-parse", "HEAD", cwd=work)
    (work / "index.html").write_text("v2\n")
    _git("commit", "--quiet", "-am", "two", cwd=work)
    second = _git("rev-parse", "HEAD", cwd=work)
    _git("push", "--quiet", str(bare), "HEAD:refs/heads/main", cwd=work)
    return bare, first, second


def test_git_repo_volumes(vm: VolumeManager, bare_repo: tuple[Path, str, str]) -> None:
    bare, first, _second = bare_repo
    paths = vm.prepare("g1", [
        {"name": "dot", "gitRepo": {"repository": str(bare), "directory": "."}},
        {"name": "sub", "gitRepo": {"repository": str(bare), "directory": "www/site", "revision": first}},
        {"name": "default", "gitRepo": {"repository": str(bare)}},
    ])
    assert (paths["dot"] / "index.html").read_text() == "v2\n"
    assert (paths["sub"] / "www/site/index.html").read_text() == "v1\n"
    assert (paths["default"] / "site/index.html").read_text() == "v2\n"  # named like `git clone` would
    (paths["dot"] / "local-change").write_text("x")
    again = vm.prepare("g1", [{"name": "dot", "gitRepo": {"repository": str(bare), "directory": "."}}])
    assert again["dot"] == paths["dot"]
    assert (paths["dot"] / "local-change").exists()  # an existing clone is not redone
    vm.release("g1")
    assert not paths["dot"].exists()


def test_git_repo_failure_is_clear_and_leaves_nothing(vm: VolumeManager, tmp_path: Path,
                                                      bare_repo: tuple[Path, str, str]) -> None:
    with pytest.raises(VolumeError, match="git clone failed"):
        vm.prepare("g1", [{"name": "r", "gitRepo": {"repository": str(tmp_path / "missing.git")}}])
    with pytest.raises(VolumeError, match="git checkout of f+ failed"):
        vm.prepare("g1", [{"name": "r", "gitRepo": {"repository": str(bare_repo[0]), "revision": "f" * 40}}])
    assert not (vm.group_dir("g1") / "git" / "r").exists()
    assert [p.name for p in (vm.group_dir("g1") / "git").iterdir()] == []  # no half clones


def test_azure_file_shares_persist_across_groups(vm: VolumeManager, tmp_path: Path) -> None:
    shares = ShareStore(tmp_path / "shares")
    share = shares.create("acct1/data", quota_gb=5)
    assert shares.create("acct1/data") == share  # idempotent
    vol = {"name": "data", "azureFile": {"shareName": "data", "storageAccountName": "acct1",
                                         "storageAccountKey": "k", "readOnly": False}}
    p1 = vm.prepare("g1", [vol])["data"]
    assert p1 == share.path == shares.path("acct1/data")
    (p1 / "hello.txt").write_text("from g1")
    vm.release("g1")
    p2 = vm.prepare("g2", [vol])["data"]
    assert (p2 / "hello.txt").read_text() == "from g1"  # release never touches shares
    assert not VolumeSpec.model_validate(vol).read_only
    assert VolumeSpec.model_validate({**vol, "azureFile": {**vol["azureFile"], "readOnly": True}}).read_only
    assert [s.name for s in shares.list()] == ["acct1/data"]
    assert shares.usage("acct1/data") == len("from g1")
    assert shares.create("acct1/data", quota_gb=10).quota_gb == 10

    with pytest.raises(VolumeError, match="acct2/data does not exist"):
        vm.prepare("g3", [{**vol, "azureFile": {**vol["azureFile"], "storageAccountName": "acct2"}}])
    vm.release("g2")
    shares.delete("acct1/data")
    shares.delete("acct1/data")  # idempotent
    assert shares.get("acct1/data") is None and shares.list() == []
    with pytest.raises(InvalidRequest, match="storageAccountName"):
        shares.create("just-a-name")


@pytest.mark.parametrize(
    ("volume", "message"),
    [
        ({"name": "v"}, "exactly one of"),
        ({"name": "v", "emptyDir": {}, "secret": {"a": "YQ=="}}, "got emptyDir, secret"),
        ({"name": "Bad_Name", "emptyDir": {}}, "volume name"),
        ({"name": "v", "secret": {"a": "not base64!"}}, "not valid base64"),
        ({"name": "v", "secret": {"../x": "YQ=="}}, "not a valid file name"),
        ({"name": "v", "gitRepo": {"repository": "--upload-pack=evil"}}, "repository"),
        ({"name": "v", "gitRepo": {"repository": "r", "directory": "../up"}}, "directory"),
        ({"name": "v", "azureFile": {"shareName": "x", "storageAccountName": "acct"}}, "shareName"),
    ],
)
def test_invalid_volumes_name_the_problem(vm: VolumeManager, volume: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message) as err:
        vm.prepare("g1", [volume])
    assert err.value.target and err.value.target.startswith("volumes")


def test_duplicate_names_and_bad_group_ids(vm: VolumeManager) -> None:
    with pytest.raises(InvalidRequest, match="repeated: a"):
        vm.prepare("g1", [{"name": "a", "emptyDir": {}}, {"name": "a", "emptyDir": {}}])
    for bad in ("../etc", "", ".hidden", "a/b"):
        with pytest.raises(InvalidRequest):
            vm.prepare(bad, [])


def test_accepts_the_api_volume_model(vm: VolumeManager) -> None:
    group = pytest.importorskip("corral.model.group")
    vol = group.Volume(name="cache", emptyDir={})
    assert vm.prepare("g1", [vol])["cache"].is_dir()
    vm.release("g1")
