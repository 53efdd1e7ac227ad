"""The node runs crun from a sealed in-memory copy: nothing can write to it, and an upgrade on disk is picked up."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from corral.node.runtime import sealed

CRUN = shutil.which("crun")
pytestmark = pytest.mark.skipif(CRUN is None, reason="crun is not installed")


def version(path: str) -> str:
    return subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout


def test_the_copy_runs_and_cannot_be_written(tmp_path: Path) -> None:
    binary = tmp_path / "crun"
    shutil.copy2(str(CRUN), binary)
    path = sealed.exe_path(str(binary))
    assert path.startswith(f"/proc/{os.getpid()}/fd/")
    assert "crun version" in version(path)
    with pytest.raises(PermissionError):
        with open(path, "r+b") as f:
            f.write(b"overwritten")
    assert sealed.exe_path(str(binary)) == path  # one copy while the binary is unchanged


def test_a_changed_binary_gets_a_new_copy_and_the_old_one_still_runs(tmp_path: Path) -> None:
    binary = tmp_path / "crun"
    shutil.copy2(str(CRUN), binary)
    old = sealed.exe_path(str(binary))
    with open(binary, "ab") as f:  # an "upgrade": same name, different file
        f.write(b"\0")
    new = sealed.exe_path(str(binary))
    assert new != old
    assert os.path.getsize(new) == binary.stat().st_size
    assert "crun version" in version(new)
    assert "crun version" in version(old)  # someone handed the old path may still exec it


def test_a_missing_binary_is_run_from_its_path(tmp_path: Path) -> None:
    assert sealed.exe_path(str(tmp_path / "nope")) == str(tmp_path / "nope")
