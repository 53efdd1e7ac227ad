"""Memory and pids limits really bite (real crun + conmon, root only)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from runtime_support import NEEDS_CRUN

from corral.node.runtime import cgroups
from corral.node.runtime.runtime import Runtime
from corral.node.runtime.spec import SpecRequest, build_spec

pytestmark = NEEDS_CRUN


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[tuple[Runtime, str]]:
    runtime = Runtime(tmp_path / "state")
    cg_root = f"/corral-rttest/{uuid.uuid4().hex[:8]}"
    try:
        yield runtime, cg_root
    finally:
        for cid in runtime.list_ids():
            try:
                runtime.delete(cid)
            except Exception as e:  # noqa: BLE001 - keep cleaning the rest
                print(f"cleanup of {cid} failed: {e}")
        cgroups.remove_cgroup(cg_root)
        for h in cgroups.hierarchies():
            try:
                os.rmdir(h / "corral-rttest")
            except OSError:
                pass


def _spec(rootfs: Path, cg: str, args: list[str], **kw: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dict(
        rootfs=rootfs, args=args, hostname="t", cpu=0.5, cpu_limit=1.0, memory_bytes=64 << 20, cgroup_path=cg
    )
    fields.update(kw)
    return build_spec(SpecRequest(**fields))


def test_oom_kill_is_reported(rt: tuple[Runtime, str], rootfs: Path, tmp_path: Path) -> None:
    runtime, cg_root = rt
    cid = f"rttest-{uuid.uuid4().hex[:10]}"
    hog = ["sh", "-c", "x=a; while true; do x=$x$x; done"]
    runtime.run(cid, _spec(rootfs, f"{cg_root}/{cid}", hog, memory_bytes=16 << 20), tmp_path / "oom.log")
    assert runtime.wait_exit(cid, 120)
    st = runtime.state(cid)
    assert st.status == "stopped" and st.oom_killed and st.exit_code == 137


def test_normal_exit_is_not_oom(rt: tuple[Runtime, str], rootfs: Path, tmp_path: Path) -> None:
    runtime, cg_root = rt
    cid = f"rttest-{uuid.uuid4().hex[:10]}"
    runtime.run(cid, _spec(rootfs, f"{cg_root}/{cid}", ["true"]), tmp_path / "ok.log")
    assert runtime.wait_exit(cid, 30)
    st = runtime.state(cid)
    assert (st.exit_code, st.oom_killed) == (0, False)


def test_pids_limit_stops_a_fork_bomb(rt: tuple[Runtime, str], rootfs: Path, tmp_path: Path) -> None:
    runtime, cg_root = rt
    cid = f"rttest-{uuid.uuid4().hex[:10]}"
    cg = f"{cg_root}/{cid}"
    bomb = ["sh", "-c", "b() { b | b & }; b; sleep 1000"]
    runtime.run(cid, _spec(rootfs, cg, bomb, pids_limit=16), tmp_path / "bomb.log")
    # Wait (bounded) until the bomb has hit the limit at least once.
    deadline = time.monotonic() + 60
    refused = 0
    while time.monotonic() < deadline:
        events = cgroups.read_value("pids", cg, "pids.events")
        refused = int(events.split()[1])
        if refused > 0:
            break
        time.sleep(0.05)
    assert refused > 0
    assert int(cgroups.read_value("pids", cg, "pids.current")) <= 16
    runtime.delete(cid)
    assert cgroups.cgroup_exists_anywhere(cg) == []
