"""overlayfs mounts for container root filesystems, via mount(2)/umount2(2)."""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
from pathlib import Path

from corral.errors import ImageError

_libc = ctypes.CDLL("libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
MNT_DETACH = 2
# mount(2) data is limited to one page; leave room for the upper/work options.
_MAX_DATA = 4000


def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as octal.
    return field.encode().decode("unicode_escape") if "\\" in field else field


_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100
_AT_NO_AUTOMOUNT = 0x800
_STATX_ATTR_MOUNT_ROOT = 0x2000
_statx = getattr(_libc, "statx", None)


def _mount_root(target: str) -> bool | None:
    """statx(2)'s STATX_ATTR_MOUNT_ROOT (Linux 5.8+): whether ``target`` is the root of a mount.

    O(1), where reading /proc/self/mountinfo is O(mounts) -- four per group on a busy node,
    for every rootfs mount and unmount. None when the kernel cannot tell.
    """
    if _statx is None:
        return None
    buf = ctypes.create_string_buffer(256)  # struct statx
    if _statx(_AT_FDCWD, target.encode(), _AT_SYMLINK_NOFOLLOW | _AT_NO_AUTOMOUNT, 0, buf) != 0:
        return False if ctypes.get_errno() == errno.ENOENT else None
    attributes = int.from_bytes(buf.raw[8:16], "little")
    supported = int.from_bytes(buf.raw[56:64], "little")
    return bool(attributes & _STATX_ATTR_MOUNT_ROOT) if supported & _STATX_ATTR_MOUNT_ROOT else None


def is_mountpoint(path: Path) -> bool:
    target = os.path.realpath(path)
    known = _mount_root(target)
    if known is not None:
        return known
    try:
        with open("/proc/self/mountinfo") as fh:
            return any(_unescape(line.split(" ", 5)[4]) == target for line in fh)
    except OSError:
        return os.path.ismount(target)


def mount_overlay(lowers: list[Path], upper: Path, work: Path, merged: Path) -> None:
    """Mount `lowers` (topmost first) under `upper` at `merged`."""
    lowerdir = ":".join(str(p) for p in lowers)
    data = f"lowerdir={lowerdir},upperdir={upper},workdir={work}"
    if len(data) <= _MAX_DATA:
        rc = _libc.mount(b"overlay", str(merged).encode(), b"overlay", 0, data.encode())
        if rc == 0:
            return
        err = ctypes.get_errno()
        raise ImageError(f"overlay mount at {merged} failed: {os.strerror(err)} ({data[:200]}...)")
    # Too many layers for one page of absolute paths: mount from a child whose cwd is the
    # layers directory, so lowerdir can use short relative names.
    base = lowers[0].parent
    if any(p.parent != base for p in lowers):
        raise ImageError(f"image has too many layers ({len(lowers)}) to mount")
    rel = ":".join(p.name for p in lowers)
    opts = f"lowerdir={rel},upperdir={upper},workdir={work}"
    proc = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)],
                          cwd=base, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError(f"overlay mount at {merged} failed: {proc.stderr.strip()}")


def unmount(path: Path) -> None:
    """Unmount `path` if mounted; lazily if busy. Not mounted is fine (idempotent)."""
    target = str(path).encode()
    if _libc.umount2(target, 0) == 0:
        return
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOENT):
        return
    if err == errno.EBUSY and _libc.umount2(target, MNT_DETACH) == 0:
        return
    raise ImageError(f"could not unmount {path}: {os.strerror(err)}")
