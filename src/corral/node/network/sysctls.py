"""A group's sysctls (``properties.sysctls``), set inside its network namespace.

Only a namespaced parameter exists under /proc/sys/net for a thread that joined another network namespace
(the node-wide ones are registered for the node's namespace alone), so a missing file is the check that
the parameter would change nothing but the group's own network.
"""

from __future__ import annotations

from corral.errors import NetworkFeatureUnsupported
from corral.model.sysctl import Sysctl
from corral.node.network import _libc, nsthread


def apply(netns_path: str, sysctls: list[Sysctl]) -> None:
    """Set ``sysctls`` in the network namespace at ``netns_path``; only values that differ are written."""

    def work() -> None:
        for s in sysctls:
            try:
                with open(s.path) as f:
                    if f.read().split() == s.value.split():
                        continue
                with open(s.path, "w") as f:
                    f.write(s.value)
            except (FileNotFoundError, IsADirectoryError):
                raise NetworkFeatureUnsupported(
                    f"sysctl {s.name} is not a per-network-namespace parameter of this node's kernel; a group can "
                    "set only those", target="properties.sysctls") from None
            except PermissionError:
                raise NetworkFeatureUnsupported(f"sysctl {s.name} is read-only", target="properties.sysctls") from None
            except OSError as exc:  # EINVAL: a value the kernel refuses
                raise NetworkFeatureUnsupported(f"sysctl {s.name}={s.value} was refused: {exc.strerror}",
                                                target="properties.sysctls") from None

    nsthread.in_namespace(netns_path, _libc.CLONE_NEWNET, work, name="corral-sysctl")
