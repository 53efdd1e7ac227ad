"""Writing files so that readers never see a partial one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_fd(fd: int, data: bytes) -> None:
    """All of ``data`` to ``fd`` (os.write may write less)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_in_place(path: Path, data: bytes | str, mode: int = 0o644) -> None:
    """Write ``path`` in place (no temp file, no fsync), with exactly ``mode`` whatever the umask.

    Only for files nobody reads until the caller has recorded them as done: a reader could see a partial one.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
        write_fd(fd, data.encode() if isinstance(data, str) else data)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str, mode: int = 0o644, durable: bool = True) -> None:
    """Write via a temp file (+ fsync when ``durable``) + rename, so readers never see a partial file.

    ``durable``: the file must outlive a machine crash, not only a crash of this process.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode() if isinstance(data, str) else data)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any, durable: bool = True) -> None:
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True).encode(), durable=durable)
