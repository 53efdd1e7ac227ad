"""Linux capability names: the default set common runtimes grant, and all of them."""

from __future__ import annotations

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


def effective_set(add: list[str], drop: list[str], privileged: bool) -> list[str]:
    """Capabilities after applying drop then add (Kubernetes order: add wins over drop)."""
    if privileged:
        return list(ALL_CAPS)
    drops = {normalize(c) for c in drop}
    adds = {normalize(c) for c in add}
    caps = set() if "ALL" in drops else set(DEFAULT_CAPS) - drops
    caps |= set(ALL_CAPS) if "ALL" in adds else adds
    return [c for c in ALL_CAPS if c in caps]


def capset_bits(caps: list[str]) -> int:
    """Bitmask as shown in /proc/<pid>/status CapEff (for tests and diagnostics)."""
    return sum(1 << ALL_CAPS.index(c) for c in caps)
