"""`corral network vnet peering ...`, `corral network route-table [route] ...` and `corral network subnet
update`: the verbs of `az network` for peerings, route tables and subnet associations."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from corral.cli.client import NETWORK, Client
from corral.cli.container import _split
from corral.cli.network import (
    OUT,
    RG,
    RG_OPT,
    _base,
    _rg,
    _show,
    _subnet_rows,
    _subnets,
    _table,
    app,
    subnet_app,
    vnet_app,
)
from corral.cli.output import Format, console

peering_app = typer.Typer(help="Peerings of a virtual network.", no_args_is_help=True)
route_table_app = typer.Typer(help="Route tables (user-defined routes for subnets).", no_args_is_help=True)
route_app = typer.Typer(help="Routes of a route table.", no_args_is_help=True)
vnet_app.add_typer(peering_app, name="peering")
app.add_typer(route_table_app, name="route-table")
route_table_app.add_typer(route_app, name="route")

SHOW_OUT = typer.Option(Format.json, "-o", "--output", help="Output format.")
DETACH = ("", "null", "none")


# ---- peerings -------------------------------------------------------------------------


def _peerings(client: Client, rg: str, vnet: str) -> str:
    return f"{_base(client, rg)}/virtualNetworks/{vnet}/virtualNetworkPeerings"


def _peering_rows(items: list[dict[str, Any]]) -> Table:
    return _table(["Name", "ResourceGroup", "RemoteVnet", "State", "SyncLevel", "VnetAccess", "ForwardedTraffic"], [
        [p["name"], _rg(p["id"]), p["properties"]["remoteVirtualNetwork"]["id"].rsplit("/", 1)[-1],
         p["properties"]["peeringState"], p["properties"].get("peeringSyncLevel", ""),
         str(p["properties"]["allowVirtualNetworkAccess"]), str(p["properties"]["allowForwardedTraffic"])]
        for p in items])


@peering_app.command("create")
def peering_create(
    resource_group: str = RG,
    vnet_name: str = typer.Option(..., "--vnet-name", help="The local virtual network."),
    name: str = typer.Option(..., "-n", "--name", help="Peering name."),
    remote_vnet: str = typer.Option(..., "--remote-vnet", help="Name (same resource group) or id of the remote vnet."),
    allow_vnet_access: bool = typer.Option(True, "--allow-vnet-access/--no-allow-vnet-access",
                                           help="Let the two networks reach each other (the REST API's default)."),
    allow_forwarded_traffic: bool = typer.Option(False, "--allow-forwarded-traffic"),
    allow_gateway_transit: bool = typer.Option(False, "--allow-gateway-transit"),
    output: Format = OUT,
) -> None:
    """Peer a virtual network with another (Initiated until the other peers back, then Connected)."""
    client = Client.from_config()
    body = {"properties": {
        "remoteVirtualNetwork": {"id": client.resource_id(f"{NETWORK}/virtualNetworks", resource_group, remote_vnet)},
        "allowVirtualNetworkAccess": allow_vnet_access, "allowForwardedTraffic": allow_forwarded_traffic,
        "allowGatewayTransit": allow_gateway_transit}}
    p = client.request("PUT", f"{_peerings(client, resource_group, vnet_name)}/{name}", json=body).json()
    _show(p, output, _peering_rows([p]))


@peering_app.command("list")
def peering_list(resource_group: str = RG, vnet_name: str = typer.Option(..., "--vnet-name"),
                 output: Format = OUT) -> None:
    """List the peerings of a virtual network."""
    client = Client.from_config()
    items = client.request("GET", _peerings(client, resource_group, vnet_name)).json()["value"]
    _show(items, output, _peering_rows(items))


@peering_app.command("show")
def peering_show(resource_group: str = RG, vnet_name: str = typer.Option(..., "--vnet-name"),
                 name: str = typer.Option(..., "-n", "--name"), output: Format = SHOW_OUT) -> None:
    """Show a peering and its state."""
    client = Client.from_config()
    p = client.request("GET", f"{_peerings(client, resource_group, vnet_name)}/{name}").json()
    _show(p, output, _peering_rows([p]))


@peering_app.command("delete")
def peering_delete(resource_group: str = RG, vnet_name: str = typer.Option(..., "--vnet-name"),
                   name: str = typer.Option(..., "-n", "--name")) -> None:
    """Delete a peering: traffic between the two networks stops (the other side becomes Disconnected)."""
    client = Client.from_config()
    client.request("DELETE", f"{_peerings(client, resource_group, vnet_name)}/{name}")
    console.print(f"peering {name} deleted")


# ---- route tables ------------------------------------------------------------------------


def _tables(client: Client, rg: str | None) -> str:
    return f"{_base(client, rg)}/routeTables"


def _table_rows(items: list[dict[str, Any]]) -> Table:
    return _table(["Name", "ResourceGroup", "Location", "Routes", "Subnets"], [
        [t["name"], _rg(t["id"]), t.get("location", ""), str(len(t["properties"].get("routes", []))),
         ",".join(s["id"].rsplit("/", 1)[-1] for s in t["properties"].get("subnets", []))] for t in items])


def _route_rows(items: list[dict[str, Any]]) -> Table:
    return _table(["Name", "AddressPrefix", "NextHopType", "NextHopIpAddress"], [
        [r["name"], r["properties"]["addressPrefix"], r["properties"]["nextHopType"],
         r["properties"].get("nextHopIpAddress", "")] for r in items])


@route_table_app.command("create")
def table_create(resource_group: str = RG, name: str = typer.Option(..., "-n", "--name"),
                 location: str | None = typer.Option(None, "-l", "--location"), output: Format = OUT) -> None:
    """Create a route table (its routes are kept if it exists)."""
    client = Client.from_config()
    t = client.request("PUT", f"{_tables(client, resource_group)}/{name}",
                       json={"location": location or client.config.location}).json()
    _show(t, output, _table_rows([t]))


@route_table_app.command("list")
def table_list(resource_group: str | None = RG_OPT, output: Format = OUT) -> None:
    """List route tables."""
    client = Client.from_config()
    items = client.request("GET", _tables(client, resource_group)).json()["value"]
    _show(items, output, _table_rows(items))


@route_table_app.command("show")
def table_show(resource_group: str = RG, name: str = typer.Option(..., "-n", "--name"),
               output: Format = SHOW_OUT) -> None:
    """Show a route table with its routes and subnets."""
    client = Client.from_config()
    t = client.request("GET", f"{_tables(client, resource_group)}/{name}").json()
    _show(t, output, _route_rows(t["properties"]["routes"]))


@route_table_app.command("delete")
def table_delete(resource_group: str = RG, name: str = typer.Option(..., "-n", "--name")) -> None:
    """Delete a route table (refused while a subnet uses it)."""
    client = Client.from_config()
    client.request("DELETE", f"{_tables(client, resource_group)}/{name}")
    console.print(f"route table {name} deleted")


@route_app.command("create")
def route_create(
    resource_group: str = RG,
    route_table_name: str = typer.Option(..., "--route-table-name", help="The route table."),
    name: str = typer.Option(..., "-n", "--name", help="Route name."),
    address_prefix: str = typer.Option(..., "--address-prefix", help="Destination (CIDR)."),
    next_hop_type: str = typer.Option(..., "--next-hop-type", help="VirtualAppliance, VnetLocal, Internet or None."),
    next_hop_ip_address: str | None = typer.Option(None, "--next-hop-ip-address",
                                                   help="The appliance's address (VirtualAppliance only)."),
    output: Format = OUT,
) -> None:
    """Create (or update) a route; nodes apply it live."""
    client = Client.from_config()
    props: dict[str, Any] = {"addressPrefix": address_prefix, "nextHopType": next_hop_type}
    if next_hop_ip_address:
        props["nextHopIpAddress"] = next_hop_ip_address
    r = client.request("PUT", f"{_tables(client, resource_group)}/{route_table_name}/routes/{name}",
                       json={"properties": props}).json()
    _show(r, output, _route_rows([r]))


@route_app.command("list")
def route_list(resource_group: str = RG, route_table_name: str = typer.Option(..., "--route-table-name"),
               output: Format = OUT) -> None:
    """List the routes of a route table."""
    client = Client.from_config()
    items = client.request("GET", f"{_tables(client, resource_group)}/{route_table_name}/routes").json()["value"]
    _show(items, output, _route_rows(items))


@route_app.command("show")
def route_show(resource_group: str = RG, route_table_name: str = typer.Option(..., "--route-table-name"),
               name: str = typer.Option(..., "-n", "--name"), output: Format = SHOW_OUT) -> None:
    """Show a route."""
    client = Client.from_config()
    r = client.request("GET", f"{_tables(client, resource_group)}/{route_table_name}/routes/{name}").json()
    _show(r, output, _route_rows([r]))


@route_app.command("delete")
def route_delete(resource_group: str = RG, route_table_name: str = typer.Option(..., "--route-table-name"),
                 name: str = typer.Option(..., "-n", "--name")) -> None:
    """Delete a route."""
    client = Client.from_config()
    client.request("DELETE", f"{_tables(client, resource_group)}/{route_table_name}/routes/{name}")
    console.print(f"route {name} deleted")


# ---- subnet update ---------------------------------------------------------------------------


@subnet_app.command("update")
def subnet_update(
    resource_group: str = RG,
    vnet_name: str = typer.Option(..., "--vnet-name", help="The virtual network."),
    name: str = typer.Option(..., "-n", "--name", help="Subnet name."),
    route_table: str | None = typer.Option(None, "--route-table",
                                           help="Route table name or id to associate; null to dissociate."),
    network_security_group: str | None = typer.Option(None, "--network-security-group", "--nsg",
                                                      help="NSG name or id; null to detach."),
    address_prefixes: list[str] = typer.Option(None, "--address-prefixes", "--address-prefix"),
    output: Format = OUT,
) -> None:
    """Change a subnet, keeping what is not given (its route table applies to running groups live)."""
    client = Client.from_config()
    path = f"{_subnets(client, resource_group, vnet_name)}/{name}"
    props = client.request("GET", path).json()["properties"]
    props = {k: v for k, v in props.items() if k not in ("provisioningState", "nodeAddressBlocks")}
    for key, kind, value in (("routeTable", "routeTables", route_table),
                             ("networkSecurityGroup", "networkSecurityGroups", network_security_group)):
        if value is not None:
            if value.lower() in DETACH:
                props.pop(key, None)
            else:
                props[key] = {"id": client.resource_id(f"{NETWORK}/{kind}", resource_group, value)}
    if address_prefixes:
        props["addressPrefix"] = _split(address_prefixes)[0]
    s = client.request("PUT", path, json={"name": name, "properties": props}).json()
    _show(s, output, _subnet_rows([s]))
