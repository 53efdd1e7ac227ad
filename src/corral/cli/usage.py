"""`corral usage`: metered usage and cost of container groups, from the API's usageRecords."""

from __future__ import annotations

import typer
from rich.table import Table

from corral.cli.client import Client
from corral.cli.output import Format, console, emit


def usage(
    resource_group: str | None = typer.Option(None, "-g", "--resource-group", help="Only this resource group."),
    start: str | None = typer.Option(None, "--from", help="Window start (ISO 8601)."),
    end: str | None = typer.Option(None, "--to", help="Window end (ISO 8601)."),
    output: Format = typer.Option(Format.table, "-o", "--output", help="Output format."),
) -> None:
    """Show per-second usage (requested core-seconds and GB-seconds) and its cost, per group."""
    client = Client.from_config()
    params = {k: v for k, v in (("resourceGroup", resource_group), ("from", start), ("to", end)) if v}
    path = f"/subscriptions/{client.sub}/providers/Microsoft.ContainerInstance/usageRecords"
    body = client.request("GET", path, params=params).json()
    cur = body["currency"]
    t = Table(show_edge=False)
    for col in ("ResourceGroup", "Name", "SKU", "State", "Seconds", "Core-s", "GB-s", f"Cost ({cur})"):
        t.add_column(col, justify="left" if col in ("ResourceGroup", "Name", "SKU", "State") else "right")
    for r in body["value"]:
        state = "running" if r["running"] else ("deleted" if r["deleted"] else "stopped")
        t.add_row(r["resourceGroup"], r["name"], r["sku"], state, str(r["seconds"]), f"{r['coreSeconds']:g}",
                  f"{r['gbSeconds']:g}", f"{r['cost']:.6f}")
    tot = body["total"]
    t.add_section()
    t.add_row("total", f"{tot['groups']} group(s)", "", "", str(tot["seconds"]), f"{tot['coreSeconds']:g}",
              f"{tot['gbSeconds']:g}", f"{tot['cost']:.6f}")
    if output == Format.table:
        console.print(t)
    else:
        emit(body, output, None)
