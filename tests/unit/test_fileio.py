"""Files Corral writes: their content and mode do not depend on the process's umask or on what was there."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from corral.fileio import atomic_write, write_in_place


def test_write_new_replaces_content_with_exactly_its_mode_under_any_umask(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 10.0.0.1\n" * 100)  # longer than what replaces it
    old = os.umask(0o077)
    try:
        write_in_place(path, "nameserver 10.1.0.1\n")
        atomic_write(tmp_path / "state.json", "{}")
    finally:
        os.umask(old)
    assert path.read_text() == "nameserver 10.1.0.1\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by a container's non-root user
    assert stat.S_IMODE((tmp_path / "state.json").stat().st_mode) == 0o644
