"""cgroup v1 helpers: where a container's cgroup lives in each hierarchy, reading it, removing it."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import time
from pathlib import Path

from pydantic import BaseModel

CGROUP_ROOT = Path("/sys/fs/cgroup")

log = logging.getLogger(__name__)


def hierarchies() -> list[Path]:
    """Every mounted hierarchy under /sys/fs/cgroup (v1 controllers, name=systemd, unified)."""
    try:
        return sorted(p for p in CGROUP_ROOT.iterdir() if p.is_dir() and not p.is_symlink())
    except FileNotFoundError:
        return []


def controller_dir(controller: str, cgroup_path: str) -> Path:
    """Directory of ``cgroup_path`` (e.g. /corral/g/c) in one controller's hierarchy."""
    return CGROUP_ROOT / controller / cgroup_path.lstrip("/")


def read_value(controller: str, cgroup_path: str, name: str) -> str:
    return (controller_dir(controller, cgroup_path) / name).read_text().strip()


def read_oom_kill_count(cgroup_path: str) -> int:
    """``oom_kill`` from memory.oom_control (v1); 0 when the cgroup is gone."""
    try:
        text = read_value("memory", cgroup_path, "memory.oom_control")
    except OSError:
        return 0
    for line in text.splitlines():
        key, _, val = line.partition(" ")
        if key == "oom_kill":
            return int(val)
    return 0


class CgroupStats(BaseModel):
    """Point-in-time usage of one cgroup (v1), for metering and `az container show` metrics."""

    cpu_usage_ns: int  # cumulative CPU time (cpuacct.usage)
    memory_usage_bytes: int  # memory.usage_in_bytes
    memory_working_set_bytes: int  # usage minus inactive file cache, as kubelet reports it
    memory_limit_bytes: int | None
    pids_current: int


def _int_or(path: Path, default: int = 0) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return default


def read_stats(cgroup_path: str) -> CgroupStats | None:
    """Usage of ``cgroup_path``; None once the cgroup is gone."""
    mem_dir = controller_dir("memory", cgroup_path)
    if not mem_dir.is_dir():
        return None
    usage = _int_or(mem_dir / "memory.usage_in_bytes")
    inactive = 0
    try:
        for line in (mem_dir / "memory.stat").read_text().splitlines():
            key, _, val = line.partition(" ")
            if key == "total_inactive_file":
                inactive = int(val)
    except OSError:
        pass
    limit = _int_or(mem_dir / "memory.limit_in_bytes", -1)
    return CgroupStats(
        cpu_usage_ns=_int_or(controller_dir("cpuacct", cgroup_path) / "cpuacct.usage"),
        memory_usage_bytes=usage,
        memory_working_set_bytes=max(0, usage - inactive),
        # The kernel reports "no limit" as a huge page-aligned number.
        memory_limit_bytes=limit if 0 < limit < 1 << 62 else None,
        pids_current=_int_or(controller_dir("pids", cgroup_path) / "pids.current"),
    )


def first_pid(cgroup_path: str) -> int | None:
    """A process in ``cgroup_path`` (memory hierarchy), or None when it has none or is gone."""
    try:
        with open(controller_dir("memory", cgroup_path) / "cgroup.procs") as f:
            line = f.readline().strip()
    except OSError:
        return None
    return int(line) if line.isdigit() else None


def _rmdir_tree(path: Path, deadline: float) -> None:
    """Remove a cgroup dir bottom-up; retry EBUSY briefly (tasks still exiting)."""
    if not path.is_dir():
        return
    for child in path.iterdir():
        if child.is_dir():
            _rmdir_tree(child, deadline)
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def remove_cgroup(cgroup_path: str, timeout: float = 2.0) -> None:
    """Remove ``cgroup_path`` (and any sub-cgroups) from every hierarchy; idempotent.

    Usable for a group's parent cgroup too once its containers are gone.
    """
    rel = cgroup_path.strip("/")
    if not rel:
        raise ValueError("refusing to remove the root cgroup")
    deadline = time.monotonic() + timeout
    for h in hierarchies():
        _rmdir_tree(h / rel, deadline)


def cgroup_exists_anywhere(cgroup_path: str) -> list[Path]:
    rel = cgroup_path.strip("/")
    return [h / rel for h in hierarchies() if (h / rel).exists()]


# Controllers a sandbox-wide (runsc) cgroup is created in, and what we write there.
_SANDBOX_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids")


def _write(path: Path, value: int | str) -> None:
    path.write_text(str(value))


def _set_memory(d: Path, limit: int) -> None:
    """memory.limit_in_bytes must stay <= memsw limit at every step: order the two writes."""
    lim, sw = d / "memory.limit_in_bytes", d / "memory.memsw.limit_in_bytes"
    try:
        _write(lim, limit)
    except OSError as e:
        if e.errno != errno.EINVAL or not sw.exists():
            raise
        _write(sw, limit)  # growing: raise memory+swap first
        _write(lim, limit)
    if sw.exists():
        _write(sw, limit)
    _write(d / "memory.swappiness", 0)  # no swap even where memsw accounting is off


def write_limits(cgroup_path: str, resources: dict[str, object]) -> None:
    """Apply OCI ``linux.resources`` (cpu, memory, pids) to an existing v1 cgroup directly."""
    cpu = resources.get("cpu")
    if isinstance(cpu, dict):
        d = controller_dir("cpu", cgroup_path)
        if "shares" in cpu:
            _write(d / "cpu.shares", int(cpu["shares"]))
        if "period" in cpu:
            _write(d / "cpu.cfs_period_us", int(cpu["period"]))
        if "quota" in cpu:
            _write(d / "cpu.cfs_quota_us", int(cpu["quota"]))
    mem = resources.get("memory")
    if isinstance(mem, dict) and "limit" in mem:
        _set_memory(controller_dir("memory", cgroup_path), int(mem["limit"]))
    pids = resources.get("pids")
    if isinstance(pids, dict) and "limit" in pids:
        limit = int(pids["limit"])
        _write(controller_dir("pids", cgroup_path) / "pids.max", "max" if limit <= 0 else limit)


def place_processes(
    cgroup_path: str, resources: dict[str, object], pids: list[int], memory_pids: list[int]
) -> None:
    """Create ``cgroup_path``, set its limits, and move processes into it.

    For runtimes that cannot manage cgroups here (runsc on hybrid hosts): the
    limits then hold sandbox-wide. ``memory_pids`` (a subset of ``pids``) are
    the ones whose memory counts against the limit; helpers left out of it
    (gVisor's gofer) would otherwise eat a small container's budget.
    """
    for controller in _SANDBOX_CONTROLLERS:
        controller_dir(controller, cgroup_path).mkdir(parents=True, exist_ok=True)
    write_limits(cgroup_path, resources)
    for controller in _SANDBOX_CONTROLLERS:
        procs = controller_dir(controller, cgroup_path) / "cgroup.procs"
        for pid in memory_pids if controller == "memory" else pids:
            try:
                _write(procs, pid)
            except ProcessLookupError:
                pass


def _cgroup2_mount() -> tuple[str, list[str]] | None:
    """Mount point and options of the cgroup2 hierarchy (the unified one on a hybrid host)."""
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 4 and fields[2] == "cgroup2":
                    return fields[1], fields[3].split(",")
    except OSError:
        pass
    return None


def favor_dynamic_changes() -> bool:
    """Remount cgroup2 with ``favordynmods``; True when it is in force.

    Every container start moves a task into a new cgroup. Without this option the
    kernel's threadgroup lock makes such a move wait for an RCU grace period, about
    10 ms on these machines, on the critical path of every start and exec; with it,
    moves are cheap and forks and exits pay slightly more. The option is global to
    the kernel (any cgroup2 mount sets it) and stays until the next boot.
    """
    found = _cgroup2_mount()
    if found is None:
        log.info("no cgroup2 mount: cannot set favordynmods")
        return False
    path, options = found
    if "favordynmods" in options:
        return True
    # mount(8) keeps the mount's other options on a remount.
    res = subprocess.run(["mount", "-o", "remount,favordynmods", path], capture_output=True, text=True)
    if res.returncode != 0:
        log.warning("could not remount %s with favordynmods (container starts stay slower): %s",
                    path, res.stderr.strip())
        return False
    return True
