"""The small C helpers ``make venv`` compiles into the virtualenv's ``bin``.

Each has a Python path that does the same work when there is no C compiler (the
helper is then absent); they exist because a process start on the hot path costs
less as one small exec than as Python or a chain of shell tools.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

_SRC = Path(__file__).parent
SOURCES = {
    "corral-vnet-native": _SRC / "net" / "vnet" / "native_client.c",  # the corral-vnet CNI client
    "corral-crun-shim": _SRC / "node" / "runtime" / "crun_shim.c",  # how conmon runs crun
    "corral-warm-init": _SRC / "node" / "runtime" / "warm_init.c",  # a warm container's first process
}
# Linked statically: it runs inside containers, whose images may carry another libc or none.
STATIC = {"corral-warm-init"}


def path(name: str) -> Path:
    """Where helper ``name`` is (or would be) installed."""
    return Path(sys.prefix) / "bin" / name


def installed(name: str) -> Path | None:
    p = path(name)
    return p if p.exists() else None


def build(name: str, out: Path | None = None) -> Path | None:
    """Compile helper ``name`` to ``out`` (default: its installed path); None: no C compiler here."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    out = out or path(name)
    static = ["-static"] if name in STATIC else []
    subprocess.run([cc, "-O2", "-Wall", *static, "-o", str(out), str(SOURCES[name])], check=True)
    return out


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(build(arg) or f"{arg}: no C compiler; the Python path is used")
