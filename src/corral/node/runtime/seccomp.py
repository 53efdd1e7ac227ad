"""Default seccomp profile: allow everything except syscalls that reach outside the container.

A deny-list (defaultAction ALLOW) keeps unknown/new syscalls working; the denied
ones fail with EPERM unless a granted capability legitimately needs them.
"""

from __future__ import annotations

from typing import Any

EPERM = 1

_DENY: tuple[str, ...] = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
    "finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms", "init_module",
    "ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie",
    "mount", "mount_setattr", "move_mount", "name_to_handle_at", "nfsservctl", "open_by_handle_at",
    "open_tree", "perf_event_open", "pivot_root", "process_vm_readv", "process_vm_writev", "ptrace",
    "query_module", "quotactl", "quotactl_fd", "reboot", "request_key", "setns", "settimeofday",
    "stime", "swapoff", "swapon", "_sysctl", "umount", "umount2", "unshare", "uselib",
    "userfaultfd", "ustat", "vm86", "vm86old",
)  # fmt: skip

# A granted capability re-allows the syscalls it exists for (as Docker's profile does).
_CAP_ALLOWS: dict[str, tuple[str, ...]] = {
    "CAP_SYS_ADMIN": (
        "mount", "umount", "umount2", "unshare", "setns", "pivot_root", "fsconfig", "fsmount",
        "fsopen", "fspick", "move_mount", "open_tree", "mount_setattr", "quotactl", "quotactl_fd",
        "name_to_handle_at", "lookup_dcookie", "perf_event_open", "bpf",
    ),
    "CAP_SYS_PTRACE": ("ptrace", "process_vm_readv", "process_vm_writev", "kcmp"),
    "CAP_SYS_MODULE": ("init_module", "finit_module", "delete_module", "create_module", "query_module"),
    "CAP_SYS_TIME": ("settimeofday", "stime", "clock_settime", "clock_adjtime"),
    "CAP_SYS_BOOT": ("reboot", "kexec_load", "kexec_file_load"),
    "CAP_SYS_PACCT": ("acct",),
    "CAP_SYS_RAWIO": ("iopl", "ioperm"),
    "CAP_DAC_READ_SEARCH": ("open_by_handle_at",),
    "CAP_BPF": ("bpf",),
    "CAP_PERFMON": ("perf_event_open",),
}  # fmt: skip

DENIED_SYSCALLS = frozenset(_DENY)


def default_profile(caps: list[str]) -> dict[str, Any]:
    allowed: set[str] = set()
    for cap in caps:
        allowed.update(_CAP_ALLOWS.get(cap, ()))
    names = [s for s in _DENY if s not in allowed]
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [{"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM}],
    }
