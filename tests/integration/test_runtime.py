"""Runtime lifecycle against real crun + conmon (root only)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from runtime_support import NEEDS_CRUN, Containers, new_id

from corral.errors import RuntimeFailure
from corral.node.logs import follow_logs, read_logs
from corral.node.runtime import _sys, cgroups
from corral.node.runtime.runtime import Runtime

pytestmark = NEEDS_CRUN


def test_run_reports_running_then_exit(box: Containers) -> None:
    cid = new_id()
    log = box.log(cid)
    t0 = time.monotonic()
    st = box.rt.run(cid, box.spec(cid, ["sh", "-c", "echo hello; echo oops >&2; exec sleep 1000"]), log)
    print(f"create->running: {(time.monotonic() - t0) * 1000:.1f} ms")
    assert st.status == "running" and st.pid and st.started_at
    assert box.rt.state(cid).status == "running"
    box.rt.kill(cid, signal.SIGKILL)
    assert box.rt.wait_exit(cid, 30)
    st = box.rt.state(cid)
    assert st.status == "stopped" and st.finished_at is not None and not st.oom_killed
    assert st.exit_code == 137 and st.pid is None
    text = read_logs(log)
    assert "hello\n" in text and "oops\n" in text


def test_exit_code_three(box: Containers) -> None:
    cid = box.run(["sh", "-c", "echo line1; echo line2; echo line3; exit 3"])
    log = box.log(cid)
    assert box.rt.wait_exit(cid, 30)
    st = box.rt.state(cid)
    assert (st.status, st.exit_code) == ("stopped", 3)
    assert read_logs(log) == "line1\nline2\nline3\n"
    assert read_logs(log, tail=1) == "line3\n"
    stamped = read_logs(log, tail=2, timestamps=True).splitlines()
    assert len(stamped) == 2 and stamped[0].endswith(" line2") and stamped[0][:4].isdigit()


def test_sigkill_gives_137(box: Containers) -> None:
    cid = box.run(["sleep", "1000"])
    box.rt.kill(cid, signal.SIGKILL)
    assert box.rt.wait_exit(cid, 30)
    assert box.rt.state(cid).exit_code == 137


def test_stop_escalates_and_honours_trap(box: Containers) -> None:
    # pid 1 ignores SIGTERM without a handler: stop must escalate to SIGKILL.
    stubborn = box.run(["sleep", "1000"])
    st = box.rt.stop(stubborn, timeout=0.5)
    assert (st.status, st.exit_code) == ("stopped", 137)
    polite = box.run(["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"])
    st = box.rt.stop(polite, timeout=30)
    assert (st.status, st.exit_code) == ("stopped", 0)
    assert box.rt.stop(polite).status == "stopped"  # stopping again is harmless


def test_cgroup_limits_applied_and_updated(box: Containers) -> None:
    cid = box.run(["sleep", "1000"], cpu=0.25, cpu_limit=0.5, memory_bytes=48 << 20, pids_limit=77)
    cg = f"{box.cg_root}/{cid}"
    assert cgroups.read_value("cpu", cg, "cpu.cfs_quota_us") == "50000"
    assert cgroups.read_value("cpu", cg, "cpu.cfs_period_us") == "100000"
    assert cgroups.read_value("cpu", cg, "cpu.shares") == "256"
    assert cgroups.read_value("memory", cg, "memory.limit_in_bytes") == str(48 << 20)
    assert cgroups.read_value("memory", cg, "memory.memsw.limit_in_bytes") == str(48 << 20)
    assert cgroups.read_value("pids", cg, "pids.max") == "77"
    pid = box.rt.state(cid).pid
    assert str(pid) in cgroups.read_value("memory", cg, "cgroup.procs").split()

    box.rt.update_resources(cid, cpu=1.0, cpu_limit=1.5, memory_bytes=96 << 20)  # grow
    assert cgroups.read_value("cpu", cg, "cpu.cfs_quota_us") == "150000"
    assert cgroups.read_value("cpu", cg, "cpu.shares") == "1024"
    assert cgroups.read_value("memory", cg, "memory.limit_in_bytes") == str(96 << 20)
    assert cgroups.read_value("memory", cg, "memory.memsw.limit_in_bytes") == str(96 << 20)
    box.rt.update_resources(cid, cpu=0.5, cpu_limit=0.25, memory_bytes=32 << 20)  # shrink
    assert cgroups.read_value("cpu", cg, "cpu.cfs_quota_us") == "25000"
    assert cgroups.read_value("memory", cg, "memory.limit_in_bytes") == str(32 << 20)
    assert cgroups.read_value("memory", cg, "memory.memsw.limit_in_bytes") == str(32 << 20)


def test_bad_executable_is_a_clear_error_and_leaves_nothing(box: Containers) -> None:
    cid = new_id()
    with pytest.raises(RuntimeFailure) as err:
        box.rt.run(cid, box.spec(cid, ["/no/such/binary"]), box.tmp / "x.log")
    assert "/no/such/binary" in err.value.message and "not found" in err.value.message
    assert box.rt.state(cid).status == "absent"
    assert cid not in box.rt.list_ids()
    assert cgroups.cgroup_exists_anywhere(f"{box.cg_root}/{cid}") == []


def test_run_is_idempotent(box: Containers) -> None:
    cid = box.run(["sleep", "1000"])
    log = box.log(cid)
    first = box.rt.state(cid)
    again = box.rt.run(cid, box.spec(cid, ["sleep", "1000"]), log)
    assert again.pid == first.pid and again.status == "running"
    # A stopped container is replaced by a fresh one on the next run.
    box.rt.kill(cid, signal.SIGKILL)
    box.rt.wait_exit(cid, 30)
    fresh = box.rt.run(cid, box.spec(cid, ["sleep", "1000"]), log)
    assert fresh.status == "running" and fresh.pid != first.pid


def test_delete_leaves_nothing_behind(box: Containers) -> None:
    cid = box.run(["sleep", "1000"])
    bundle = box.rt.bundle(cid)
    conmon_pid = int((bundle / "conmon.pid").read_text())
    pid = box.rt.state(cid).pid
    assert pid and _sys.pid_alive(conmon_pid)
    box.rt.delete(cid)
    assert box.rt.state(cid).status == "absent"
    assert not _sys.pid_alive(pid) and not _sys.pid_alive(conmon_pid)
    assert cgroups.cgroup_exists_anywhere(f"{box.cg_root}/{cid}") == []
    assert not bundle.exists() and not (box.rt.exits_dir / cid).exists()
    mounts = Path("/proc/mounts").read_text()
    assert str(box.rt.state_dir) not in mounts and str(box.rootfs) not in mounts
    listing = subprocess.run(
        ["crun", "--root", str(box.rt.oci_root / "crun"), "list", "-q"], capture_output=True, text=True
    )
    assert cid not in listing.stdout
    box.rt.delete(cid)  # idempotent


def test_exit_watcher_reports_exits(box: Containers) -> None:
    with box.rt.exit_watcher() as watcher:
        cid = box.run(["sh", "-c", "exit 5"])
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while cid not in seen and time.monotonic() < deadline:
            seen += watcher.wait(deadline - time.monotonic())
    assert cid in seen and box.rt.state(cid).exit_code == 5


def test_two_containers_share_a_netns(box: Containers) -> None:
    netns = f"rtt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        ns = {"network": f"/var/run/netns/{netns}"}
        # busybox nc quits as soon as its stdin ends, possibly before reading the socket: keep it open.
        server = box.run(["sh", "-c", "sleep 1000 | nc -l -p 8080"], namespace_paths=ns)
        server_log = box.log(server)
        script = "for i in $(seq 100); do echo hi | nc 127.0.0.1 8080 && exit 0; sleep 0.1; done; exit 1"
        client = box.run(["sh", "-c", script], namespace_paths=ns)
        assert box.rt.wait_exit(client, 60) and box.rt.state(client).exit_code == 0
        deadline = time.monotonic() + 30
        lines = follow_logs(server_log, stop=lambda: time.monotonic() > deadline)
        assert next(lines, None) == "hi\n"
    finally:
        for cid in box.rt.list_ids():
            box.rt.delete(cid)
        subprocess.run(["ip", "netns", "delete", netns], check=False)


def test_container_survives_its_parent(box: Containers) -> None:
    cid = new_id()
    spec_json = __import__("json").dumps(box.spec(cid, ["sleep", "1000"]))
    (box.tmp / "spec.json").write_text(spec_json)
    script = textwrap.dedent(f"""
        import json, sys, time
        from pathlib import Path
        from corral.node.runtime.runtime import Runtime
        rt = Runtime(Path({str(box.rt.state_dir)!r}))
        spec = json.loads(Path({str(box.tmp / "spec.json")!r}).read_text())
        st = rt.run({cid!r}, spec, Path({str(box.tmp / "parent.log")!r}))
        print(st.status, flush=True)
        time.sleep(1000)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline().strip() == "running"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        fresh = Runtime(box.rt.state_dir)
        assert cid in fresh.list_ids()
        st = fresh.state(cid)
        assert st.status == "running" and st.pid and _sys.pid_alive(st.pid)
        fresh.kill(cid, signal.SIGKILL)
        assert fresh.wait_exit(cid, 30) and fresh.state(cid).exit_code == 137
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()


def test_stats_report_usage(box: Containers) -> None:
    cid = box.run(["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exec sleep 1000"])
    stats = box.rt.stats(cid)
    assert stats is not None
    assert stats.memory_limit_bytes == 64 << 20 and stats.pids_current >= 1
    assert stats.memory_usage_bytes > 0 and stats.cpu_usage_ns > 0
    box.rt.delete(cid)
    assert box.rt.stats(cid) is None


def test_adopts_a_start_the_agent_did_not_record(box: Containers) -> None:
    # Simulate a crash between `crun start` and writing started_at.
    cid = box.run(["sleep", "1000"])
    log = box.log(cid)
    meta_file = box.rt.bundle(cid) / "meta.json"
    meta = __import__("json").loads(meta_file.read_text())
    pid = meta["pid"]
    meta["started_at"] = None
    meta_file.write_text(__import__("json").dumps(meta))
    st = box.rt.state(cid)
    assert st.status == "running" and st.pid == pid and st.started_at is not None
    assert box.rt.run(cid, box.spec(cid, ["sleep", "1000"]), log).pid == pid


def test_log_size_max_truncates(box: Containers) -> None:
    cid = new_id()
    log = box.log(cid)
    script = "i=0; while [ $i -lt 3000 ]; do echo line-$i; i=$((i+1)); done"
    box.rt.run(cid, box.spec(cid, ["sh", "-c", script]), log, log_size_max=16384)
    assert box.rt.wait_exit(cid, 60)
    assert log.stat().st_size <= 16384 + 4096
    assert read_logs(log).endswith("line-2999\n")


def test_terminal_container_runs_on_a_sized_pty(box: Containers) -> None:
    cid = box.run(["sh", "-c", "tty; stty size; echo $TERM"], terminal=True, console_rows=40, console_cols=120)
    log = box.log(cid)
    assert box.rt.wait_exit(cid, 30) and box.rt.state(cid).exit_code == 0
    assert read_logs(log).replace("\r", "") == "/dev/pts/0\n40 120\nxterm\n"
