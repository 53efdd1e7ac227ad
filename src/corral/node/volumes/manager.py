"""VolumeManager: turn a group's ACI volumes into host directories containers bind-mount.

Layout under `root` (one directory per group):
    <group>/empty/<name>/     emptyDir (0777, removed with the group)
    <group>/secrets/          a tmpfs mounted per group; <name>/<key> files are 0400 root
    <group>/git/<name>/       gitRepo clones (renamed into place when complete)
azureFile volumes resolve to a share's directory from the ShareBackend and are
never removed or modified by release().
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from corral.errors import InvalidRequest, VolumeError
from corral.node.images import overlay
from corral.node.volumes import gitrepo
from corral.node.volumes.mounts import mount_tmpfs, unmount_all_under
from corral.node.volumes.shares import ShareBackend, ShareStore
from corral.node.volumes.spec import VolumeSpec

_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
SECRET_TMPFS_BYTES = 8 << 20


def as_spec(volume: VolumeSpec | BaseModel | dict[str, Any]) -> VolumeSpec:
    """Accept our VolumeSpec, the API's Volume model, or its JSON dict."""
    if isinstance(volume, VolumeSpec):
        return volume
    data = volume.model_dump(exclude_none=True) if isinstance(volume, BaseModel) else volume
    try:
        return VolumeSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "volume"
        raise InvalidRequest(f"volume {data.get('name', '?')!r}: {where}: {first.get('msg')}",
                             target=f"volumes.{where}") from exc


def _write_file(path: Path, data: bytes, mode: int, gid: int | None = None) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        if gid is not None:
            os.chown(tmp, -1, gid)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class VolumeManager:
    def __init__(self, root: Path, shares_root: Path, *, shares: ShareBackend | None = None,
                 secret_tmpfs_bytes: int = SECRET_TMPFS_BYTES) -> None:
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.shares: ShareBackend = shares if shares is not None else ShareStore(shares_root)
        self.secret_tmpfs_bytes = secret_tmpfs_bytes

    def group_dir(self, group_id: str) -> Path:
        if not _GROUP.match(group_id):
            raise InvalidRequest(f"group id {group_id!r} is not usable as a directory name", target="group")
        return self.root / group_id

    def prepare(self, group_id: str, volumes: Iterable[VolumeSpec | BaseModel | dict[str, Any]]
                ) -> dict[str, Path]:
        """Create every volume of the group; returns name -> host path to bind-mount. Idempotent."""
        specs = [as_spec(v) for v in volumes]
        names = [s.name for s in specs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InvalidRequest(f"volume names must be unique; repeated: {', '.join(dupes)}",
                                 target="volumes")
        gdir = self.group_dir(group_id)
        gdir.mkdir(parents=True, exist_ok=True)
        out: dict[str, Path] = {}
        secrets = [s for s in specs if s.secret is not None]
        if secrets:
            self._prepare_secrets(gdir / "secrets", secrets, out)
        for spec in specs:
            if spec.emptyDir is not None:
                path = gdir / "empty" / spec.name
                path.mkdir(parents=True, exist_ok=True)
                os.chmod(path, 0o777)  # like Kubernetes: any container user can write
                out[spec.name] = path
            elif spec.gitRepo is not None:
                path = gdir / "git" / spec.name
                gitrepo.clone(spec.gitRepo, path)
                out[spec.name] = path
            elif spec.azureFile is not None:
                share = self.shares.get(spec.azureFile.share)
                if share is None:
                    raise VolumeError(
                        f"volume {spec.name!r}: share {spec.azureFile.share} does not exist on this node; "
                        "create it first (ShareStore.create / `corral share create`)", target="azureFile")
                out[spec.name] = share.path
        return {s.name: out[s.name] for s in specs}

    def _prepare_secrets(self, tmpfs: Path, specs: list[VolumeSpec], out: dict[str, Path]) -> None:
        by_name = {s.name: s for s in specs}
        files = {s.name: s.secret_files() for s in specs}
        total = sum(len(k) + len(v) + 4096 for f in files.values() for k, v in f.items())
        if total > self.secret_tmpfs_bytes // 2:
            raise InvalidRequest(f"secret volumes hold {total} bytes; the limit per group is "
                                 f"{self.secret_tmpfs_bytes // 2}", target="volumes.secret")
        # Secrets live only in memory: never written to a disk-backed directory.
        mount_tmpfs(tmpfs, self.secret_tmpfs_bytes)
        for name, contents in files.items():
            vdir = tmpfs / name
            vdir.mkdir(exist_ok=True)
            os.chmod(vdir, 0o755)
            for key, data in contents.items():
                _write_file(vdir / key, data, *by_name[name].secret_file_mode(key))
            for stale in vdir.iterdir():  # converge to the spec on re-run
                if stale.name not in contents:
                    stale.unlink()
            out[name] = vdir

    def release(self, group_id: str) -> None:
        """Unmount the secret tmpfs and delete the group's emptyDirs and clones. Shares are untouched."""
        gdir = self.group_dir(group_id)
        if not gdir.exists():
            return
        # Unmount first so the delete below can never reach into anything mounted here.
        unmount_all_under(gdir)
        if any(overlay.is_mountpoint(p) for p in (gdir, gdir / "secrets")):
            raise VolumeError(f"volumes of group {group_id} are still mounted at {gdir}")
        trash = self.root / ".trash"
        trash.mkdir(exist_ok=True)
        doomed = Path(tempfile.mkdtemp(dir=trash))
        os.rename(gdir, doomed / group_id)
        shutil.rmtree(doomed, ignore_errors=True)

    def groups(self) -> list[str]:
        """Groups that have volumes on this node (for adopting or cleaning up after a restart)."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _GROUP.match(p.name))
