"""cgroup v1 helpers: where a container's cgroup lives in each hierarchy, reading it, removing it."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


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
