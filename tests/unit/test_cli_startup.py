"""The `corral` command starts without importing the server, the scheduler or the node: each command imports what it
needs when it runs. `corral --help` still lists every command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def test_agent_refuses_a_metrics_address_that_is_not_host_port(tmp_path: Path) -> None:
    """Checked before the agent joins or makes anything (its data dir stays absent)."""
    for bad in ("nope", "127.0.0.1:99999", "127.0.0.1:"):
        out = subprocess.run([str(Path(sys.executable).parent / "corral"), "agent", "--server", "https://127.0.0.1:1",
                              "--public-ip", "127.0.0.1", "--metrics-listen", bad, "--data-dir", str(tmp_path / "a")],
                             capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"})
        assert out.returncode == 1
        assert f"--metrics-listen '{bad}' is not HOST:PORT with a port from 1 to 65535" in out.stderr + out.stdout
        assert not (tmp_path / "a").exists()
