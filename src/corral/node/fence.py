"""Self-fencing: a node that lost its lease stops its own groups, even when its agent is gone.

The agent writes the time of its last heartbeat the control plane acknowledged (the start
of the request, on the system-wide monotonic clock) to ``<state>/lease``. A small watchdog
process, started by the agent and outliving it, reads that file: once the lease is older
than its limit it kills every process in the node's cgroup parent, and keeps doing so
until a fresh acknowledgement arrives. The agent fences itself the same way, a little
sooner (``kill_tree``); the watchdog is the backstop for an agent that died or hangs.

The control plane declares the node dead only after a longer silence (its node lease),
so by the time it places replacements the node's copies are gone.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from corral.fileio import atomic_write
from corral.node.runtime.cgroups import CGROUP_ROOT

log = logging.getLogger(__name__)

LEASE_FILE = "lease"
FENCED_FILE = "fenced"  # written by the watchdog when it killed something; read by the next agent
PID_FILE = "watchdog.pid"
LOCK_FILE = "watchdog.lock"
CHECK_EVERY = 0.05  # seconds between the watchdog's looks at the lease


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def write_lease(state_dir: Path, acked_at: float) -> None:
    """Record an acknowledged heartbeat sent at ``acked_at`` (time.monotonic())."""
    atomic_write(state_dir / LEASE_FILE, f"{_boot_id()} {acked_at:.6f}\n", durable=False)


def lease_age(state_dir: Path) -> float | None:
    """Seconds since the last acknowledged heartbeat; None when there never was one (this boot)."""
    try:
        boot, stamp = (state_dir / LEASE_FILE).read_text().split()
    except (OSError, ValueError):
        return None
    if boot != _boot_id():
        return None  # a monotonic time from an earlier boot means nothing now
    return time.monotonic() - float(stamp)


def _tasks(cgroup_parent: str) -> set[int]:
    """Every process in the cgroups under ``cgroup_parent`` (read from each hierarchy that has them)."""
    pids: set[int] = set()
    rel = cgroup_parent.strip("/")
    for hierarchy in ("pids", "memory", "cpu,cpuacct", "freezer", "unified"):
        top = CGROUP_ROOT / hierarchy / rel
        if not top.is_dir():
            continue
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(p) for p in procs.read_text().split())
        if pids:
            break
    pids.discard(os.getpid())
    return pids


def kill_tree(cgroup_parent: str, rounds: int = 20) -> int:
    """SIGKILL every process under ``cgroup_parent`` until none is left (forks racing the kill included)."""
    killed = 0
    for _ in range(rounds):
        pids = _tasks(cgroup_parent)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        time.sleep(0.01)
    return killed


def took_fence(state_dir: Path) -> bool:
    """Whether the watchdog fenced this node since the marker was last cleared."""
    return (state_dir / FENCED_FILE).exists()


def clear_fence_marker(state_dir: Path) -> None:
    (state_dir / FENCED_FILE).unlink(missing_ok=True)


def watch(state_dir: Path, cgroup_parent: str, after: float) -> None:
    """The watchdog's loop: fence whenever the lease is older than ``after`` seconds (or absent)."""
    while state_dir.is_dir():
        age = lease_age(state_dir)
        if age is None or age > after:
            n = kill_tree(cgroup_parent)
            if n:
                atomic_write(state_dir / FENCED_FILE, f"{time.time():.3f} {n}\n")
                log.warning("lease lapsed (%s s): killed %d process(es) under %s",
                            "never held" if age is None else f"{age:.1f}", n, cgroup_parent)
        time.sleep(CHECK_EVERY)


def ensure_watchdog(state_dir: Path, cgroup_parent: str, after: float) -> int | None:
    """Start the node's watchdog unless one already runs for ``state_dir``; its pid (None if one was there)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if watchdog_pid(state_dir) is not None:
        return None
    log_file = open(state_dir / "watchdog.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "corral.node.fence", "--state-dir", str(state_dir), "--cgroup-parent", cgroup_parent,
         "--after", str(after)],
        stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
    )
    log_file.close()
    deadline = time.monotonic() + 5
    while watchdog_pid(state_dir) is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return proc.pid


def watchdog_pid(state_dir: Path) -> int | None:
    """The pid of the watchdog holding ``state_dir``'s lock, if one runs."""
    try:
        fd = os.open(state_dir / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            return int((state_dir / PID_FILE).read_text())
        except (OSError, ValueError):
            return -1  # starting up: the lock is held, the pid not written yet
    finally:
        os.close(fd)
    return None


def stop_watchdog(state_dir: Path) -> None:
    """Stop the node's watchdog (``corral node reset``, tests); the node's groups are not touched."""
    pid = watchdog_pid(state_dir)
    if pid and pid > 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while watchdog_pid(state_dir) is not None and time.monotonic() < deadline:
            time.sleep(0.02)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Corral's self-fencing watchdog (started by `corral agent`).")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--cgroup-parent", required=True)
    parser.add_argument("--after", type=float, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s fence: %(message)s")
    lock = os.open(args.state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # another watchdog holds this node
    atomic_write(args.state_dir / PID_FILE, f"{os.getpid()}\n", durable=False)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    watch(args.state_dir, args.cgroup_parent, args.after)


if __name__ == "__main__":
    main()
