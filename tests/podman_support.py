"""Podman as a baseline and as a CNI runtime on these machines (see /work/shared/RECIPES.md)."""

# runc with cgroupfs; file events (no journald); nofile within root's hard limit (no CAP_SYS_RESOURCE).
PODMAN_CONF = """[containers]
default_ulimits = ["nofile=1024:20000", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime = "runc"
"""
