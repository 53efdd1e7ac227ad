"""Node runtime: OCI specs, crun/runc/runsc under conmon, cgroups."""

from corral.node.runtime.runtime import ContainerState, ExitWatcher, Runtime
from corral.node.runtime.spec import MountSpec, SecurityContext, SpecRequest, build_spec

__all__ = [
    "ContainerState",
    "ExitWatcher",
    "MountSpec",
    "Runtime",
    "SecurityContext",
    "SpecRequest",
    "build_spec",
]
