"""Sealed in-memory copies of the OCI runtime binary, so it need not copy itself on every call.

crun (like runc) guards against CVE-2019-5736 (a container overwriting the host's runtime
binary through /proc/self/exe) by re-executing itself from a read-only copy on every
invocation, unless /proc/self/exe already is a memfd sealed against writes. That second
exec, with its ~15 shared libraries, is ~1.7 ms of each ``crun run`` here and about half
of a ``crun kill`` or ``delete``. The node holds one sealed copy and execs the runtime from
it: the same protection (nothing can write to a sealed memfd), without the re-exec.

The copy is made again when the binary on disk changes (a package upgrade), checked with
one ``stat`` per use. Where memfds cannot be sealed, the on-disk path is used as before.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading

from corral.fileio import write_fd

log = logging.getLogger(__name__)

# What crun's and runc's cloned-binary check accepts as already safe (all four, exactly).
SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE

_lock = threading.Lock()
# binary path -> (the on-disk file's identity when copied, memfd), one per process
_copies: dict[str, tuple[tuple[int, int, int, int], int]] = {}


def _identity(st: os.stat_result) -> tuple[int, int, int, int]:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _seal(path: str) -> int:
    fd = os.memfd_create(os.path.basename(path), os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        with open(path, "rb") as f:
            write_fd(fd, f.read())
        os.fchmod(fd, 0o555)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
        return fd
    except BaseException:
        os.close(fd)
        raise


def exe_path(path: str) -> str:
    """A path to exec ``path``'s binary from its sealed copy in this process, else ``path``.

    ``/proc/<this pid>/fd/<n>``: other processes (conmon, the crun shim) can exec it too,
    while this process lives. The fd is close-on-exec; exec resolves the path first.
    """
    try:
        ident = _identity(os.stat(path))
    except OSError:
        return path
    with _lock:
        held = _copies.get(path)
        if held is None or held[0] != ident:
            try:
                fd = _seal(path)
            except OSError as e:
                log.warning("cannot hold a sealed copy of %s (%s); running it from disk", path, e)
                return path
            # The old copy stays open: a process that was handed its path may not have exec'd it yet.
            _copies[path] = (ident, fd)
            held = _copies[path]
    return f"/proc/{os.getpid()}/fd/{held[1]}"
