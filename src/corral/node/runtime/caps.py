"""Linux capability names: the default set common runtimes grant, and all of them."""

from __future__ import annotations

from pathlib import Path

from corral.errors import InvalidRequest

# The set Docker/containerd give a non-privileged container.
DEFAULT_CAPS: tuple[str, ...] = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

# Index = capability number (include/uapi/linux/capability.h).
ALL_CAPS: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip


def normalize(name: str) -> str:
    """Accept ``NET_RAW``, ``net_raw`` or ``CAP_NET_RAW``; ``ALL`` passes through."""
    up = name.strip().upper()
    if up == "ALL":
        return up
    full = up if up.startswith("CAP_") else f"CAP_{up}"
    if full not in ALL_CAPS:
        raise InvalidRequest(f"unknown capability {name!r}; use names like NET_ADMIN or CAP_NET_ADMIN")
    return full


def host_bounding() -> set[str]:
    """Capabilities this process may hand out (e.g. root here lacks CAP_SYS_RESOURCE)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapBnd:"):
                mask = int(line.split()[1], 16)
                return {c for i, c in enumerate(ALL_CAPS) if mask >> i & 1}
    except OSError:
        pass
    return set(ALL_CAPS)


def effective_set(add: list[str], drop: list[str], privileged: bool) -> list[str]:
    """Capabilities after applying drop then add (Kubernetes order: add wins over drop)."""
    available = host_bounding()
    if privileged:
        return [c for c in ALL_CAPS if c in available]
    drops = {normalize(c) for c in drop}
    adds = {normalize(c) for c in add}
    if "ALL" in adds:
        adds = set(available)
    missing = sorted(adds - available)
    if missing:
        raise InvalidRequest(f"capabilities not available on this node: {', '.join(missing)}")
    caps = set() if "ALL" in drops else set(DEFAULT_CAPS) - drops
    caps |= adds
    return [c for c in ALL_CAPS if c in caps and c in available]


def capset_bits(caps: list[str]) -> int:
    """Bitmask as shown in /proc/<pid>/status CapEff (for tests and diagnostics)."""
    return sum(1 << ALL_CAPS.index(c) for c in caps)
