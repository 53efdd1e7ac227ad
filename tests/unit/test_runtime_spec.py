"""OCI spec building: pure logic, no containers."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.errors import InvalidRequest
from corral.node.runtime import caps
from corral.node.runtime.spec import MountSpec, SecurityContext, SpecRequest, build_spec
from corral.node.runtime.testing import make_busybox_rootfs
from corral.node.runtime.users import resolve_user


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\napp:x:1001:\nextra:x:2000:app\n")
    return root


def req(rootfs: Path, **kw: object) -> SpecRequest:
    fields: dict[str, object] = dict(
        rootfs=rootfs, args=["sh"], hostname="h", cpu=0.5, cpu_limit=0.5,
        memory_bytes=64 << 20, cgroup_path="/corral/g/c",
    )  # fmt: skip
    fields.update(kw)
    return SpecRequest.model_validate(fields)


def test_resources(rootfs: Path) -> None:
    spec = build_spec(req(rootfs, cpu=0.25, cpu_limit=1.5, memory_bytes=100 << 20, pids_limit=50))
    res = spec["linux"]["resources"]
    assert res["cpu"] == {"shares": 256, "quota": 150000, "period": 100000}
    assert res["memory"] == {"limit": 100 << 20, "swap": 100 << 20, "swappiness": 0}
    assert res["pids"] == {"limit": 50}
    assert spec["linux"]["cgroupsPath"] == "/corral/g/c"
    assert spec["root"] == {"path": str(rootfs), "readonly": False}


def test_unlimited_cpu_and_memory_omitted(rootfs: Path) -> None:
    res = build_spec(req(rootfs, cpu=0, cpu_limit=0, memory_bytes=0))["linux"]["resources"]
    assert "cpu" not in res and "memory" not in res


def test_defaults(rootfs: Path) -> None:
    spec = build_spec(req(rootfs))
    proc = spec["process"]
    assert proc["noNewPrivileges"] is True
    assert proc["env"][0].startswith("PATH=") and "HOME=/root" in proc["env"]
    assert proc["capabilities"]["bounding"] == [c for c in caps.ALL_CAPS if c in caps.DEFAULT_CAPS]
    assert proc["rlimits"][0]["hard"] <= 20000
    assert "/proc/kcore" in spec["linux"]["maskedPaths"]
    assert "/proc/sys" in spec["linux"]["readonlyPaths"]
    seccomp = spec["linux"]["seccomp"]
    assert seccomp["defaultAction"] == "SCMP_ACT_ALLOW"
    denied = seccomp["syscalls"][0]["names"]
    assert {"kexec_load", "open_by_handle_at", "init_module", "mount"} <= set(denied)
    types = [ns["type"] for ns in spec["linux"]["namespaces"]]
    assert sorted(types) == ["ipc", "mount", "network", "pid", "uts"]


def test_join_namespaces_and_mounts(rootfs: Path, tmp_path: Path) -> None:
    spec = build_spec(
        req(
            rootfs,
            namespace_paths={"network": "/var/run/netns/x", "uts": "/run/uts/x"},
            mounts=[MountSpec(source=tmp_path, destination="/data", read_only=True)],
        )
    )
    by_type = {ns["type"]: ns for ns in spec["linux"]["namespaces"]}
    assert by_type["network"]["path"] == "/var/run/netns/x"
    assert by_type["uts"]["path"] == "/run/uts/x"
    assert "path" not in by_type["pid"]
    data = next(m for m in spec["mounts"] if m["destination"] == "/data")
    assert data["type"] == "bind" and "ro" in data["options"] and data["source"] == str(tmp_path)


def test_user_resolution(rootfs: Path) -> None:
    assert resolve_user(rootfs, "app").uid == 1000
    u = resolve_user(rootfs, "app")
    assert (u.uid, u.gid, u.additional_gids, u.home) == (1000, 1001, [2000], "/home/app")
    assert resolve_user(rootfs, "1234:99").gid == 99
    assert resolve_user(rootfs, "app:extra").gid == 2000
    assert resolve_user(rootfs, "", uid=42, gid=43) == resolve_user(rootfs, "42:43")
    with pytest.raises(InvalidRequest):
        resolve_user(rootfs, "ghost")


def test_non_root_user_keeps_caps_only_in_bounding(rootfs: Path) -> None:
    proc = build_spec(req(rootfs, security=SecurityContext(run_as_user=1000)))["process"]
    assert proc["user"]["uid"] == 1000
    assert proc["capabilities"]["effective"] == [] and proc["capabilities"]["bounding"]


def test_capabilities_add_drop_and_privileged(rootfs: Path) -> None:
    sec = SecurityContext(capabilities_drop=["NET_RAW", "cap_kill"], capabilities_add=["NET_ADMIN"])
    bounding = build_spec(req(rootfs, security=sec))["process"]["capabilities"]["bounding"]
    assert "CAP_NET_RAW" not in bounding and "CAP_KILL" not in bounding and "CAP_NET_ADMIN" in bounding
    only = build_spec(req(rootfs, security=SecurityContext(capabilities_drop=["ALL"], capabilities_add=["CHOWN"])))
    assert only["process"]["capabilities"]["bounding"] == ["CAP_CHOWN"]
    with pytest.raises(InvalidRequest):
        build_spec(req(rootfs, security=SecurityContext(capabilities_add=["NOT_A_CAP"])))
    priv = build_spec(req(rootfs, security=SecurityContext(privileged=True)))
    assert priv["process"]["capabilities"]["bounding"] == [c for c in caps.ALL_CAPS if c in caps.host_bounding()]
    assert "seccomp" not in priv["linux"] and "maskedPaths" not in priv["linux"]
    assert priv["linux"]["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert priv["process"]["noNewPrivileges"] is False


def test_seccomp_relaxed_by_granted_caps(rootfs: Path) -> None:
    spec = build_spec(req(rootfs, security=SecurityContext(capabilities_add=["SYS_PTRACE"])))
    assert "ptrace" not in spec["linux"]["seccomp"]["syscalls"][0]["names"]
    unconfined = build_spec(req(rootfs, security=SecurityContext(seccomp="unconfined")))
    assert "seccomp" not in unconfined["linux"]


def test_privilege_escalation_and_readonly_root(rootfs: Path) -> None:
    spec = build_spec(
        req(rootfs, security=SecurityContext(allow_privilege_escalation=True, read_only_root_filesystem=True))
    )
    assert spec["process"]["noNewPrivileges"] is False and spec["root"]["readonly"] is True


def test_terminal_console_size(rootfs: Path) -> None:
    proc = build_spec(req(rootfs, terminal=True, console_rows=40, console_cols=120))["process"]
    assert proc["terminal"] is True and proc["consoleSize"] == {"height": 40, "width": 120}
    assert "TERM=xterm" in proc["env"]


def test_invalid_requests(rootfs: Path) -> None:
    with pytest.raises(ValueError):
        req(rootfs, cgroup_path="relative/path")
    with pytest.raises(ValueError):
        req(rootfs, args=[])
    with pytest.raises(ValueError):
        MountSpec(source=Path("/tmp"), destination="data")


def test_busybox_rootfs_helper(tmp_path: Path) -> None:
    root = make_busybox_rootfs(tmp_path / "bb")
    assert (root / "bin" / "sh").is_symlink() and (root / "bin" / "busybox").is_file()
    assert resolve_user(root, "app").uid == 1000
