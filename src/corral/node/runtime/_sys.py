"""Thin libc wrappers the runtime needs and Python's os module lacks."""

from __future__ import annotations

import ctypes
import os
import select
import shutil
from pathlib import Path

from corral import native

_libc = ctypes.CDLL("libc.so.6", use_errno=True)

CLONE_NEWNET = 0x40000000
UNIFIED_CGROUP = b"/sys/fs/cgroup/unified"


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


SHIM = "corral-crun-shim"


def runtime_prefix(create_runs: bool = False) -> list[str]:
    """The command prefix crun runs behind: a mount namespace of its own without the cgroup2 mount.

    crun refuses hybrid cgroup hosts while cgroup2 holds a controller; hiding the unified
    mount in a throwaway namespace makes it use plain cgroup v1, without touching the
    host's mounts. Slave, not private: unmounts on the host (a deleted sandbox's netns
    under the shared /var/run/netns) must reach this namespace while it lives (as long as
    the runtime process); otherwise it would pin other groups' namespaces.

    ``create_runs``: the command's first ``create`` argument becomes ``run --detach``. conmon
    only knows ``<runtime> create`` (then the caller runs ``<runtime> start``); this way one
    runtime process creates and starts the container, which saves a whole ``crun start``.

    The native shim (``crun_shim.c``, when ``make venv`` built it) does it in one exec and
    also honours a start gate (``gated``); without it, util-linux ``unshare`` and ``umount``
    and ``sh`` do, in four. A prefix, not a ``preexec_fn``: that makes Python fork() the
    calling process instead of vfork()ing it, and for the node agent (hundreds of MB, dozens
    of threads) the page-table copy costs ~15 ms of CPU per container start.
    """
    shim = native.installed(SHIM)
    if shim is not None:
        return [str(shim), "--create-runs"] if create_runs else [str(shim)]
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    script = f"umount -l {UNIFIED_CGROUP.decode()} 2>/dev/null; "
    if create_runs:
        # `for a` expands the arguments once, so appending to them while looping is safe.
        script += ('n=$#; s=; for a; do if [ -z "$s" ] && [ "$a" = create ]; then s=1; set -- "$@" run --detach; '
                   'else set -- "$@" "$a"; fi; done; shift "$n"; ')
    return [unshare, "--mount", "--propagation", "slave", "--", "/bin/sh", "-c", script + 'exec "$0" "$@"']


def gated(prefix: list[str]) -> bool:
    """Whether ``prefix`` waits for a start gate (CORRAL_GATE, a FIFO) before it runs anything."""
    return bool(prefix) and Path(prefix[0]).name == SHIM


def enter_netns(path: str) -> None:
    """Join the network namespace at ``path`` (for runtimes that must run inside it)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns({path})")
    finally:
        os.close(fd)


def proc_start_time(pid: int) -> int | None:
    """Start time (clock ticks since boot) of a live, non-zombie process, else None.

    Pairing a pid with its start time guards against pid reuse.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None
    return int(fields[19])


def pid_alive(pid: int, start_time: int | None = None) -> bool:
    st = proc_start_time(pid)
    if st is None:
        return False
    return start_time is None or st == start_time


def wait_pid_exit(pid: int, timeout: float | None) -> bool:
    """Wait for any process (not only a child) to exit, via a pidfd; True when gone."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if proc_start_time(pid) is None:  # already a zombie
            return True
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        ms = None if timeout is None else max(0, int(timeout * 1000))
        return bool(poller.poll(ms))
    finally:
        os.close(fd)


def _parents() -> dict[int, int]:
    """pid -> ppid of every live process."""
    table: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        fields = data[data.rindex(b")") + 2 :].split()
        if fields[0] not in (b"Z", b"X"):
            table[int(entry)] = int(fields[1])
    return table


def children_of(ppid: int) -> list[int]:
    """Live direct children of ``ppid`` (scans /proc; for rare, small lookups)."""
    return sorted(pid for pid, parent in _parents().items() if parent == ppid)


def descendants_of(root: int) -> list[int]:
    """Live descendants of ``root``, not including it."""
    table = _parents()
    found: list[int] = []
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        kids = [pid for pid, pp in table.items() if pp == parent]
        found += kids
        frontier += kids
    return sorted(found)


def catches_sigterm(pid: int) -> bool:
    """Whether ``pid`` handles SIGTERM (an init without a handler never sees it)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (15 - 1)))
    except OSError:
        pass
    return True
