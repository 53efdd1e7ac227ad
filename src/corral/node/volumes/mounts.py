"""tmpfs mounts for secret volumes, and finding mounts under a directory."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from corral.errors import VolumeError
from corral.node.images import overlay

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8


def mounts_under(path: Path) -> list[Path]:
    """Mount points at or below `path`, deepest first (the order to unmount them in)."""
    root = str(Path(path).absolute())
    prefix = root.rstrip("/") + "/"
    with open("/proc/self/mountinfo") as fh:
        points = [overlay._unescape(line.split(" ", 5)[4]) for line in fh]
    found = {p for p in points if p == root or p.startswith(prefix)}
    return [Path(p) for p in sorted(found, key=len, reverse=True)]


def mount_tmpfs(target: Path, size_bytes: int) -> None:
    """Mount a private tmpfs (nosuid, nodev, noexec) at `target` unless one is already there."""
    if overlay.is_mountpoint(target):
        return
    target.mkdir(parents=True, exist_ok=True)
    data = f"mode=0755,size={size_bytes}".encode()
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    if overlay._libc.mount(b"tmpfs", str(target).encode(), b"tmpfs", flags, data) != 0:
        reason = os.strerror(ctypes.get_errno())
        raise VolumeError(f"could not mount a tmpfs for secrets at {target}: {reason}")


def unmount_all_under(path: Path) -> None:
    for point in mounts_under(path):
        overlay.unmount(point)
