"""Named persistent shares backing the azureFile volume kind.

A share is named `<storageAccountName>/<shareName>`, exactly as the ACI volume
names it, so two storage accounts can each have a share called "data". The
local backend keeps each share as a directory:

    shares_root/<account>/<share>/share.json   metadata (quota, created)
    shares_root/<account>/<share>/data/        what containers see

The storage account key of a volume is not checked: the node's shares are
reachable only by group specs the API accepted. Quotas are recorded (and
reported with usage) but not enforced by the local backend.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel

from corral.errors import InvalidRequest, NotFound
from corral.fileio import atomic_write

_NAME = re.compile(r"^([a-z0-9]{3,24})/([a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62})$")


class Share(BaseModel):
    name: str  # "<storageAccountName>/<shareName>"
    path: Path  # the directory containers bind-mount
    quota_gb: int | None = None
    created: datetime


class ShareBackend(Protocol):
    """What VolumeManager needs from shares; a network filesystem can implement it later."""

    def create(self, name: str, quota_gb: int | None = None) -> Share: ...
    def list(self) -> list[Share]: ...
    def get(self, name: str) -> Share | None: ...
    def delete(self, name: str) -> None: ...
    def path(self, name: str) -> Path: ...


def check_share_name(name: str) -> tuple[str, str]:
    m = _NAME.match(name)
    if not m:
        raise InvalidRequest(
            f"share name {name!r} must be '<storageAccountName>/<shareName>': an account of 3-24 lowercase "
            "letters and digits, a share of 3-63 lowercase letters, digits and single hyphens",
            target="shareName",
        )
    return m.group(1), m.group(2)


class _Meta(BaseModel):
    quota_gb: int | None = None
    created: datetime


class ShareStore:
    """Local-directory shares (the default ShareBackend)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self._trash = self.root / ".trash"

    def _dir(self, name: str) -> Path:
        account, share = check_share_name(name)
        return self.root / account / share

    def path(self, name: str) -> Path:
        return self._dir(name) / "data"

    def get(self, name: str) -> Share | None:
        d = self._dir(name)
        try:
            meta = _Meta.model_validate_json((d / "share.json").read_text())
        except FileNotFoundError:
            return None
        return Share(name=name, path=d / "data", quota_gb=meta.quota_gb, created=meta.created)

    def create(self, name: str, quota_gb: int | None = None) -> Share:
        """Create the share, or return it if it exists (then the quota is updated if given)."""
        if quota_gb is not None and quota_gb < 1:
            raise InvalidRequest("share quota must be at least 1 GB", target="quota")
        d = self._dir(name)
        existing = self.get(name)
        if existing is not None:
            if quota_gb is not None and quota_gb != existing.quota_gb:
                meta = _Meta(quota_gb=quota_gb, created=existing.created)
                atomic_write(d / "share.json", meta.model_dump_json().encode())
                existing.quota_gb = quota_gb
            return existing
        # Build it aside and rename, so a crash never leaves a share without metadata.
        d.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=d.parent, prefix=f".{d.name}."))
        try:
            os.chmod(work, 0o755)
            (work / "data").mkdir(mode=0o777)
            os.chmod(work / "data", 0o777)  # containers may run as any user
            meta = _Meta(quota_gb=quota_gb, created=datetime.now(UTC))
            atomic_write(work / "share.json", meta.model_dump_json().encode())
            if d.exists():  # a half-created share from a crash before its metadata existed
                shutil.rmtree(d)
            os.rename(work, d)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        share = self.get(name)
        assert share is not None
        return share

    def list(self) -> list[Share]:
        out = []
        for meta in sorted(self.root.glob("*/*/share.json")):
            name = f"{meta.parent.parent.name}/{meta.parent.name}"
            share = self.get(name) if _NAME.match(name) else None
            if share is not None:
                out.append(share)
        return out

    def delete(self, name: str) -> None:
        """Delete the share and its data; deleting a missing share is fine."""
        d = self._dir(name)
        if not d.exists():
            return
        self._trash.mkdir(exist_ok=True)
        doomed = Path(tempfile.mkdtemp(dir=self._trash))
        # Rename first: a crash mid-delete must not leave a share that looks intact.
        os.rename(d, doomed / "share")
        shutil.rmtree(doomed, ignore_errors=True)
        try:
            d.parent.rmdir()
        except OSError:
            pass

    def usage(self, name: str) -> int:
        """Bytes used by the share's files."""
        if self.get(name) is None:
            raise NotFound(f"share {name} does not exist", target="shareName")
        total = 0
        for dirpath, _dirs, files in os.walk(self.path(name)):
            for f in files:
                try:
                    total += os.lstat(os.path.join(dirpath, f)).st_size
                except OSError:
                    pass
        return total
