"""`corral standby-pool ...`: pools of ready container groups a create takes over instead of starting cold."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from corral.cli.client import Client
from corral.cli.output import Format, console, emit
from corral.model.armids import POOL_TYPE, PROFILE_TYPE

app = typer.Typer(help="Standby pools: ready groups of a profile, taken over by creates (standbyPoolProfile).",
                  no_args_is_help=True)

RG = typer.Option(..., "-g", "--resource-group", help="Resource group.")
NAME = typer.Option(..., "-n", "--name", help="Standby pool name.")
OUT = typer.Option(Format.table, "-o", "--output", help="Output format.")
API = {"api-version": "2025-10-01"}


def pools_table(client: Client, items: list[dict[str, Any]]) -> Table:
    t = Table(show_edge=False)
    for col in ("Name", "ResourceGroup", "Profile", "Revision", "Capacity", "Ready", "Creating"):
        t.add_column(col)
    for p in items:
        props = p["properties"]
        ref = props["containerGroupProperties"]["containerGroupProfile"]
        view = client.request("GET", p["id"] + "/runtimeViews/latest", params=API).json()
        counts = {c["state"]: c["count"]
                  for c in view["properties"]["instanceCountSummary"][0]["instanceCountsByState"]}
        t.add_row(p["name"], p["id"].split("/")[4], ref["id"].rsplit("/", 1)[-1], str(ref.get("revision", "")),
                  str(props["elasticityProfile"]["maxReadyCapacity"]), str(counts.get("Running", 0)),
                  str(counts.get("Creating", 0)))
    return t


@app.command()
def create(
    resource_group: str = RG, name: str = NAME,
    profile: str = typer.Option(..., "--profile", help="Container group profile: name or id."),
    revision: int | None = typer.Option(None, "--revision", help="Profile revision (default: the latest)."),
    capacity: int = typer.Option(..., "--capacity", help="Ready groups to keep (maxReadyCapacity)."),
    subnet: str | None = typer.Option(None, "--subnet", help="Subnet id the pooled groups join."),
    location: str | None = typer.Option(None, "-l", "--location"),
    output: Format = OUT,
) -> None:
    """Create (or update) a standby pool."""
    client = Client.from_config()
    ref: dict[str, Any] = {"id": client.resource_id(PROFILE_TYPE, resource_group, profile)}
    if revision is not None:
        ref["revision"] = revision
    cgp: dict[str, Any] = {"containerGroupProfile": ref}
    if subnet:
        cgp["subnetIds"] = [{"id": subnet}]
    body = {"location": location or client.config.location, "properties": {
        "elasticityProfile": {"maxReadyCapacity": capacity, "refillPolicy": "always"},
        "containerGroupProperties": cgp}}
    p = client.request("PUT", client.arm_path(POOL_TYPE, resource_group, name), json=body, params=API).json()
    emit(p, output, pools_table(client, [p]))


@app.command()
def update(resource_group: str = RG, name: str = NAME, capacity: int = typer.Option(..., "--capacity"),
           output: Format = OUT) -> None:
    """Change how many ready groups the pool keeps."""
    client = Client.from_config()
    p = client.request("PATCH", client.arm_path(POOL_TYPE, resource_group, name), params=API,
                       json={"properties": {"elasticityProfile": {"maxReadyCapacity": capacity}}}).json()
    emit(p, output, pools_table(client, [p]))


@app.command()
def show(resource_group: str = RG, name: str = NAME, output: Format = OUT) -> None:
    """Show a pool with how many of its groups are ready."""
    client = Client.from_config()
    p = client.request("GET", client.arm_path(POOL_TYPE, resource_group, name), params=API).json()
    emit(p, output, pools_table(client, [p]))


@app.command("list")
def list_(resource_group: str | None = typer.Option(None, "-g", "--resource-group"), output: Format = OUT) -> None:
    """List standby pools."""
    client = Client.from_config()
    items = client.request("GET", client.arm_path(POOL_TYPE, resource_group), params=API).json()["value"]
    emit(items, output, pools_table(client, items))


@app.command()
def delete(resource_group: str = RG, name: str = NAME, yes: bool = typer.Option(False, "-y", "--yes")) -> None:
    """Delete a pool; its ready groups are deleted too."""
    if not yes:
        typer.confirm(f"Delete standby pool {name}?", abort=True)
    client = Client.from_config()
    client.request("DELETE", client.arm_path(POOL_TYPE, resource_group, name), params=API)
    console.print(f"deleted {name}")
