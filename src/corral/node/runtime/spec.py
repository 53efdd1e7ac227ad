"""Build a complete OCI runtime spec (config.json) from what a container needs."""

from __future__ import annotations

import os
import resource
import stat
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from corral.errors import InvalidRequest
from corral.node.runtime import caps as capmod
from corral.node.runtime.seccomp import default_profile
from corral.node.runtime.users import resolve_user

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CFS_PERIOD = 100_000
SHARES_PER_CORE = 1024
NOFILE_WANTED = 20_000  # root lacks CAP_SYS_RESOURCE here: never above the host's hard limit

NamespaceType = Literal["network", "uts", "ipc", "pid", "mount"]

MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]  # fmt: skip
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


class MountSpec(BaseModel):
    """An extra bind mount from the host (volumes, /etc/hosts, /etc/resolv.conf, ...)."""

    source: Path
    destination: str
    read_only: bool = False

    @field_validator("destination")
    @classmethod
    def _absolute(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"mount destination {v!r} must be an absolute path")
        return v


class SecurityContext(BaseModel):
    """Kubernetes/ACI-style securityContext."""

    privileged: bool = False
    capabilities_add: list[str] = []
    capabilities_drop: list[str] = []
    run_as_user: int | None = Field(default=None, ge=0)
    run_as_group: int | None = Field(default=None, ge=0)
    supplemental_groups: list[int] = []
    # None = the safe default (no_new_privs on); True lets setuid binaries raise privileges.
    allow_privilege_escalation: bool | None = None
    read_only_root_filesystem: bool = False
    seccomp: Literal["default", "unconfined"] = "default"


class SpecRequest(BaseModel):
    rootfs: Path
    args: list[str] = Field(min_length=1)
    env: list[str] = []
    cwd: str = "/"
    user: str = ""  # "uid[:gid]" or a name from the rootfs /etc/passwd
    hostname: str
    cpu: float = Field(ge=0)  # request in cores -> cpu.shares
    cpu_limit: float = Field(ge=0)  # cores -> CFS quota; 0 = unlimited
    memory_bytes: int = Field(ge=0)  # hard limit, no swap; 0 = unlimited
    pids_limit: int = Field(default=1024, ge=0)  # 0 = unlimited
    cgroup_path: str
    namespace_paths: dict[NamespaceType, str] = {}  # join these; the others are new
    mounts: list[MountSpec] = []
    terminal: bool = False
    console_rows: int = Field(default=24, ge=1)
    console_cols: int = Field(default=80, ge=1)
    security: SecurityContext = SecurityContext()
    annotations: dict[str, str] = {}

    @field_validator("cgroup_path")
    @classmethod
    def _cgroup_abs(cls, v: str) -> str:
        if not v.startswith("/") or v.strip("/") == "" or ".." in v.split("/"):
            raise ValueError(f"cgroup_path {v!r} must be an absolute path below the root, e.g. /corral/g/c")
        return v


def _nofile_limit() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return NOFILE_WANTED if hard == resource.RLIM_INFINITY else min(NOFILE_WANTED, hard)


def _base_mounts(privileged: bool) -> list[dict[str, Any]]:
    ro = [] if privileged else ["ro"]
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", *ro]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", *ro]},
    ]  # fmt: skip


# crun creates these itself; listing them again would collide.
_DEFAULT_DEVICES = {"null", "zero", "full", "tty", "random", "urandom", "console", "ptmx"}


def _host_devices() -> list[dict[str, Any]]:
    """Top-level host device nodes, for privileged containers."""
    devs: list[dict[str, Any]] = []
    for name in sorted(os.listdir("/dev")):
        if name in _DEFAULT_DEVICES:
            continue
        path = f"/dev/{name}"
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode):
            kind = "c"
        elif stat.S_ISBLK(st.st_mode):
            kind = "b"
        else:
            continue
        devs.append({
            "path": path, "type": kind, "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
            "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
        })  # fmt: skip
    return devs


def _resources(req: SpecRequest) -> dict[str, Any]:
    res: dict[str, Any] = {"devices": [{"allow": req.security.privileged, "access": "rwm"}]}
    cpu: dict[str, Any] = {}
    if req.cpu > 0:
        cpu["shares"] = max(2, int(round(req.cpu * SHARES_PER_CORE)))
    if req.cpu_limit > 0:
        cpu["quota"] = max(1000, int(round(req.cpu_limit * CFS_PERIOD)))
        cpu["period"] = CFS_PERIOD
    if cpu:
        res["cpu"] = cpu
    if req.memory_bytes > 0:
        # swap == limit forbids swap where memsw accounting exists; swappiness 0 keeps
        # anonymous memory out of swap where it does not (swapaccount=0 kernels).
        res["memory"] = {"limit": req.memory_bytes, "swap": req.memory_bytes, "swappiness": 0}
    if req.pids_limit > 0:
        res["pids"] = {"limit": req.pids_limit}
    return res


def build_spec(req: SpecRequest) -> dict[str, Any]:
    """Full OCI runtime spec; the shape follows `crun spec`, with common-runtime defaults."""
    sec = req.security
    user = resolve_user(req.rootfs, req.user, sec.run_as_user, sec.run_as_group)
    cap_list = capmod.effective_set(sec.capabilities_add, sec.capabilities_drop, sec.privileged)
    # Like Docker: a non-root process keeps capabilities only in its bounding set.
    active = cap_list if user.uid == 0 else []
    env = list(req.env)
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, DEFAULT_PATH)
    if not any(e.startswith("HOME=") for e in env):
        env.append(f"HOME={user.home}")
    if req.terminal and not any(e.startswith("TERM=") for e in env):
        env.append("TERM=xterm")
    nofile = _nofile_limit()
    no_new_privs = not sec.privileged and sec.allow_privilege_escalation is not True
    if sec.privileged and sec.allow_privilege_escalation is False:
        raise InvalidRequest("allowPrivilegeEscalation cannot be false for a privileged container")

    gids = [*user.additional_gids, *(g for g in sec.supplemental_groups if g not in user.additional_gids)]
    process: dict[str, Any] = {
        "terminal": req.terminal,
        "user": {"uid": user.uid, "gid": user.gid, **({"additionalGids": gids} if gids else {})},
        "args": list(req.args),
        "env": env,
        "cwd": req.cwd,
        "capabilities": {
            "bounding": cap_list, "effective": active, "permitted": active,
            "inheritable": [], "ambient": [],
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
        "noNewPrivileges": no_new_privs,
    }  # fmt: skip
    if req.terminal:
        process["consoleSize"] = {"height": req.console_rows, "width": req.console_cols}

    namespaces: list[dict[str, str]] = []
    for ns in ("pid", "network", "ipc", "uts", "mount"):
        entry = {"type": ns}
        if ns in req.namespace_paths:
            entry["path"] = req.namespace_paths[ns]  # type: ignore[index]
        namespaces.append(entry)

    mounts = _base_mounts(sec.privileged)
    for m in req.mounts:
        opts = ["rbind", "rprivate", "ro" if m.read_only else "rw"]
        mounts.append({"destination": m.destination, "type": "bind", "source": str(m.source), "options": opts})

    linux: dict[str, Any] = {
        "cgroupsPath": req.cgroup_path,
        "resources": _resources(req),
        "namespaces": namespaces,
    }
    if sec.privileged:
        linux["devices"] = _host_devices()
    else:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
        if sec.seccomp == "default":
            linux["seccomp"] = default_profile(cap_list)

    spec: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": str(req.rootfs), "readonly": sec.read_only_root_filesystem},
        "hostname": req.hostname,
        "mounts": mounts,
        "linux": linux,
    }
    if req.annotations:
        spec["annotations"] = dict(req.annotations)
    return spec
