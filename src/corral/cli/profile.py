"""`corral profile ...`: container group profiles (the verbs of `az container container-group-profile`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from corral.cli.client import Client
from corral.cli.container import _env, _ports, body_from_file, body_from_flags
from corral.cli.output import Format, console, emit
from corral.model.armids import PROFILE_TYPE

app = typer.Typer(help="Container group profiles: group templates with revisions.", no_args_is_help=True)

RG = typer.Option(..., "-g", "--resource-group", help="Resource group.")
NAME = typer.Option(..., "-n", "--name", help="Profile name.")
OUT = typer.Option(Format.table, "-o", "--output", help="Output format.")


def profile_table(items: list[dict[str, Any]]) -> Table:
    t = Table(show_edge=False)
    for col in ("Name", "ResourceGroup", "Revision", "Revisions", "Images", "CPU/Memory"):
        t.add_column(col)
    for p in items:
        props = p["properties"]
        cs = props.get("containers") or []
        cpu = sum(c["properties"].get("resources", {}).get("requests", {}).get("cpu", 0) for c in cs)
        mem = sum(c["properties"].get("resources", {}).get("requests", {}).get("memoryInGB", 0) for c in cs)
        t.add_row(p["name"], p["id"].split("/")[4], str(props.get("revision", "")),
                  ",".join(str(r) for r in props.get("registeredRevisions", [])),
                  ",".join(c["properties"]["image"] for c in cs), f"{cpu:g} core/{mem:g} gb")
    return t


@app.command()
def create(
    resource_group: str = RG,
    name: str | None = typer.Option(None, "-n", "--name", help="Profile name."),
    image: str | None = typer.Option(None, "--image", help="Container image."),
    cpu: float = typer.Option(1.0, "--cpu", help="CPU cores requested."),
    memory: float = typer.Option(1.5, "--memory", help="Memory requested, in GB."),
    ports: list[str] = typer.Option(None, "--ports", help="Container ports (repeatable)."),
    protocol: str = typer.Option("TCP", "--protocol", help="TCP or UDP."),
    env: list[str] = typer.Option(None, "-e", "--environment-variables", help="KEY=VALUE (repeatable)."),
    secure_env: list[str] = typer.Option(None, "--secure-environment-variables", help="KEY=VALUE, never shown."),
    command_line: str | None = typer.Option(None, "--command-line"),
    restart_policy: str = typer.Option("Always", "--restart-policy", help="Always, OnFailure or Never."),
    location: str | None = typer.Option(None, "-l", "--location"),
    file: Path | None = typer.Option(None, "-f", "--file", help="A YAML file of the profile (ACI deployment shape)."),
    output: Format = OUT,
) -> None:
    """Create a profile, or update it: a change of its properties makes a new revision."""
    if file is not None:
        file_name, body = body_from_file(file)
        name = name or file_name
    else:
        if not image:
            raise typer.BadParameter("--image is required (or give --file)", param_hint="--image")
        if not name:
            raise typer.BadParameter("--name is required", param_hint="--name")
        body = body_from_flags(image, cpu, memory, [{"port": p["port"], "protocol": p["protocol"]}
                                                    for p in _ports(ports, protocol)], None, None,
                               _env(env, False) + _env(secure_env, True), command_line, restart_policy, location,
                               name, "Linux")
    if not name:
        raise typer.BadParameter("--name is required (or a 'name' in the file)", param_hint="--name")
    client = Client.from_config()
    body.setdefault("location", client.config.location)
    p = client.request("PUT", client.arm_path(PROFILE_TYPE, resource_group, name), json=body).json()
    emit(p, output, profile_table([p]))


@app.command()
def show(resource_group: str = RG, name: str = NAME,
         revision: int | None = typer.Option(None, "-r", "--revision", help="One revision (default: the latest)."),
         output: Format = OUT) -> None:
    """Show a profile, or one of its revisions."""
    client = Client.from_config()
    path = client.arm_path(PROFILE_TYPE, resource_group, name) + (f"/revisions/{revision}" if revision else "")
    p = client.request("GET", path).json()
    emit(p, output, profile_table([p]))


@app.command("list")
def list_(resource_group: str | None = typer.Option(None, "-g", "--resource-group"), output: Format = OUT) -> None:
    """List profiles (of a resource group, or the whole subscription)."""
    client = Client.from_config()
    items = client.request("GET", client.arm_path(PROFILE_TYPE, resource_group)).json()["value"]
    emit(items, output, profile_table(items))


@app.command()
def revisions(resource_group: str = RG, name: str = NAME, output: Format = OUT) -> None:
    """List a profile's revisions."""
    client = Client.from_config()
    items = client.request("GET", client.arm_path(PROFILE_TYPE, resource_group, name) + "/revisions").json()["value"]
    emit(items, output, profile_table(items))


@app.command()
def delete(resource_group: str = RG, name: str = NAME,
           yes: bool = typer.Option(False, "-y", "--yes", help="Do not ask for confirmation.")) -> None:
    """Delete a profile and its revisions (refused while an NGroup or a standby pool uses it)."""
    if not yes:
        typer.confirm(f"Delete container group profile {name}?", abort=True)
    client = Client.from_config()
    client.request("DELETE", client.arm_path(PROFILE_TYPE, resource_group, name))
    console.print(f"deleted {name}")
