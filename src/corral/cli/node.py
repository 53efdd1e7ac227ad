"""`corral node ...`: maintenance of this machine as a Corral node."""

from __future__ import annotations

from pathlib import Path

import typer

from corral.cli.output import console
from corral.config import DEFAULT_DATA_DIR
from corral.node.runtime.cgroups import remove_cgroup
from corral.node.setup import NodeSettings, build_host
from corral.node.volumes.backends import unmount_shares

app = typer.Typer(help="Maintain this machine as a Corral node.", no_args_is_help=True)


@app.command()
def reset(
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, "--data-dir"),
    bridge: str = typer.Option("corral0", "--bridge", help="Bridge of the bridge-mode network."),
    subnet: str = typer.Option("10.240.0.0/16", "--subnet"),
    cgroup_parent: str = typer.Option("/corral", "--cgroup-parent"),
) -> None:
    """Remove every container, sandbox, mount and cgroup Corral made here (run with Corral stopped).

    Images and the control plane's records stay; a started Corral recreates the groups it still has.
    """
    uids: set[str] = set()
    for mode in ("vnet", "bridge"):  # what either network mode left
        host = build_host(NodeSettings(data_dir=data_dir, bridge=bridge, subnet=subnet, cgroup_parent=cgroup_parent,
                                       network=mode))
        found = host.group_uids_on_disk()
        for uid in sorted(found):
            host.teardown_group(uid)
        host.network.teardown()
        uids |= found
    remove_cgroup(cgroup_parent)
    unmount_shares(data_dir)  # a cluster node's GlusterFS mount (remounted when Corral starts)
    console.print(f"removed {len(uids)} group(s) from this node")
