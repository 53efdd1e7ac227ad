"""securityContext honoured by the real runtime: capabilities, users, no_new_privs, seccomp, gVisor."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime_support import NEEDS_CRUN, Containers

from corral.node.exec import exec_capture, exec_pty
from corral.node.logs import read_logs
from corral.node.runtime import caps, cgroups
from corral.node.runtime.spec import SecurityContext

pytestmark = NEEDS_CRUN


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"rtt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield f"/var/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def sh(box: Containers, cid: str, script: str, runtime: str = "crun") -> tuple[int, str]:
    code, out, err = exec_capture(box.runtime(runtime), cid, ["sh", "-c", script], timeout=60)
    return code, (out + err).decode()


def _status_field(text: str, name: str) -> str:
    return next(line.split()[1] for line in text.splitlines() if line.startswith(f"{name}:"))


def test_default_container_is_confined(box: Containers) -> None:
    cid = box.run(["sleep", "1000"])
    _, status = sh(box, cid, "cat /proc/self/status")
    assert int(_status_field(status, "CapEff"), 16) == caps.capset_bits(list(caps.DEFAULT_CAPS))
    assert _status_field(status, "NoNewPrivs") == "1"
    assert _status_field(status, "Seccomp") == "2"
    code, out = sh(box, cid, "cat /proc/kcore | head -c 1; echo rc=$?; touch /proc/sys/kernel/x")
    assert code != 0


def test_dropped_net_raw_is_really_gone(box: Containers, netns: str) -> None:
    ns = {"network": netns}
    with_raw = box.run(["sleep", "1000"], namespace_paths=ns)
    without = box.run(["sleep", "1000"], namespace_paths=ns, security=SecurityContext(capabilities_drop=["NET_RAW"]))
    _, status = sh(box, without, "cat /proc/self/status")
    eff = int(_status_field(status, "CapEff"), 16)
    assert not eff & caps.capset_bits(["CAP_NET_RAW"]) and eff & caps.capset_bits(["CAP_CHOWN"])
    assert sh(box, with_raw, "ping -c 1 -W 2 127.0.0.1")[0] == 0
    code, out = sh(box, without, "ping -c 1 -W 2 127.0.0.1")
    assert code != 0 and "ermission" in out  # "permission denied" / "Operation not permitted"


def test_added_capability_is_granted(box: Containers) -> None:
    cid = box.run(["sleep", "1000"], security=SecurityContext(capabilities_add=["NET_ADMIN"]))
    _, status = sh(box, cid, "cat /proc/self/status")
    assert int(_status_field(status, "CapEff"), 16) & caps.capset_bits(["CAP_NET_ADMIN"])


def test_run_as_user_and_group(box: Containers) -> None:
    cid = box.run(["sleep", "1000"], security=SecurityContext(run_as_user=1000, run_as_group=3000))
    code, out = sh(box, cid, "id -u; id -g; id -G; echo $HOME")
    assert code == 0
    uid, gid, groups, home = out.split("\n")[:4]
    assert (uid, gid, home) == ("1000", "3000", "/home/app")
    assert "2000" in groups.split()  # supplementary group of user "app" from the image
    _, status = sh(box, cid, "cat /proc/self/status")
    assert int(_status_field(status, "CapEff"), 16) == 0  # non-root: no effective capabilities
    named = box.run(["sleep", "1000"], user="app")
    assert sh(box, named, "id -u")[1].strip() == "1000"


def test_allow_privilege_escalation_and_readonly_root(box: Containers) -> None:
    cid = box.run(
        ["sleep", "1000"],
        security=SecurityContext(allow_privilege_escalation=True, read_only_root_filesystem=True),
    )
    _, status = sh(box, cid, "cat /proc/self/status")
    assert _status_field(status, "NoNewPrivs") == "0"
    code, out = sh(box, cid, "touch /newfile")
    assert code != 0 and "Read-only" in out
    assert sh(box, cid, "touch /tmp/../dev/shm/ok")[0] == 0  # tmpfs mounts stay writable


def test_privileged_gets_all_host_capabilities_and_no_seccomp(box: Containers) -> None:
    cid = box.run(["sleep", "1000"], security=SecurityContext(privileged=True))
    _, status = sh(box, cid, "cat /proc/self/status; ls /dev")
    assert int(_status_field(status, "CapEff"), 16) == caps.capset_bits(
        [c for c in caps.ALL_CAPS if c in caps.host_bounding()]
    )
    assert _status_field(status, "Seccomp") == "0"
    assert "loop-control" in status or "kmsg" in status  # host devices are visible


def test_seccomp_blocks_dangerous_syscalls_even_with_capability(box: Containers) -> None:
    # CAP_SYS_PTRACE would allow ptrace; without it the profile also blocks unshare/mount.
    cid = box.run(["sleep", "1000"], security=SecurityContext(capabilities_add=["SYS_ADMIN"]))
    assert sh(box, cid, "mkdir -p /mnt/t && mount -t tmpfs none /mnt/t")[0] == 0  # allowed with SYS_ADMIN
    plain = box.run(["sleep", "1000"])
    code, out = sh(box, plain, "mkdir -p /mnt/t && mount -t tmpfs none /mnt/t")
    assert code != 0


def test_seccomp_denies_what_no_capability_guards(box: Containers) -> None:
    """A user namespace needs no capability: only the profile stops it, in the container's own process
    and in an exec, and an unconfined container may make one."""
    cid = box.run(["sh", "-c", "unshare -U true; echo unshare=$?; exec sleep 1000"])
    deadline = time.monotonic() + 15
    while "unshare=" not in (logged := read_logs(box.log(cid))) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "unshare=1" in logged and "Operation not permitted" in logged
    code, out = sh(box, cid, "unshare -U true")
    assert code != 0 and "Operation not permitted" in out
    unconfined = box.run(["sleep", "1000"], security=SecurityContext(seccomp="unconfined"))
    assert sh(box, unconfined, "unshare -U true") == (0, "")


@pytest.mark.skipif(not shutil.which("runsc"), reason="runsc (gVisor) is not installed")
def test_runsc_runs_under_gvisor(box: Containers, netns: str) -> None:
    cid = box.run(["sh", "-c", "dmesg; echo ready; sleep 1000"], runtime="runsc", namespace_paths={"network": netns})
    rt = box.runtime("runsc")
    assert rt.state(cid).status == "running"
    code, out = sh(box, cid, "dmesg", runtime="runsc")
    assert code == 0 and "gVisor" in out
    code, out = sh(box, cid, "echo hi > /tmp/f && cat /tmp/f && id -u", runtime="runsc")
    assert (code, out) == (0, "hi\n0\n")
    with exec_pty(rt, cid, ["sh"], rows=25, cols=90) as sess:
        sess.write(b"stty size; exit 9\n")
        out = b""
        while b"25 90" not in out:
            chunk = sess.read(timeout=15)
            if not chunk:
                break
            out += chunk
        assert b"25 90" in out and sess.wait(15) == 9
    st = rt.stop(cid, timeout=10)
    assert st.status == "stopped" and st.exit_code is not None
    # The group's netns may be torn down first: deleting must still work.
    other = box.run(["sleep", "1000"], runtime="runsc", namespace_paths={"network": netns})
    subprocess.run(["ip", "netns", "delete", Path(netns).name], check=True)
    rt.delete(other)
    assert rt.state(other).status == "absent"
    assert not subprocess.run(["pgrep", "-f", f"runsc.*{other}"], capture_output=True).stdout
    assert "gVisor" in read_logs(rt.log_path(cid) or Path("/nonexistent"))
    rt.delete(cid)
    assert rt.state(cid).status == "absent"
    assert not subprocess.run(["pgrep", "-f", f"runsc.*{cid}"], capture_output=True).stdout


@pytest.mark.skipif(not shutil.which("runsc"), reason="runsc (gVisor) is not installed")
def test_runsc_sandbox_is_held_to_the_limits(box: Containers, netns: str) -> None:
    ns = {"network": netns}
    rt = box.runtime("runsc")
    cid = box.run(["sleep", "1000"], runtime="runsc", namespace_paths=ns, cpu=0.25, cpu_limit=0.5)
    cg = f"{box.cg_root}/{cid}"
    assert cgroups.read_value("cpu", cg, "cpu.cfs_quota_us") == "50000"
    assert cgroups.read_value("cpu", cg, "cpu.shares") == "256"
    assert cgroups.read_value("memory", cg, "memory.limit_in_bytes") == str(64 << 20)
    pid = rt.state(cid).pid
    assert str(pid) in cgroups.read_value("memory", cg, "cgroup.procs").split()
    assert sh(box, cid, "echo still-fine", runtime="runsc") == (0, "still-fine\n")
    stats = rt.stats(cid)
    assert stats is not None and stats.memory_limit_bytes == 64 << 20
    rt.update_resources(cid, cpu=1.0, cpu_limit=1.0, memory_bytes=96 << 20)
    assert cgroups.read_value("memory", cg, "memory.limit_in_bytes") == str(96 << 20)
    assert cgroups.read_value("cpu", cg, "cpu.cfs_quota_us") == "100000"

    hog = box.run(
        ["sh", "-c", "x=a; while true; do x=$x$x; done"], runtime="runsc", namespace_paths=ns, memory_bytes=48 << 20
    )
    assert rt.wait_exit(hog, 120)
    st = rt.state(hog)
    assert st.status == "stopped" and st.oom_killed
    rt.delete(hog)
    assert cgroups.cgroup_exists_anywhere(f"{box.cg_root}/{hog}") == []
