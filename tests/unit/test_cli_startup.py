"""The `corral` command starts without importing the server, the scheduler or the node: each command imports what it
needs when it runs. `corral --help` still lists every command."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("fastapi", "uvicorn", "numpy", "lightkube", "httpx", "websockets", "pyroute2", "corral.allinone",
         "corral.control.plane", "corral.node.host")
COMMANDS = ("up", "server", "agent", "usage", "az-login", "kube-node", "container", "image", "node", "network",
            "share", "storage")


def imported_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(' '.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_the_cli_imports_nothing_heavy_to_start_or_to_show_help() -> None:
    assert imported_after("import corral.cli.main") == []
    code = ("from typer.testing import CliRunner\nfrom corral.cli.main import app\n"
            "r = CliRunner().invoke(app, ['--help'], terminal_width=200)\nassert r.exit_code == 0, r.output\n"
            f"assert all(' ' + c + ' ' in r.output for c in {COMMANDS!r}), r.output")
    assert imported_after(code) == []
    # A command imports what it uses, and only it: the node's tools for `node reset`, not the API server.
    reset = imported_after("import corral.cli.node as n\nfrom corral.node.setup import build_host")
    assert "corral.node.host" in reset and "fastapi" not in reset and "corral.allinone" not in reset
