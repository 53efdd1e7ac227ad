"""Host tuning `corral up` applies for fast container starts."""

from __future__ import annotations

from corral_server import CorralServer


def test_cgroup2_is_remounted_with_favordynmods(corral: CorralServer) -> None:
    with open("/proc/self/mounts") as f:
        cgroup2 = [line.split() for line in f if line.split()[2:3] == ["cgroup2"]]
    assert cgroup2, "this host has no cgroup2 mount"
    assert all("favordynmods" in fields[3].split(",") for fields in cgroup2), cgroup2
