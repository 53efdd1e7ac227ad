"""`corral share ...`: the file shares that back azureFile volumes (run on a node, as root).

On a cluster node whose shares live on GlusterFS (`corral storage mount`, or an agent started with
a gluster shares source) the shares are the cluster's: created on one node, seen on every node.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from corral.cli.output import Format, console, emit
from corral.config import DEFAULT_DATA_DIR

if TYPE_CHECKING:  # imported when a command runs (`corral` starts faster)
    from corral.node.volumes.gluster import GlusterShares
    from corral.node.volumes.shares import Share, ShareStore

app = typer.Typer(help="Manage the node's file shares (azureFile volumes).", no_args_is_help=True)

DATA = typer.Option(DEFAULT_DATA_DIR, "--data-dir", help="Corral's data directory on this node.")
NAME = typer.Argument(..., help="ACCOUNT/SHARE: the volume's storageAccountName and shareName.")


def _store(data_dir: Path) -> ShareStore | GlusterShares:
    from corral.node.volumes.backends import share_backend

    return share_backend(data_dir)  # a cluster node's GlusterFS volume, or directories here


def _json(store: ShareStore | GlusterShares, s: Share) -> dict[str, object]:
    account, share = s.name.split("/", 1)
    return {"name": s.name, "storageAccountName": account, "shareName": share, "quotaGB": s.quota_gb,
            "usedBytes": store.usage(s.name), "created": s.created.isoformat(), "path": str(s.path)}


@app.command()
def create(name: str = NAME, quota: int | None = typer.Option(None, "--quota", help="Quota in GB (recorded)."),
           data_dir: Path = DATA) -> None:
    """Create a share (or update the quota of an existing one)."""
    share = _store(data_dir).create(name, quota_gb=quota)
    console.print(f"share {share.name} ready at {share.path}")


@app.command("list")
def list_(data_dir: Path = DATA, output: Format = typer.Option(Format.table, "-o", "--output")) -> None:
    """List the shares of this node."""
    store = _store(data_dir)
    rows = [_json(store, s) for s in store.list()]
    t = Table(show_edge=False)
    for col in ("Account", "Share", "Quota (GB)", "Used", "Created"):
        t.add_column(col)
    for r in rows:
        t.add_row(str(r["storageAccountName"]), str(r["shareName"]), "" if r["quotaGB"] is None else str(r["quotaGB"]),
                  f"{int(r['usedBytes']) / 1e6:.1f} MB", str(r["created"]))  # type: ignore[call-overload]
    emit(rows, output, t)


@app.command()
def delete(name: str = NAME, data_dir: Path = DATA) -> None:
    """Delete a share and its files (groups mounting it keep what they have open)."""
    _store(data_dir).delete(name)
    console.print(f"deleted share {name}")
