"""Minimal inotify binding (ctypes): lets exits and log growth wake us without polling."""

from __future__ import annotations

import ctypes
import os
import select
import struct
from pathlib import Path

_libc = ctypes.CDLL("libc.so.6", use_errno=True)

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

_EVENT = struct.Struct("iIII")


class Inotify:
    """One inotify instance; ``wait`` returns the names of entries that changed."""

    def __init__(self) -> None:
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd: int = fd
        self._paths: dict[int, Path] = {}

    def add_watch(self, path: Path, mask: int) -> int:
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch({path}): {os.strerror(err)}")
        self._paths[wd] = path
        return int(wd)

    def wait(self, timeout: float | None) -> list[tuple[Path, str, int]]:
        """Block up to ``timeout`` seconds; return (watched path, entry name, mask) events."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return []
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        events: list[tuple[Path, str, int]] = []
        off = 0
        while off + _EVENT.size <= len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, off)
            off += _EVENT.size
            name = data[off : off + length].rstrip(b"\0").decode(errors="replace")
            off += length
            events.append((self._paths.get(wd, Path()), name, mask))
        return events

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Inotify:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
