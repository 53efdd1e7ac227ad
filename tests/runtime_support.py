"""Shared by the runtime's integration tests: their skip condition and a busybox root filesystem
(a fixture, made available to them by ``pytest_plugins`` in tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

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
