"""`corral node ...`: the cluster's nodes (through the API), and maintenance of this machine as a node."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from corral.cli.client import Client
from corral.cli.output import Format, console, emit
from corral.config import DEFAULT_DATA_DIR

app = typer.Typer(help="The cluster's nodes, and maintenance of this machine as a Corral node.",
                  no_args_is_help=True)
NODES = "/providers/Corral/nodes"
OUT = typer.Option(Format.table, "-o", "--output", help="Output format.")
NAME = typer.Argument(..., help="The node's name.")


def _state(n: dict[str, Any]) -> str:
    p = n["properties"]
    out = p["status"]
    if p.get("draining"):
        out += ",Draining"
    elif not p.get("schedulable", True):
        out += ",SchedulingDisabled"
    return out


def _age(stamp: str | None) -> str:
    if not stamp:
        return "-"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()
    return f"{seconds:.1f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def _table(nodes: list[dict[str, Any]]) -> Table:
    t = Table(show_edge=False)
    for col in ("Name", "Status", "Zone", "Address", "CPU", "Memory GB", "Groups", "Heartbeat"):
        t.add_column(col)
    for n in nodes:
        p = n["properties"]
        cap, used = p["capacity"], p["allocated"]
        t.add_row(n["name"], _state(n), p.get("zone") or "", p["address"], f"{used['cpu']:g}/{cap['cpu']:g}",
                  f"{used['memoryInGB']:g}/{cap['memoryInGB']:g}", str(used["groups"]), _age(p.get("lastHeartbeat")))
    return t


@app.command("list")
def list_(output: Format = OUT) -> None:
    """The cluster's nodes: readiness, zone, capacity and what is placed on them."""
    nodes = Client.from_config().request("GET", NODES).json()["value"]
    emit(nodes, output, _table(nodes))


def _show(n: dict[str, Any], output: Format) -> None:
    emit(n, output, None)
    if output != Format.table:
        return
    p = n["properties"]
    console.print(_table([n]))
    labels = ", ".join(f"{k}={v}" for k, v in sorted(p["labels"].items())) or "-"
    gpus = ", ".join(f"{k}: {v}" for k, v in sorted(p["capacity"]["gpus"].items())) or "-"
    console.print(f"os: {p.get('osImage') or p['osType']}   labels: {labels}   gpus: {gpus}")
    console.print(f"endpoint: {p.get('endpoint') or 'in-process'}   lease: "
                  f"{p['leaseSeconds'] if p.get('leaseSeconds') else '-'} s")
    if p["groups"]:
        t = Table(show_edge=False)
        for col in ("Group", "ResourceGroup", "State"):
            t.add_column(col)
        for g in p["groups"]:
            t.add_row(g["name"], g["resourceGroup"], g["state"])
        console.print(t)


@app.command()
def show(name: str = NAME, output: Format = OUT) -> None:
    """One node: attributes, lease, and the groups bound to it."""
    _show(Client.from_config().request("GET", f"{NODES}/{name}").json(), output)


@app.command()
def cordon(name: str = NAME) -> None:
    """Place no new groups on the node (those it runs stay)."""
    Client.from_config().request("POST", f"{NODES}/{name}/cordon")
    console.print(f"node {name} cordoned")


@app.command()
def uncordon(name: str = NAME) -> None:
    """Let the node take new groups again (and stop a drain)."""
    Client.from_config().request("POST", f"{NODES}/{name}/uncordon")
    console.print(f"node {name} uncordoned")


def _unmovable(p: dict[str, Any]) -> str:
    return "; ".join(f"{g['resourceGroup']}/{g['name']} ({g['reason']})" for g in p.get("unmovable", []))


@app.command()
def drain(name: str = NAME, wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until it is empty."),
          timeout: float = typer.Option(600, "--timeout", help="Seconds to wait."),
          force: bool = typer.Option(False, "--force",
                                     help="Drain even if some groups fit on no other node: those stay on it.")) -> None:
    """Cordon the node and move its groups to other nodes, one at a time.

    Refused (nothing changes) if one of its running groups fits on no other node, unless --force.
    """
    client = Client.from_config()
    p = client.request("POST", f"{NODES}/{name}/drain", params={"force": "true"} if force else None
                       ).json()["properties"]
    console.print(f"node {name} draining")
    if p.get("unmovable"):
        console.print(f"[yellow]these stay on it, they fit on no other node:[/yellow] {_unmovable(p)}")
    deadline = time.monotonic() + timeout
    while wait:
        p = client.request("GET", f"{NODES}/{name}").json()["properties"]
        kept = {g["key"] for g in p.get("unmovable", [])}
        left = [g["name"] for g in p["groups"]
                if g["state"] not in ("Succeeded", "Failed", "Stopped") and g["key"] not in kept]
        if not left and not p.get("evicting"):
            if not kept:
                console.print(f"node {name} drained")
                return
            console.print(f"[{'yellow' if force else 'red'}]node {name} drained but for {len(kept)} group(s) that "
                          f"fit on no other node, left on it:[/] {_unmovable(p)}")
            if force:
                return
            raise typer.Exit(1)
        if time.monotonic() > deadline:
            console.print(f"[red]node {name} still runs {len(left)} group(s) after {timeout:g} s:[/red] "
                          + ", ".join(left))
            raise typer.Exit(1)
        time.sleep(0.5)


@app.command()
def delete(name: str = NAME, yes: bool = typer.Option(False, "-y", "--yes", help="Do not ask.")) -> None:
    """Remove a node from the cluster: its credentials are revoked and its address blocks returned."""
    if not yes:
        typer.confirm(f"remove node {name} from the cluster?", abort=True)
    Client.from_config().request("DELETE", f"{NODES}/{name}")
    console.print(f"node {name} removed")


@app.command()
def reset(
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, "--data-dir"),
    bridge: str = typer.Option("corral0", "--bridge", help="Bridge of the bridge-mode network."),
    subnet: str = typer.Option("10.240.0.0/16", "--subnet"),
    cgroup_parent: str = typer.Option("/corral", "--cgroup-parent"),
    netns_prefix: str = typer.Option("corral-", "--netns-prefix"),
) -> None:
    """Remove every container, sandbox, mount and cgroup Corral made here (run with Corral stopped).

    Images and the control plane's records stay; a started Corral recreates the groups it still has.
    """
    from corral.node.fence import stop_watchdog
    from corral.node.loadbalancer import LoadBalancerRules
    from corral.node.runtime.cgroups import remove_cgroup
    from corral.node.setup import NodeSettings, build_host
    from corral.node.volumes.backends import unmount_shares

    stop_watchdog(data_dir / "agent" / "fence")  # a `corral agent`'s self-fencing watchdog, if any
    uids: set[str] = set()
    for mode in ("vnet", "bridge"):  # what either network mode left
        host = build_host(NodeSettings(data_dir=data_dir, bridge=bridge, subnet=subnet, cgroup_parent=cgroup_parent,
                                       network=mode, netns_prefix=netns_prefix))
        host.warm.recover()  # warm containers first: the rest is then groups' containers and pool slots
        found = host.group_uids_on_disk()
        for uid in sorted(found):
            host.teardown_group(uid)
        host.network.teardown()
        uids |= found
    LoadBalancerRules(data_dir / "node").teardown()
    remove_cgroup(cgroup_parent)
    unmount_shares(data_dir)  # a cluster node's GlusterFS mount (remounted when Corral starts)
    console.print(f"removed {len(uids)} group(s) from this node")
