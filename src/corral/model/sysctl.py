"""Kernel parameters a group sets in its own network namespace (Corral extension, like Kubernetes' pod sysctls).

Only namespaced ``net.*`` parameters with numeric values: they change the group's network namespace and
nothing of the node (the node checks that the parameter exists inside the group's namespace, which only a
namespaced one does). ``net.ipv4.ip_forward: 1`` makes a group a router (a route table's VirtualAppliance).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, field_validator

# net.ipv4.*, net.ipv6.*, net.core.* (the namespaced ones, e.g. somaxconn); never net.netfilter.*, whose
# conntrack limits were node-wide on older kernels.
NAME_RE = re.compile(r"^net\.(ipv4|ipv6|core)(\.[A-Za-z0-9_-]+)+$")
VALUE_RE = re.compile(r"^-?[0-9]+([ \t]+-?[0-9]+)*$")
MAX_SYSCTLS = 32


class Sysctl(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    value: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if len(v) > 128 or not NAME_RE.match(v):
            raise ValueError(f"'{v}' is not a sysctl a group may set: only namespaced net.ipv4.*, net.ipv6.* and "
                             "net.core.* parameters (e.g. net.ipv4.ip_forward)")
        return v

    @field_validator("value", mode="before")
    @classmethod
    def _value(cls, v: object) -> object:
        if isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        if not isinstance(v, str) or len(v) > 64 or not VALUE_RE.match(v.strip()):
            raise ValueError(f"{v!r} is not a sysctl value a group may set: integers separated by spaces")
        return v.strip()

    @property
    def path(self) -> str:
        """Where the parameter is under /proc/sys."""
        return "/proc/sys/" + self.name.replace(".", "/")


def check_sysctls(items: list[Sysctl]) -> list[Sysctl]:
    names = [s.name for s in items]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"sysctl {', '.join(dup)} given more than once")
    if len(items) > MAX_SYSCTLS:
        raise ValueError(f"at most {MAX_SYSCTLS} sysctls per group")
    return items
