"""Warm containers on the runtime alone (Runtime.start_warm / bind_warm), against real crun + conmon.

A warm container is started ahead with every part of a container but its command; binding
it gives it a container's command, environment and limits. One that never got a command
must never run anything, and one that did is never run again.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from runtime_support import NEEDS_CRUN, Containers, new_id

from corral import native
from corral.errors import RuntimeFailure
from corral.node.logs import read_logs
from corral.node.runtime import _sys, warm
from corral.node.runtime.runtime import Runtime, WarmContainer

pytestmark = [*NEEDS_CRUN, pytest.mark.skipif(
    native.installed(_sys.SHIM) is None or warm.init_path() is None,
    reason="needs the native crun shim and the warm init (make venv)")]


def _warm(box: Containers, rt: Runtime | None = None) -> WarmContainer:
    wid = warm.PREFIX + new_id()[-10:]
    spec = box.spec(wid, list(warm.ARGS), cpu=0, cpu_limit=0, memory_bytes=0)
    return (rt or box.rt).start_warm(wid, spec)


def _limits() -> dict[str, object]:
    return {"cpu": {"shares": 256, "period": 100000, "quota": 50000},
            "memory": {"limit": 48 << 20, "swap": 48 << 20, "swappiness": 0}, "pids": {"limit": 64}}


def _nothing_left(box: Containers, wid: str) -> None:
    rt = box.rt
    assert rt.warm_ids() == [] and rt.list_ids() == []
    assert not (rt.exits_dir / wid).exists()
    assert not list(rt.containers_dir.iterdir())
    assert not Path(f"/sys/fs/cgroup/memory{box.cg_root}/{wid}").exists()


def test_a_bound_warm_container_runs_the_containers_command_with_its_environment_and_limits(
        box: Containers) -> None:
    w = _warm(box)
    assert box.rt.warm_waiting(w)
    # Ready and waiting: a real container in every way but its command.
    assert Path(os.readlink(f"/proc/{w.pid}/exe")) == warm.init_path().resolve()
    cid = new_id()
    st = box.rt.bind_warm(w, cid, "/tmp", ["sh", "-c", "echo $GREETING from $(pwd); ls /; exec sleep 3600"],
                          ["PATH=/bin:/usr/bin", "GREETING=hello"], _limits())
    assert st.status == "running" and st.pid == w.pid and st.started_at is not None
    assert box.rt.state(cid).status == "running" and box.rt.list_ids() == [cid]
    cmdline = Path(f"/proc/{w.pid}/cmdline")
    deadline = time.monotonic() + 10
    while cmdline.read_bytes() != b"sleep\x003600\x00" and time.monotonic() < deadline:
        time.sleep(0.02)  # the shell's exec comes after its output
    assert cmdline.read_bytes() == b"sleep\x003600\x00"
    out = read_logs(box.rt.log_path(cid))
    assert out.startswith("hello from /tmp\n")
    assert "corral-warm-init" not in out  # nothing of the init is in the container's file system
    # The container's limits, where the kernel enforces them.
    cg = box.rt.cgroup_path(cid)
    assert Path(f"/sys/fs/cgroup/memory{cg}/memory.limit_in_bytes").read_text().strip() == str(48 << 20)
    assert Path(f"/sys/fs/cgroup/cpu{cg}/cpu.cfs_quota_us").read_text().strip() == "50000"
    assert Path(f"/sys/fs/cgroup/pids{cg}/pids.max").read_text().strip() == "64"
    # What exec and inspection read is the container's command, not the init's.
    cfg = box.rt._config(cid)
    assert cfg is not None and cfg["process"]["args"][0] == "sh" and "GREETING=hello" in cfg["process"]["env"]
    # Its exit is the container's: seen under its own id, with its code.
    with box.rt.exit_watcher() as watcher:
        box.rt.kill(cid, signal.SIGKILL)
        seen: list[str] = []
        deadline = time.monotonic() + 10
        while cid not in seen and time.monotonic() < deadline:
            seen += watcher.wait(1.0)
    assert cid in seen
    st = box.rt.state(cid)
    assert (st.status, st.exit_code) == ("stopped", 137)
    box.rt.delete(cid)
    _nothing_left(box, w.wid)


def test_a_command_that_cannot_start_is_a_clear_error(box: Containers) -> None:
    w = _warm(box)
    cid = new_id()
    with pytest.raises(RuntimeFailure) as err:
        box.rt.bind_warm(w, cid, "/", ["/no/such/binary"], ["PATH=/bin"], {})
    assert "cannot run /no/such/binary" in err.value.message
    w2 = _warm(box)
    with pytest.raises(RuntimeFailure) as err:
        box.rt.bind_warm(w2, new_id(), "/no/such/dir", ["true"], ["PATH=/bin"], {})
    assert "working directory /no/such/dir" in err.value.message
    for c in box.rt.list_ids():
        box.rt.delete(c)
    _nothing_left(box, w.wid)


def test_a_discarded_warm_container_ran_nothing_and_leaves_nothing(box: Containers) -> None:
    w = _warm(box)
    w.fifos.close()  # no command ever comes: the init exits on its own
    assert _sys.wait_pid_exit(w.pid, 10)
    assert box.rt.owner_of(w.wid) is None
    box.rt.discard_warm(w.wid)
    _nothing_left(box, w.wid)


def test_after_a_restart_unbound_ones_go_undelivered_ones_start_afresh_and_started_ones_stay(
        box: Containers) -> None:
    idle = _warm(box)
    started = _warm(box)
    undelivered = _warm(box)
    started_cid, undelivered_cid = new_id(), new_id()
    box.rt.bind_warm(started, started_cid, "/", ["sleep", "3600"], ["PATH=/bin"], {})
    # The agent died after giving the command, before recording the start.
    meta = box.rt._meta(started_cid)
    assert meta is not None
    meta.started_at = None
    box.rt._save_meta(started_cid, meta)
    # ...and another died between linking a warm container to its container and giving the command.
    (box.rt.warm_dir / undelivered.wid / "owner").write_text(undelivered_cid)
    os.symlink(f"../warm/{undelivered.wid}", box.rt.containers_dir / undelivered_cid)

    # A new agent: the old one's FIFO ends are gone with it.
    for w in (idle, started, undelivered):
        w.fifos.close()
    assert _sys.wait_pid_exit(idle.pid, 10) and _sys.wait_pid_exit(undelivered.pid, 10)
    rt = Runtime(box.rt.state_dir)
    rt.recover_warm()

    assert rt.warm_ids() == [started.wid]
    assert rt.list_ids() == [started_cid]  # the undelivered one is gone: its container starts afresh
    st = rt.state(started_cid)
    assert st.status == "running" and st.pid == started.pid and st.started_at is not None
    assert Path(f"/proc/{started.pid}/cmdline").read_bytes() == b"sleep\x003600\x00"
    rt.delete(started_cid)
    _nothing_left(box, started.wid)
