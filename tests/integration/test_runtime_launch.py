"""A container's conmon started ahead of its bundle (Runtime.launch), against real crun + conmon.

The node agent starts conmon first and mounts the rootfs and writes the spec while it
starts; crun waits at a gate until then. A start that is cancelled, or whose agent
dies first, must never run.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from runtime_support import NEEDS_CRUN, Containers, new_id

from corral import native
from corral.errors import RuntimeFailure
from corral.node.logs import read_logs
from corral.node.runtime import _sys, cgroups
from corral.node.runtime.runtime import Runtime

pytestmark = [*NEEDS_CRUN, pytest.mark.skipif(native.installed(_sys.SHIM) is None,
                                              reason="needs the native crun shim (make venv)")]


def _conmon_pid(rt: Runtime, cid: str, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return int((rt.bundle(cid) / "conmon.pid").read_text())
        except (FileNotFoundError, ValueError):
            time.sleep(0.01)
    raise AssertionError(f"conmon of {cid} wrote no pid file")


def _gone(pid: int, timeout: float = 10) -> bool:
    return _sys.wait_pid_exit(pid, timeout)


def _cgroup_made(box: Containers, cid: str) -> bool:
    return Path(f"/sys/fs/cgroup/memory{box.cg_root}/{cid}").exists()


def _never_ran(box: Containers, cid: str) -> bool:
    """What the runtime shows for a creation that never finished: no start, no exit code, no cgroup."""
    st = box.rt.state(cid)
    return (st.status, st.started_at, st.exit_code) == ("stopped", None, None) and not _cgroup_made(box, cid)


def test_a_launched_container_starts_only_when_its_spec_is_given(box: Containers) -> None:
    cid = new_id()
    log = box.log(cid)
    launched = box.rt.launch(cid, log)
    assert launched is not None
    _conmon_pid(box.rt, cid)
    time.sleep(0.3)  # conmon and the shim are up; crun must still be waiting at the gate
    assert box.rt.state(cid).status != "running" and not _cgroup_made(box, cid)
    st = box.rt.run(cid, box.spec(cid, ["sh", "-c", "echo from-the-late-spec; exit 4"]), log, launched=launched)
    assert st.status == "running" and st.pid
    assert box.rt.wait_exit(cid, 30)
    st = box.rt.state(cid)
    assert (st.status, st.exit_code) == ("stopped", 4)
    assert read_logs(log) == "from-the-late-spec\n"
    assert not (box.rt.bundle(cid) / "gate").exists()
    box.rt.delete(cid)


def test_a_launched_start_that_crun_refuses_is_a_clear_error_and_leaves_nothing(box: Containers) -> None:
    cid = new_id()
    launched = box.rt.launch(cid, box.log(cid))
    assert launched is not None
    with pytest.raises(RuntimeFailure) as err:
        box.rt.run(cid, box.spec(cid, ["/no/such/binary"]), box.log(cid), launched=launched)
    assert "/no/such/binary" in err.value.message and "not found" in err.value.message
    assert box.rt.state(cid).status == "absent"
    assert cid not in box.rt.list_ids()
    assert cgroups.cgroup_exists_anywhere(f"{box.cg_root}/{cid}") == []


def test_a_cancelled_launch_never_runs_and_the_id_can_be_used_again(box: Containers) -> None:
    cid = new_id()
    launched = box.rt.launch(cid, box.log(cid))
    assert launched is not None
    monitor = _conmon_pid(box.rt, cid)
    launched.cancel()
    launched.cancel()  # twice is harmless
    assert _gone(monitor)
    assert _never_ran(box, cid)
    box.rt.delete(cid)
    assert not box.rt.bundle(cid).exists()
    box.rt.run(cid, box.spec(cid, ["sh", "-c", "exit 0"]), box.log(cid))
    assert box.rt.wait_exit(cid, 30) and box.rt.state(cid).exit_code == 0
    box.rt.delete(cid)


def test_a_launch_whose_agent_dies_before_the_spec_never_runs(box: Containers) -> None:
    """The agent is SIGKILLed between launch and run: its gate closes with it, and crun never runs."""
    cid = new_id()
    agent = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from corral.node.runtime.runtime import Runtime
        rt = Runtime({str(box.rt.state_dir)!r})
        assert rt.launch({cid!r}, {str(box.log(cid))!r}) is not None
        print("launched", flush=True)
        time.sleep(600)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert agent.stdout is not None and agent.stdout.readline().strip() == "launched"
        monitor = _conmon_pid(box.rt, cid)
        agent.send_signal(signal.SIGKILL)
        agent.wait(10)
        assert _gone(monitor)  # the shim saw the gate close and gave up; conmon with it
        assert _never_ran(box, cid)
    finally:
        agent.kill()
        agent.wait()
        box.rt.delete(cid)
    assert not box.rt.bundle(cid).exists()


def test_without_the_native_shim_crun_runs_behind_util_linux(box: Containers,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A node built without a C compiler: unshare + umount + sh do the shim's work, and nothing waits."""
    monkeypatch.setattr(native, "installed", lambda name: None)
    assert not _sys.gated(_sys.runtime_prefix(create_runs=True))
    rt = Runtime(box.tmp / "state-no-shim")
    cid = new_id()
    assert rt.launch(cid, box.log(cid)) is None
    st = rt.run(cid, box.spec(cid, ["sh", "-c", "echo plain; exit 5"]), box.log(cid))
    assert st.status == "running"
    assert rt.wait_exit(cid, 30) and rt.state(cid).exit_code == 5
    assert read_logs(box.log(cid)) == "plain\n"
    rt.delete(cid)
