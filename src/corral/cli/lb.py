"""`corral lb ...`: load balancers (the subset of `az network lb` NGroups use)."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Group as RichGroup
from rich.table import Table

from corral.cli.client import Client
from corral.cli.output import Format, console, emit
from corral.model.armids import LB_TYPE

app = typer.Typer(help="Load balancers: frontends balanced over backend pools (NGroup members join them).",
                  no_args_is_help=True)

RG = typer.Option(..., "-g", "--resource-group", help="Resource group.")
NAME = typer.Option(..., "-n", "--name", help="Load balancer name.")
OUT = typer.Option(Format.table, "-o", "--output", help="Output format.")


def lb_table(items: list[dict[str, Any]]) -> Table:
    t = Table(show_edge=False)
    for col in ("Name", "ResourceGroup", "Frontends", "Rules", "Pools"):
        t.add_column(col)
    for lb in items:
        p = lb["properties"]
        fes = [f"{f['name']}={f['properties'].get('privateIPAddress') or 'public'}"
               for f in p["frontendIPConfigurations"]]
        rules = [f"{r['properties']['frontendIPConfiguration']['id'].rsplit('/', 1)[-1]}:"
                 f"{r['properties']['frontendPort']}->{r['properties'].get('backendPort')}/"
                 f"{r['properties']['protocol']}" for r in p["loadBalancingRules"]]
        pools = [f"{b['name']}({len(b['properties'].get('loadBalancerBackendAddresses') or [])})"
                 for b in p["backendAddressPools"]]
        t.add_row(lb["name"], lb["id"].split("/")[4], ", ".join(fes), ", ".join(rules), ", ".join(pools))
    return t


def backends_table(lb: dict[str, Any]) -> Table:
    t = Table(show_edge=False)
    for col in ("Pool", "Address name", "IP"):
        t.add_column(col)
    for b in lb["properties"]["backendAddressPools"]:
        for a in b["properties"].get("loadBalancerBackendAddresses") or []:
            t.add_row(b["name"], a["name"], (a.get("properties") or {}).get("ipAddress") or "")
    return t


@app.command()
def create(
    resource_group: str = RG, name: str = NAME,
    frontend_port: int = typer.Option(..., "--frontend-port", help="Port clients connect to."),
    backend_port: int = typer.Option(..., "--backend-port", help="Port of the members."),
    protocol: str = typer.Option("Tcp", "--protocol", help="Tcp, Udp or All."),
    pool: str = typer.Option("backend", "--pool", help="Name of the backend pool."),
    subnet: str | None = typer.Option(None, "--subnet", help="Private frontend in this subnet (id); default: public "
                                                             "on every node's address."),
    private_ip: str | None = typer.Option(None, "--private-ip", help="The private frontend's address (default: one "
                                                                     "picked at the top of the subnet)."),
    probe_port: int | None = typer.Option(None, "--probe-port", help="Health probe port (default: backend port)."),
    probe_path: str | None = typer.Option(None, "--probe-path", help="HTTP probe path (default: a TCP probe)."),
    drain: int | None = typer.Option(None, "--drain-period", help="Seconds a leaving member keeps its connections."),
    location: str | None = typer.Option(None, "-l", "--location"),
    output: Format = OUT,
) -> None:
    """Create (or replace) a load balancer with one frontend, pool, probe and rule."""
    client = Client.from_config()
    me = client.arm_path(LB_TYPE, resource_group, name)
    fe: dict[str, Any] = {"name": "frontend"}
    if subnet:
        fe["properties"] = {"subnet": {"id": subnet}, **({"privateIPAddress": private_ip} if private_ip else {})}
    probe: dict[str, Any] = {"protocol": "Http" if probe_path else "Tcp", "port": probe_port or backend_port}
    if probe_path:
        probe["requestPath"] = probe_path
    pool_props = {"drainPeriodInSeconds": drain} if drain is not None else {}
    body = {"location": location or client.config.location, "properties": {
        "frontendIPConfigurations": [fe],
        "backendAddressPools": [{"name": pool, "properties": pool_props}],
        "probes": [{"name": "probe", "properties": probe}],
        "loadBalancingRules": [{"name": "rule", "properties": {
            "frontendIPConfiguration": {"id": f"{me}/frontendIPConfigurations/frontend"},
            "backendAddressPool": {"id": f"{me}/backendAddressPools/{pool}"}, "probe": {"id": f"{me}/probes/probe"},
            "protocol": protocol, "frontendPort": frontend_port, "backendPort": backend_port}}],
    }}
    lb = client.request("PUT", me, json=body).json()
    emit(lb, output, lb_table([lb]))


@app.command()
def show(resource_group: str = RG, name: str = NAME, output: Format = OUT) -> None:
    """Show a load balancer and the addresses in its pools."""
    client = Client.from_config()
    lb = client.request("GET", client.arm_path(LB_TYPE, resource_group, name)).json()
    if output == Format.table:
        console.print(RichGroup(lb_table([lb]), backends_table(lb)))
    else:
        emit(lb, output, None)


@app.command("list")
def list_(resource_group: str | None = typer.Option(None, "-g", "--resource-group"), output: Format = OUT) -> None:
    """List load balancers."""
    client = Client.from_config()
    items = client.request("GET", client.arm_path(LB_TYPE, resource_group)).json()["value"]
    emit(items, output, lb_table(items))


@app.command()
def delete(resource_group: str = RG, name: str = NAME, yes: bool = typer.Option(False, "-y", "--yes")) -> None:
    """Delete a load balancer (refused while an NGroup names one of its pools)."""
    if not yes:
        typer.confirm(f"Delete load balancer {name}?", abort=True)
    client = Client.from_config()
    client.request("DELETE", client.arm_path(LB_TYPE, resource_group, name))
    console.print(f"deleted {name}")
