"""Put the ``corral-vnet`` executable where CNI runtimes look for plugins.

What goes there is the native client (``native_client.c``, built by ``make venv``
into the virtualenv's ``bin/corral-vnet-native``): it hands the call to the node's
network service in ~1 ms, where starting Python alone takes ~8 ms. Beside it goes
the Python launcher it execs when the service does not take the call. Without the
native build, the Python launcher itself is installed: it starts Python with
``-I -S`` (pip's console script imports ``re``, ~7 ms, and ``site`` costs ~3 ms)
and finds Corral at the path it was installed from; only the slow path sets
``site`` up, in ``cli.main``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import corral
from corral import native
from corral.fileio import atomic_write

CNI_BIN_DIRS = (Path("/opt/cni/bin"),)


def launcher_text() -> str:
    root = str(Path(corral.__file__).resolve().parents[1])
    return (f"#!{sys.executable} -IS\n"
            "# corral-vnet, the CNI plugin: written by corral (corral/net/vnet/install.py).\n"
            "import sys\n"
            f"sys.path[:0] = [{root!r}]\n"
            "from corral.net.vnet.cli import entry\n"
            "entry()\n")


FALLBACK_NAME = ".corral-vnet-python"  # the native client execs this, beside itself


NATIVE = "corral-vnet-native"


def native_binary() -> Path:
    return native.path(NATIVE)


def _write(path: Path, data: bytes) -> None:
    """Write an executable atomically, unless it is there already, unchanged (a link is replaced)."""
    try:
        if not path.is_symlink() and path.read_bytes() == data:
            return
    except (FileNotFoundError, IsADirectoryError):
        pass
    atomic_write(path, data, mode=0o755, durable=False)


def install_executable(path: Path, native: bool = True) -> None:
    """The ``corral-vnet`` executable at ``path``: the native client (and its Python fallback beside
    it) when it was built, else the Python launcher. Idempotent."""
    launcher = launcher_text().encode()
    exe = native_binary()
    if native and exe.exists():
        _write(path.with_name(FALLBACK_NAME), launcher)
        _write(path, exe.read_bytes())
    else:
        _write(path, launcher)


def install_plugin(bin_dirs: tuple[Path, ...] = CNI_BIN_DIRS) -> list[Path]:
    """Write ``corral-vnet`` into each CNI bin dir (idempotent); returns the files made or kept."""
    done = []
    for d in bin_dirs:
        d.mkdir(parents=True, exist_ok=True)
        install_executable(d / "corral-vnet")
        done.append(d / "corral-vnet")
    return done


def build_native(out: Path | None = None) -> Path | None:
    """Compile ``native_client.c`` (None: no C compiler here)."""
    return native.build(NATIVE, out)
