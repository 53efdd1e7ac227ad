"""Thin ctypes wrappers for the few syscalls Python's os module lacks in 3.11."""

from __future__ import annotations

import ctypes
import os

_libc = ctypes.CDLL("libc.so.6", use_errno=True)

CLONE_NEWNET = 0x40000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 1 << 20
MNT_DETACH = 2
EINVAL = 22
ENOENT = 2


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), "setns")


def bind_mount(src: str, dst: str) -> None:
    _check(_libc.mount(src.encode(), dst.encode(), None, MS_BIND, None), f"mount --bind {src} {dst}")


def mount_flags(target: str, flags: int, source: str = "none") -> int:
    """mount(2) without a filesystem type (bind/propagation changes); returns errno, 0 on success."""
    if _libc.mount(source.encode(), target.encode(), None, flags, None) == 0:
        return 0
    return ctypes.get_errno()


def umount(path: str) -> bool:
    """Detach a mount; False when nothing was mounted there."""
    if _libc.umount2(path.encode(), MNT_DETACH) == 0:
        return True
    err = ctypes.get_errno()
    if err in (EINVAL, ENOENT):
        return False
    raise OSError(err, f"umount {path}: {os.strerror(err)}")
