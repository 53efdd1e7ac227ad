"""Shared by the runtime's integration tests: their skip condition, a busybox root filesystem and
containers run straight on the runtime (fixtures, made available by ``pytest_plugins`` in
tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.node.runtime import cgroups
from corral.node.runtime.runtime import Runtime
from corral.node.runtime.spec import SpecRequest, build_spec
from corral.node.runtime.testing import make_busybox_rootfs

NEEDS_CRUN = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("crun") or not shutil.which("conmon"),
        reason="needs root, crun and conmon",
    ),
]


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_busybox_rootfs(tmp_path_factory.mktemp("rootfs"))


class Containers:
    """Containers run straight on ``Runtime`` (no API, no network) for the runtime's own tests."""

    def __init__(self, tmp: Path, rootfs: Path) -> None:
        self.tmp, self.rootfs = tmp, rootfs
        self.cg_root = f"/corral-rttest/{uuid.uuid4().hex[:8]}"
        self.runtimes: dict[str, Runtime] = {}
        self.rt = self.runtime("crun")

    def runtime(self, name: str = "crun") -> Runtime:
        if name not in self.runtimes:
            self.runtimes[name] = Runtime(self.tmp / ("state" if name == "crun" else f"state-{name}"), runtime=name)
        return self.runtimes[name]

    def spec(self, cid: str, args: list[str], **kw: Any) -> dict[str, Any]:
        fields: dict[str, Any] = dict(
            rootfs=self.rootfs, args=args, hostname=cid, cpu=0.5, cpu_limit=1.0,
            memory_bytes=64 << 20, cgroup_path=f"{self.cg_root}/{cid}",
        )  # fmt: skip
        fields.update(kw)
        return build_spec(SpecRequest(**fields))

    def log(self, cid: str) -> Path:
        return self.tmp / "logs" / f"{cid}.log"

    def run(self, args: list[str], runtime: str = "crun", cid: str | None = None, **kw: Any) -> str:
        cid = cid or new_id()
        self.runtime(runtime).run(cid, self.spec(cid, args, **kw), self.log(cid))
        return cid

    def cleanup(self) -> None:
        for rt in self.runtimes.values():
            for cid in rt.list_ids():
                try:
                    rt.delete(cid)
                except Exception as e:  # noqa: BLE001 - keep cleaning the rest
                    print(f"cleanup of {cid} failed: {e}")
        cgroups.remove_cgroup(self.cg_root)
        for h in cgroups.hierarchies():  # the shared parent, only once empty (other tests may use it)
            try:
                os.rmdir(h / "corral-rttest")
            except OSError:
                pass


def new_id() -> str:
    return f"rttest-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def box(tmp_path: Path, rootfs: Path) -> Iterator[Containers]:
    c = Containers(tmp_path, rootfs)
    try:
        yield c
    finally:
        c.cleanup()
