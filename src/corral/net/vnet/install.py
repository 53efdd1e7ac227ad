"""Put the ``corral-vnet`` executable where CNI runtimes look for plugins.

What goes there is a launcher of its own rather than the console script pip
writes: that one imports ``re`` (~7 ms) before any of our code, and the
interpreter's ``site`` set-up costs ~3 ms more. The launcher starts Python with
``-I -S`` and finds Corral at the path it was installed from; only the slow path
(no network service to hand the call to) sets ``site`` up, in ``cli.main``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import corral

CNI_BIN_DIRS = (Path("/opt/cni/bin"),)


def installed_executable() -> Path:
    """The console script (``corral-vnet`` on the virtualenv's PATH)."""
    return Path(sys.prefix) / "bin" / "corral-vnet"


def launcher_text() -> str:
    root = str(Path(corral.__file__).resolve().parents[1])
    return (f"#!{sys.executable} -IS\n"
            "# corral-vnet, the CNI plugin: written by corral (corral/net/vnet/install.py).\n"
            "import sys\n"
            f"sys.path[:0] = [{root!r}]\n"
            "from corral.net.vnet.cli import entry\n"
            "entry()\n")


def write_launcher(path: Path) -> bool:
    """Write the launcher at ``path`` (atomically); False when it was there already."""
    text = launcher_text()
    try:
        if not path.is_symlink() and path.read_text() == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError, IsADirectoryError):
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    tmp.write_text(text)
    os.chmod(tmp, 0o755)
    tmp.replace(path)
    return True


def install_plugin(bin_dirs: tuple[Path, ...] = CNI_BIN_DIRS) -> list[Path]:
    """Write ``corral-vnet`` into each CNI bin dir (idempotent); returns the files made or kept."""
    done = []
    for d in bin_dirs:
        d.mkdir(parents=True, exist_ok=True)
        write_launcher(d / "corral-vnet")
        done.append(d / "corral-vnet")
    return done
