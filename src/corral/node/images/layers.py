"""Unpack one image layer into its own directory, ready to be an overlayfs lower.

Each layer is unpacked alone (never applied on top of its parent), so OCI
whiteouts are converted to the overlayfs on-disk form instead of being applied:
`.wh.name` becomes a 0/0 character device `name`, and `.wh..wh..opq` sets
`trusted.overlay.opaque=y` on its directory. Stacked as lowers, overlayfs then
hides what the whiteouts delete.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path
from typing import IO

from corral.errors import ImageError
from corral.node.images.mediatypes import compression_of

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_XATTR_PAX = "SCHILY.xattr."


class _HashingReader:
    """File-like wrapper hashing everything read through it (the layer's diff id)."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.hasher = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.hasher.update(data)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass

    @property
    def digest(self) -> str:
        return "sha256:" + self.hasher.hexdigest()


def _open_decompressed(raw: IO[bytes], media_type: str) -> IO[bytes]:
    kind = compression_of(media_type)
    if kind == "auto":
        head = raw.read(4)
        raw.seek(0)
        kind = "gzip" if head[:2] == b"\x1f\x8b" else "zstd" if head == b"\x28\xb5\x2f\xfd" else ""
    if kind == "gzip":
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if kind == "zstd":
        try:
            import zstandard  # type: ignore[import-not-found]
        except ImportError:
            raise ImageError(
                f"layer media type {media_type} is zstd-compressed, which this node cannot unpack; "
                "push the image with gzip-compressed layers"
            ) from None
        return zstandard.ZstdDecompressor().stream_reader(raw)  # type: ignore[no-any-return]
    return raw


class _Collector:
    """tarfile filter: keep tar's path-safety checks, divert whiteouts, remember xattrs."""

    def __init__(self) -> None:
        self.whiteouts: list[str] = []
        self.opaques: list[str] = []
        self.xattrs: list[tuple[str, dict[str, bytes]]] = []

    def __call__(self, member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo | None:
        # Raises FilterError for absolute paths, '..' escapes and paths through symlinks out of dest.
        checked = tarfile.tar_filter(member, dest)
        name = checked.name.rstrip("/")
        parent, base = os.path.split(name)
        if base == OPAQUE_MARKER:
            self.opaques.append(parent)
            return None
        if base.startswith(WHITEOUT_PREFIX):
            if not base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):  # other .wh..wh.* metadata is dropped
                self.whiteouts.append(os.path.join(parent, base[len(WHITEOUT_PREFIX):]))
            return None
        attrs = {
            k[len(_XATTR_PAX):]: v.encode("utf-8", "surrogateescape")
            for k, v in member.pax_headers.items()
            if k.startswith(_XATTR_PAX) and not k.startswith(_XATTR_PAX + "trusted.overlay.")
        }
        if attrs:
            self.xattrs.append((name, attrs))
        # tar_filter also strips setuid/setgid/sticky and group/other write bits; images need them
        # (/tmp is 1777, some binaries are setuid), so keep the layer's own mode.
        if checked.mode != member.mode:
            checked = checked.replace(mode=member.mode, deep=False)
        return checked


def _inside(root: str, rel: str) -> str:
    path = os.path.realpath(os.path.join(root, os.path.dirname(rel)))
    if os.path.commonpath([path, root]) != root:
        raise ImageError(f"layer whiteout {rel!r} points outside the layer")
    return os.path.join(path, os.path.basename(rel))


def _touching_parent(path: str) -> tuple[str, os.stat_result | None]:
    parent = os.path.dirname(path)
    try:
        return parent, os.lstat(parent)
    except FileNotFoundError:
        return parent, None


def _apply_overlay_markers(root: str, found: _Collector) -> None:
    for rel in found.whiteouts:
        path = _inside(root, rel)
        parent, before = _touching_parent(path)
        os.makedirs(parent, exist_ok=True)
        if os.path.lexists(path):
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.unlink(path)
        os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        if before is not None:  # keep the directory's mtime from the tar
            os.utime(parent, ns=(before.st_atime_ns, before.st_mtime_ns))
    for rel in found.opaques:
        path = _inside(root, rel) if rel else root
        os.makedirs(path, exist_ok=True)
        os.setxattr(path, "trusted.overlay.opaque", b"y")
    for rel, attrs in found.xattrs:
        path = _inside(root, rel)
        for key, value in attrs.items():
            try:
                os.setxattr(path, key, value, follow_symlinks=False)
            except OSError:
                pass  # e.g. user.* on a symlink: not worth failing the pull for


def unpack_layer(blob: Path, media_type: str, diff_id: str | None, dest: Path, tmp_root: Path) -> str:
    """Unpack `blob` into `dest` (atomically: temp dir then rename). Returns the verified diff id.

    Callers hold the per-layer lock; if `dest` already exists the layer is trusted as is.
    """
    if dest.is_dir():
        return diff_id or "sha256:" + dest.name
    tmp_root.mkdir(parents=True, exist_ok=True)
    work = tempfile.mkdtemp(dir=tmp_root, prefix="layer.")
    try:
        os.chmod(work, 0o755)
        found = _Collector()
        with open(blob, "rb") as raw:
            reader = _HashingReader(_open_decompressed(raw, media_type))
            try:
                with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                    tar.extractall(work, filter=found, numeric_owner=True)
            except tarfile.FilterError as exc:
                raise ImageError(f"layer {diff_id or blob.name} has an unsafe entry: {exc}") from exc
            except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
                raise ImageError(f"layer {diff_id or blob.name} could not be unpacked: {exc}") from exc
            reader.drain()  # tar stops at its end marker; the diff id covers the padding too
        actual = reader.digest
        if diff_id is not None and actual != diff_id:
            raise ImageError(f"layer diff id mismatch: the image config says {diff_id}, "
                             f"the layer is {actual}")
        _apply_overlay_markers(os.path.realpath(work), found)
        try:
            os.rename(work, dest)
        except OSError:
            if not dest.is_dir():
                raise
        return actual
    finally:
        if os.path.exists(work):
            shutil.rmtree(work, ignore_errors=True)
