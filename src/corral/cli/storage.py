"""`corral storage ...`: the GlusterFS servers that hold a cluster's file shares, and mounting them on nodes.

On each storage machine:   corral storage start --address 10.0.0.5
                           corral storage peer 10.0.0.6            (once, from one of them)
                           corral storage create-volume shares 10.0.0.5:/srv/bricks/shares \\
                               10.0.0.6:/srv/bricks/shares --replica 2
On each node:              corral storage mount gluster://10.0.0.5,10.0.0.6/shares
                           (or start its agent with that shares source)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from corral.cli.output import Format, console, emit
from corral.config import DEFAULT_DATA_DIR

if TYPE_CHECKING:  # imported when a command runs (`corral` starts faster)
    from corral.storage.glusterd import GlusterServer

app = typer.Typer(help="Run the GlusterFS servers of a cluster's file shares; mount them on nodes.",
                  no_args_is_help=True)

STATE = typer.Option(Path("/var/lib/corral-storage"), "--state-dir",
                     help="The storage server's own directory (glusterd state, bricks' pid files, logs).")
ADDRESS = typer.Option("127.0.0.1", "--address", help="The address glusterd listens on (port 24007).")
PORTS = typer.Option("49152-49251", "--brick-ports", help="Ports the bricks of this server may take (FROM-TO).")
DATA = typer.Option(DEFAULT_DATA_DIR, "--data-dir", help="Corral's data directory on this node.")


def _server(state_dir: Path, address: str, ports: str = "49152-49251") -> GlusterServer:
    from corral.storage.glusterd import GlusterServer

    low, _, high = ports.partition("-")
    return GlusterServer(state_dir, address, base_port=int(low), max_port=int(high or low))


def _address(state_dir: Path) -> str:
    """The address a started server was given (its volfile says)."""
    try:
        for line in (state_dir / "glusterd.vol").read_text().splitlines():
            if "transport.socket.bind-address" in line:
                return line.split()[-1]
    except OSError:
        pass
    return "127.0.0.1"


@app.command()
def start(state_dir: Path = STATE, address: str = ADDRESS, brick_ports: str = PORTS) -> None:
    """Start this machine's storage server (glusterd) unless it runs."""
    server = _server(state_dir, address, brick_ports)
    server.start()
    console.print(f"storage server on {address} (state in {state_dir})")


@app.command()
def stop(state_dir: Path = STATE) -> None:
    """Stop the storage server and its bricks (volumes stay defined and start again with it)."""
    _server(state_dir, _address(state_dir)).stop()
    console.print("storage server stopped")


@app.command()
def peer(address: str = typer.Argument(..., help="Another storage server's address."),
         state_dir: Path = STATE) -> None:
    """Join another storage server into this one's pool (volumes can then span both)."""
    _server(state_dir, _address(state_dir)).probe(address)
    console.print(f"{address} joined the storage pool")


@app.command("create-volume")
def create_volume(
    name: str = typer.Argument(..., help="Volume name."),
    bricks: list[str] = typer.Argument(..., help="ADDRESS:/directory for each brick."),
    replica: int | None = typer.Option(None, "--replica", help="Copies of each file (bricks: a multiple of it)."),
    state_dir: Path = STATE,
) -> None:
    """Create and start a volume for shares (idempotent)."""
    vol = _server(state_dir, _address(state_dir)).create_volume(name, bricks, replica)
    console.print(f"volume {vol.name} {vol.status.lower()}: {', '.join(vol.bricks)}")


@app.command("delete-volume")
def delete_volume(name: str = typer.Argument(...), state_dir: Path = STATE) -> None:
    """Stop and delete a volume (the files stay in its bricks' directories)."""
    _server(state_dir, _address(state_dir)).delete_volume(name)
    console.print(f"volume {name} deleted")


@app.command()
def volumes(state_dir: Path = STATE, output: Format = typer.Option(Format.table, "-o", "--output")) -> None:
    """List the pool's volumes."""
    rows = [v.model_dump() for v in _server(state_dir, _address(state_dir)).volumes()]
    t = Table(show_edge=False)
    for col in ("Name", "Type", "Status", "Bricks"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], r["type"], r["status"], ", ".join(r["bricks"]))
    emit(rows, output, t)


@app.command()
def mount(source: str = typer.Argument(..., help="gluster://SERVER[,SERVER...]/VOLUME"), data_dir: Path = DATA) -> None:
    """Keep this node's shares on a GlusterFS volume (mounted at DATA_DIR/shares through FUSE)."""
    from corral.node.volumes.backends import gluster_mount, shares_source

    source = shares_source(data_dir, source)
    gluster_mount(data_dir, source).ensure()
    console.print(f"shares of this node: {source}, mounted at {data_dir / 'shares'}")


@app.command()
def unmount(data_dir: Path = DATA) -> None:
    """Unmount the node's GlusterFS volume; its shares are local directories again."""
    from corral.node.volumes.backends import LOCAL, shares_source, unmount_shares

    unmount_shares(data_dir)
    shares_source(data_dir, LOCAL)
    console.print("shares of this node: local directories")
