"""Put the ``corral-vnet`` executable where CNI runtimes look for plugins."""

from __future__ import annotations

import os
import sys
from pathlib import Path

CNI_BIN_DIRS = (Path("/opt/cni/bin"),)


def installed_executable() -> Path:
    return Path(sys.prefix) / "bin" / "corral-vnet"


def install_plugin(bin_dirs: tuple[Path, ...] = CNI_BIN_DIRS) -> list[Path]:
    """Link ``corral-vnet`` into each CNI bin dir (idempotent); returns the links made or kept."""
    exe = installed_executable()
    if not exe.exists():
        return []
    done = []
    for d in bin_dirs:
        d.mkdir(parents=True, exist_ok=True)
        link = d / "corral-vnet"
        if link.is_symlink() and os.readlink(link) == str(exe):
            done.append(link)
            continue
        tmp = d / ".corral-vnet.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(exe)
        tmp.replace(link)
        done.append(link)
    return done
