"""`corral network vnet|subnet|nsg ...`: the verbs of `az network`, against Corral's Microsoft.Network API.

Peerings, route tables and `subnet update` are in ``corral.cli.netroutes`` (imported at the end)."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from corral.cli.client import API_VERSION, NETWORK, Client
from corral.cli.container import _split
from corral.cli.output import Format, console, emit

app = typer.Typer(help="Virtual networks, subnets and network security groups (the verbs of `az network`).",
                  no_args_is_help=True)
vnet_app = typer.Typer(help="Virtual networks.", no_args_is_help=True)
subnet_app = typer.Typer(help="Subnets of a virtual network.", no_args_is_help=True)
nsg_app = typer.Typer(help="Network security groups.", no_args_is_help=True)
rule_app = typer.Typer(help="Rules of a network security group.", no_args_is_help=True)
app.add_typer(vnet_app, name="vnet")
app.add_typer(subnet_app, name="subnet")
vnet_app.add_typer(subnet_app, name="subnet")  # `corral network vnet subnet create`, as az spells it
app.add_typer(nsg_app, name="nsg")
nsg_app.add_typer(rule_app, name="rule")

RG = typer.Option(..., "-g", "--resource-group", help="Resource group.")
OUT = typer.Option(Format.table, "-o", "--output", help="Output format.")
RG_OPT = typer.Option(None, "-g", "--resource-group", help="Resource group (all of the subscription if omitted).")


def _base(client: Client, rg: str | None = None) -> str:
    return client.arm_path(NETWORK, rg)


def _table(columns: list[str], rows: list[list[str]]) -> Table:
    t = Table(show_edge=False)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*r)
    return t


def _rg(resource_id: str) -> str:
    return resource_id.split("/")[4]


def _vnet_rows(items: list[dict[str, Any]]) -> Table:
    return _table(["Name", "ResourceGroup", "Location", "AddressPrefixes", "Subnets"], [
        [v["name"], _rg(v["id"]), v.get("location", ""), ",".join(v["properties"]["addressSpace"]["addressPrefixes"]),
         ",".join(s["name"] for s in v["properties"].get("subnets", []))] for v in items])


def _subnet_rows(items: list[dict[str, Any]]) -> Table:
    return _table(["Name", "ResourceGroup", "AddressPrefix", "NSG", "RouteTable", "Node blocks"], [
        [s["name"], _rg(s["id"]), s["properties"].get("addressPrefix", ""),
         (s["properties"].get("networkSecurityGroup") or {}).get("id", "").rsplit("/", 1)[-1],
         (s["properties"].get("routeTable") or {}).get("id", "").rsplit("/", 1)[-1],
         ", ".join(f"{n}={b}" for n, b in (s["properties"].get("nodeAddressBlocks") or {}).items())]
        for s in items])


def _nsg_rows(items: list[dict[str, Any]]) -> Table:
    return _table(["Name", "ResourceGroup", "Location", "Rules", "Subnets"], [
        [n["name"], _rg(n["id"]), n.get("location", ""), str(len(n["properties"].get("securityRules", []))),
         ",".join(s["id"].rsplit("/", 1)[-1] for s in n["properties"].get("subnets", []))] for n in items])


def _rule_rows(items: list[dict[str, Any]]) -> Table:
    def j(p: dict[str, Any], k: str) -> str:
        return ",".join(p.get(k + "es" if k.endswith("Prefix") else k + "s") or [p.get(k) or "*"])
    return _table(["Name", "Priority", "Direction", "Access", "Protocol", "Source", "SourcePorts", "Destination",
                   "DestinationPorts"], [
        [r["name"], str(r["properties"]["priority"]), r["properties"]["direction"], r["properties"]["access"],
         r["properties"]["protocol"], j(r["properties"], "sourceAddressPrefix"), j(r["properties"], "sourcePortRange"),
         j(r["properties"], "destinationAddressPrefix"), j(r["properties"], "destinationPortRange")]
        for r in items])


def _show(data: Any, output: Format, table: Table) -> None:
    if output == Format.table:
        console.print(table)
    else:
        emit(data, output, None)


# ---- vnet ------------------------------------------------------------------------------


@vnet_app.command("create")
def vnet_create(
    resource_group: str = RG,
    name: str = typer.Option(..., "-n", "--name", help="Virtual network name."),
    address_prefixes: list[str] = typer.Option(["10.0.0.0/16"], "--address-prefixes",
                                               help="Address space (CIDR, repeatable or space-separated)."),
    subnet_name: str | None = typer.Option(None, "--subnet-name", help="Create this subnet too."),
    subnet_prefixes: list[str] = typer.Option(None, "--subnet-prefixes", help="Address prefix of --subnet-name."),
    location: str | None = typer.Option(None, "-l", "--location"),
    output: Format = OUT,
) -> None:
    """Create (or update) a virtual network."""
    client = Client.from_config()
    props: dict[str, Any] = {"addressSpace": {"addressPrefixes": _split(address_prefixes)}}
    path = f"{_base(client, resource_group)}/virtualNetworks/{name}"
    if subnet_name:
        # A PUT that lists subnets replaces them all: keep the existing ones beside the new one.
        existing = client.http.get(path, params={"api-version": API_VERSION})
        kept = [{"name": s["name"], "properties": s["properties"]}
                for s in (existing.json()["properties"].get("subnets", []) if existing.status_code == 200 else [])
                if s["name"].lower() != subnet_name.lower()]
        prefixes = _split(subnet_prefixes) or _split(address_prefixes)[:1]
        props["subnets"] = [*kept, {"name": subnet_name, "properties": {"addressPrefix": prefixes[0]}}]
    body = {"location": location or client.config.location, "properties": props}
    v = client.request("PUT", path, json=body).json()
    _show(v, output, _vnet_rows([v]))


@vnet_app.command("list")
def vnet_list(resource_group: str | None = RG_OPT, output: Format = OUT) -> None:
    """List virtual networks."""
    client = Client.from_config()
    items = client.request("GET", f"{_base(client, resource_group)}/virtualNetworks").json()["value"]
    _show(items, output, _vnet_rows(items))


@vnet_app.command("show")
def vnet_show(resource_group: str = RG, name: str = typer.Option(..., "-n", "--name"),
              output: Format = typer.Option(Format.json, "-o", "--output")) -> None:
    """Show a virtual network."""
    client = Client.from_config()
    v = client.request("GET", f"{_base(client, resource_group)}/virtualNetworks/{name}").json()
    _show(v, output, _vnet_rows([v]))


@vnet_app.command("delete")
def vnet_delete(resource_group: str = RG, name: str = typer.Option(..., "-n", "--name")) -> None:
    """Delete a virtual network (refused while container groups use its subnets)."""
    client = Client.from_config()
    client.request("DELETE", f"{_base(client, resource_group)}/virtualNetworks/{name}")
    console.print(f"virtual network {name} deleted")


# ---- subnet --------------------------------------------------------------------------------


def _subnets(client: Client, rg: str, vnet: str) -> str:
    return f"{_base(client, rg)}/virtualNetworks/{vnet}/subnets"


@subnet_app.command("create")
def subnet_create(
    resource_group: str = RG,
    vnet_name: str = typer.Option(..., "--vnet-name", help="The virtual network."),
    name: str = typer.Option(..., "-n", "--name", help="Subnet name."),
    address_prefixes: list[str] = typer.Option(..., "--address-prefixes", "--address-prefix",
                                               help="The subnet's address prefix (CIDR)."),
    network_security_group: str | None = typer.Option(None, "--network-security-group", "--nsg",
                                                      help="NSG name (same resource group) or id."),
    delegations: str | None = typer.Option(None, "--delegations",
                                           help="Microsoft.ContainerInstance/containerGroups (the only service)."),
    route_table: str | None = typer.Option(None, "--route-table", help="Route table name (same resource group) or id."),
    output: Format = OUT,
) -> None:
    """Create (or update) a subnet."""
    client = Client.from_config()
    props: dict[str, Any] = {"addressPrefix": _split(address_prefixes)[0]}
    if network_security_group:
        props["networkSecurityGroup"] = {"id": client.resource_id(f"{NETWORK}/networkSecurityGroups", resource_group,
                                                                  network_security_group)}
    if route_table:
        props["routeTable"] = {"id": client.resource_id(f"{NETWORK}/routeTables", resource_group, route_table)}
    if delegations:
        props["delegations"] = [{"name": "aci", "properties": {"serviceName": delegations}}]
    s = client.request("PUT", f"{_subnets(client, resource_group, vnet_name)}/{name}",
                       json={"name": name, "properties": props}).json()
    _show(s, output, _subnet_rows([s]))


@subnet_app.command("list")
def subnet_list(resource_group: str = RG, vnet_name: str = typer.Option(..., "--vnet-name"),
                output: Format = OUT) -> None:
    """List the subnets of a virtual network."""
    client = Client.from_config()
    items = client.request("GET", _subnets(client, resource_group, vnet_name)).json()["value"]
    _show(items, output, _subnet_rows(items))


@subnet_app.command("show")
def subnet_show(resource_group: str = RG, vnet_name: str = typer.Option(..., "--vnet-name"),
                name: str = typer.Option(..., "-n", "--name"),
                output: Format = typer.Option(Format.json, "-o", "--output")) -> None:
    """Show a subnet (with the address block each node was granted)."""
    client = Client.from_config()
    s = client.request("GET", f"{_subnets(client, resource_group, vnet_name)}/{name}").json()
    _show(s, output, _subnet_rows([s]))


@subnet_app.command("delete")
def subnet_delete(resource_group: str = RG, vnet_name: str = typer.Option(..., "--vnet-name"),
                  name: str = typer.Option(..., "-n", "--name")) -> None:
    """Delete a subnet (refused while container groups use it)."""
    client = Client.from_config()
    client.request("DELETE", f"{_subnets(client, resource_group, vnet_name)}/{name}")
    console.print(f"subnet {name} deleted")


# ---- nsg -------------------------------------------------------------------------------------


@nsg_app.command("create")
def nsg_create(resource_group: str = RG, name: str = typer.Option(..., "-n", "--name"),
               location: str | None = typer.Option(None, "-l", "--location"), output: Format = OUT) -> None:
    """Create a network security group (its rules are kept if it exists)."""
    client = Client.from_config()
    n = client.request("PUT", f"{_base(client, resource_group)}/networkSecurityGroups/{name}",
                       json={"location": location or client.config.location}).json()
    _show(n, output, _nsg_rows([n]))


@nsg_app.command("list")
def nsg_list(resource_group: str | None = RG_OPT, output: Format = OUT) -> None:
    """List network security groups."""
    client = Client.from_config()
    items = client.request("GET", f"{_base(client, resource_group)}/networkSecurityGroups").json()["value"]
    _show(items, output, _nsg_rows(items))


@nsg_app.command("show")
def nsg_show(resource_group: str = RG, name: str = typer.Option(..., "-n", "--name"),
             output: Format = typer.Option(Format.json, "-o", "--output")) -> None:
    """Show a network security group with its rules."""
    client = Client.from_config()
    n = client.request("GET", f"{_base(client, resource_group)}/networkSecurityGroups/{name}").json()
    _show(n, output, _rule_rows(n["properties"]["securityRules"]))


@nsg_app.command("delete")
def nsg_delete(resource_group: str = RG, name: str = typer.Option(..., "-n", "--name")) -> None:
    """Delete a network security group (refused while a subnet uses it)."""
    client = Client.from_config()
    client.request("DELETE", f"{_base(client, resource_group)}/networkSecurityGroups/{name}")
    console.print(f"network security group {name} deleted")


# ---- nsg rule ----------------------------------------------------------------------------------


def _one_or_many(values: list[str] | None, single: str, plural: str) -> dict[str, Any]:
    items = _split(values) or ["*"]
    return {single: items[0]} if len(items) == 1 else {plural: items}


@rule_app.command("create")
def rule_create(
    resource_group: str = RG,
    nsg_name: str = typer.Option(..., "--nsg-name", help="The network security group."),
    name: str = typer.Option(..., "-n", "--name", help="Rule name."),
    priority: int = typer.Option(..., "--priority", help="100-4096; lower numbers win."),
    direction: str = typer.Option("Inbound", "--direction", help="Inbound or Outbound."),
    access: str = typer.Option("Allow", "--access", help="Allow or Deny."),
    protocol: str = typer.Option("*", "--protocol", help="Tcp, Udp, Icmp or *."),
    source_address_prefixes: list[str] = typer.Option(None, "--source-address-prefixes"),
    source_port_ranges: list[str] = typer.Option(None, "--source-port-ranges"),
    destination_address_prefixes: list[str] = typer.Option(None, "--destination-address-prefixes"),
    destination_port_ranges: list[str] = typer.Option(["80"], "--destination-port-ranges"),
    description: str | None = typer.Option(None, "--description"),
    output: Format = OUT,
) -> None:
    """Create (or update) a security rule; nodes apply it live."""
    client = Client.from_config()
    props: dict[str, Any] = {
        "priority": priority, "direction": direction, "access": access, "protocol": protocol,
        **_one_or_many(source_address_prefixes, "sourceAddressPrefix", "sourceAddressPrefixes"),
        **_one_or_many(source_port_ranges, "sourcePortRange", "sourcePortRanges"),
        **_one_or_many(destination_address_prefixes, "destinationAddressPrefix", "destinationAddressPrefixes"),
        **_one_or_many(destination_port_ranges, "destinationPortRange", "destinationPortRanges"),
    }
    if description:
        props["description"] = description
    r = client.request("PUT", f"{_base(client, resource_group)}/networkSecurityGroups/{nsg_name}/securityRules/{name}",
                       json={"properties": props}).json()
    _show(r, output, _rule_rows([r]))


@rule_app.command("list")
def rule_list(resource_group: str = RG, nsg_name: str = typer.Option(..., "--nsg-name"), output: Format = OUT) -> None:
    """List the rules of a network security group."""
    client = Client.from_config()
    items = client.request(
        "GET", f"{_base(client, resource_group)}/networkSecurityGroups/{nsg_name}/securityRules").json()["value"]
    _show(items, output, _rule_rows(items))


@rule_app.command("delete")
def rule_delete(resource_group: str = RG, nsg_name: str = typer.Option(..., "--nsg-name"),
                name: str = typer.Option(..., "-n", "--name")) -> None:
    """Delete a security rule."""
    client = Client.from_config()
    client.request("DELETE", f"{_base(client, resource_group)}/networkSecurityGroups/{nsg_name}/securityRules/{name}")
    console.print(f"security rule {name} deleted")


# Peerings, route tables and subnet update register themselves on the apps above.
from corral.cli import netroutes  # noqa: E402,F401
