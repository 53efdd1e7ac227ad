"""`corral container ...`: the verbs of `az container`, against Corral's API."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Group as RichGroup

from corral.cli import placement
from corral.cli.client import API_VERSION, NETWORK, Client
from corral.cli.client import sse_messages as _sse
from corral.cli.client import stream as _stream
from corral.cli.output import Format, console, containers_table, emit, err_console, groups_table

app = typer.Typer(help="Create and manage container groups (the verbs of `az container`).", no_args_is_help=True)

RG = typer.Option(..., "-g", "--resource-group", help="Resource group.")
NAME = typer.Option(..., "-n", "--name", help="Container group name.")
OUT = typer.Option(Format.table, "-o", "--output", help="Output format.")


def _split(values: list[str] | None) -> list[str]:
    """Accept both repeated flags and space-separated lists in one flag, as az does."""
    out: list[str] = []
    for v in values or []:
        out.extend(shlex.split(v))
    return out


def _env(values: list[str] | None, secure: bool) -> list[dict[str, str]]:
    out = []
    for item in _split(values):
        if "=" not in item:
            raise typer.BadParameter(f"'{item}' is not KEY=VALUE", param_hint="environment variables")
        k, v = item.split("=", 1)
        out.append({"name": k, "secureValue" if secure else "value": v})
    return out


def _sysctls(current: list[dict[str, str]] | None, values: list[str]) -> list[dict[str, str]]:
    """--sysctl NAME=VALUE flags over a file's sysctls (a flag wins for its name). Not split on spaces: a
    value may be a range ("32768 60999")."""
    out = {s["name"]: s for s in current or [] if isinstance(s, dict) and "name" in s}
    for item in values:
        k, sep, v = item.partition("=")
        if not sep or not k.strip():
            raise typer.BadParameter(f"'{item}' is not NAME=VALUE", param_hint="--sysctl")
        out[k.strip()] = {"name": k.strip(), "value": v.strip()}
    return list(out.values())


def _ports(values: list[str] | None, protocol: str) -> list[dict[str, Any]]:
    ports = []
    for item in _split(values):
        for part in item.split(","):
            public, _, container = part.partition(":")
            try:
                p: dict[str, Any] = {"port": int(container or public), "protocol": protocol.upper()}
                if container:
                    p["publicPort"] = int(public)
            except ValueError:
                raise typer.BadParameter(f"'{part}' is not PORT or PUBLIC:CONTAINER", param_hint="--ports") from None
            ports.append(p)
    return ports


def body_from_flags(
    image: str, cpu: float, memory: float, ports: list[dict[str, Any]], ip_address: str | None,
    dns_name_label: str | None, env: list[dict[str, str]], command_line: str | None, restart_policy: str,
    location: str | None, container_name: str, os_type: str,
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": container_name,
        "properties": {
            "image": image,
            "resources": {"requests": {"cpu": cpu, "memoryInGB": memory}},
        },
    }
    if ports:
        container["properties"]["ports"] = [{"port": p["port"], "protocol": p["protocol"]} for p in ports]
    if env:
        container["properties"]["environmentVariables"] = env
    if command_line:
        container["properties"]["command"] = shlex.split(command_line)
    props: dict[str, Any] = {"containers": [container], "osType": os_type, "restartPolicy": restart_policy}
    if ip_address or dns_name_label:
        props["ipAddress"] = {"type": ip_address or "Public", "ports": ports}
        if dns_name_label:
            props["ipAddress"]["dnsNameLabel"] = dns_name_label
    body: dict[str, Any] = {"properties": props}
    if location:
        body["location"] = location
    return body


def body_from_file(path: Path, what: str = "an ACI deployment file") -> tuple[str | None, dict[str, Any]]:
    """A YAML file of an ARM body (``properties`` ...) with an optional ``name``: (name, body)."""
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or "properties" not in doc:
        raise typer.BadParameter(f"{path} is not {what} (it needs 'properties')", param_hint="--file")
    body = {k: doc[k] for k in ("location", "tags", "zones", "identity", "properties") if k in doc}
    return doc.get("name"), body


def _show(g: dict[str, Any], output: Format) -> None:
    if output == Format.table:
        console.print(RichGroup(groups_table([g]), containers_table(g)))
    else:
        emit(g, output, None)


@app.command()
def create(
    resource_group: str = RG,
    name: str | None = typer.Option(None, "-n", "--name", help="Container group name."),
    image: str | None = typer.Option(None, "--image", help="Container image, e.g. corral/busybox:latest."),
    cpu: float = typer.Option(1.0, "--cpu", help="CPU cores requested."),
    memory: float = typer.Option(1.5, "--memory", help="Memory requested, in GB."),
    ports: list[str] = typer.Option(None, "--ports", help="Ports to open: PORT or PUBLIC:CONTAINER (repeatable)."),
    protocol: str = typer.Option("TCP", "--protocol", help="TCP or UDP."),
    ip_address: str | None = typer.Option(None, "--ip-address", help="Public or Private."),
    dns_name_label: str | None = typer.Option(None, "--dns-name-label"),
    env: list[str] = typer.Option(None, "-e", "--environment-variables", help="KEY=VALUE (repeatable)."),
    secure_env: list[str] = typer.Option(None, "--secure-environment-variables", help="KEY=VALUE, never shown."),
    command_line: str | None = typer.Option(None, "--command-line"),
    restart_policy: str = typer.Option("Always", "--restart-policy", help="Always, OnFailure or Never."),
    location: str | None = typer.Option(None, "-l", "--location"),
    os_type: str = typer.Option("Linux", "--os-type"),
    file: Path | None = typer.Option(None, "-f", "--file", help="ACI YAML deployment file."),
    delete_on_exit: bool = typer.Option(
        False, "--delete-on-exit", help="Delete the group once all its containers have finished (Corral extension)."
    ),
    no_wait: bool = typer.Option(False, "--no-wait", help="Return without waiting for the group to run."),
    vnet: str | None = typer.Option(None, "--vnet", help="Virtual network of --subnet (same resource group)."),
    subnet: str | None = typer.Option(None, "--subnet", help="Subnet to deploy into: a name (with --vnet) or an id."),
    zone: list[str] = typer.Option(None, "--zone", help="Only nodes in this zone (repeatable)."),
    tags: list[str] = typer.Option(None, "--tags", help="KEY=VALUE tags of the group (repeatable)."),
    node_selector: list[str] = typer.Option(None, "--node-selector", help="KEY=VALUE node label (repeatable)."),
    affinity: list[str] = typer.Option(
        None, "--affinity", help="Near groups tagged so: k=v[,k=v]\\[@node|@zone]\\[:WEIGHT] (a weight: preferred)."),
    anti_affinity: list[str] = typer.Option(
        None, "--anti-affinity", help="Away from groups tagged so: k=v[,k=v]\\[@node|@zone]\\[:WEIGHT]."),
    spread: list[str] = typer.Option(
        None, "--spread", help="Spread the groups sharing the group's value of a tag: TAG\\[@zone|@node]\\[:MAXSKEW]."),
    spread_anyway: bool = typer.Option(False, "--spread-anyway",
                                       help="--spread is a preference (ScheduleAnyway), not a rule."),
    sysctl: list[str] = typer.Option(None, "--sysctl", help="NAME=VALUE kernel parameter of the group's network "
                                     "namespace, e.g. net.ipv4.ip_forward=1 (repeatable; Corral extension)."),
    profile_id: str | None = typer.Option(None, "--container-group-profile-id",
                                          help="Make the group from this container group profile (its id)."),
    profile_revision: int | None = typer.Option(None, "--container-group-profile-revision",
                                                help="The profile's revision (default: its latest)."),
    standby_pool_id: str | None = typer.Option(None, "--standby-pool-profile-id",
                                               help="Take a ready group over from this standby pool (its id)."),
    output: Format = OUT,
) -> None:
    """Create (or update) a container group.

    Placement (Corral extension, see docs/api.md): --zone, --node-selector, --affinity,
    --anti-affinity and --spread, with --tags to tag the group; they add to a --file's, as --sysctl does.
    """
    if file is not None:
        file_name, body = body_from_file(file)
        name = name or file_name
    elif profile_id:
        if not name:
            raise typer.BadParameter("--name is required", param_hint="--name")
        ref: dict[str, Any] = {"id": profile_id, **({"revision": profile_revision} if profile_revision else {})}
        body = {"properties": {"containerGroupProfile": ref}, **({"location": location} if location else {})}
        if standby_pool_id:
            body["properties"]["standbyPoolProfile"] = {"id": standby_pool_id}
    else:
        if not image:
            raise typer.BadParameter("--image is required (or give --file)", param_hint="--image")
        if not name:
            raise typer.BadParameter("--name is required", param_hint="--name")
        body = body_from_flags(
            image, cpu, memory, _ports(ports, protocol), ip_address, dns_name_label,
            _env(env, False) + _env(secure_env, True), command_line, restart_policy, location, name, os_type,
        )
    if not name:
        raise typer.BadParameter("--name is required (or a 'name' in the file)", param_hint="--name")
    if delete_on_exit:
        body["properties"]["deleteOnExit"] = True
    if sysctl:
        body["properties"]["sysctls"] = _sysctls(body["properties"].get("sysctls"), sysctl)
    placement.apply_flags(body, zone, tags, node_selector, affinity, anti_affinity, spread, spread_anyway)
    client = Client.from_config()
    if subnet and not subnet.startswith("/") and not vnet:
        raise typer.BadParameter("--subnet NAME needs --vnet (or give the subnet's full id)", param_hint="--subnet")
    if subnet:
        body["properties"]["subnetIds"] = [{"id": client.resource_id(f"{NETWORK}/virtualNetworks/{vnet}/subnets",
                                                                     resource_group, subnet)}]
    resp = client.request("PUT", client.group_path(resource_group, name), json=body)
    if not no_wait:
        with console.status(f"waiting for {name} to start..."):
            result = client.wait_operation(resp)
        if result.get("status") == "Failed":
            err_console.print(f"[red]deployment failed:[/red] {(result.get('error') or {}).get('message', '')}")
            _show(client.request("GET", client.group_path(resource_group, name)).json(), output)
            raise typer.Exit(1)
        resp = client.request("GET", client.group_path(resource_group, name))
    _show(resp.json(), output)


# What `export` leaves out: set by Corral, never part of a deployment file.
READ_ONLY = ("instanceView", "provisioningState")


def _writable(props: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in props.items() if k not in READ_ONLY}


def deployment_file(g: dict[str, Any]) -> dict[str, Any]:
    """A group as a deployment file (`create --file` takes it back; secrets are not in it)."""
    props = _writable(g["properties"])
    for kind in ("containers", "initContainers"):
        if props.get(kind):
            props[kind] = [{**c, "properties": _writable(c["properties"])} for c in props[kind]]
    if props.get("ipAddress"):
        props["ipAddress"] = {k: v for k, v in props["ipAddress"].items() if k not in ("ip", "fqdn")}
    doc: dict[str, Any] = {"apiVersion": API_VERSION, "location": g.get("location"), "name": g["name"]}
    doc.update({k: g[k] for k in ("tags", "zones", "identity") if g.get(k)})
    doc["type"] = g["type"]
    doc["properties"] = props
    return doc


@app.command()
def export(
    resource_group: str = RG, name: str = NAME,
    file: Path | None = typer.Option(None, "-f", "--file", help="Write here (default: print it)."),
) -> None:
    """Write a group as a YAML deployment file, Corral extensions included (`create --file` reads it)."""
    client = Client.from_config()
    text = yaml.safe_dump(deployment_file(client.request("GET", client.group_path(resource_group, name)).json()),
                          sort_keys=False)
    if file is None:
        sys.stdout.write(text)
    else:
        file.write_text(text)


@app.command()
def show(resource_group: str = RG, name: str = NAME, output: Format = OUT) -> None:
    """Show a container group with its containers' state."""
    client = Client.from_config()
    _show(client.request("GET", client.group_path(resource_group, name)).json(), output)


@app.command("list")
def list_(
    resource_group: str | None = typer.Option(None, "-g", "--resource-group"), output: Format = OUT
) -> None:
    """List container groups (in a resource group, or the whole subscription)."""
    client = Client.from_config()
    groups = client.request("GET", client.group_path(resource_group or None)).json()["value"]
    emit(groups, output, groups_table(groups))


def _first_container(client: Client, rg: str, name: str, container: str | None) -> str:
    if container:
        return container
    g = client.request("GET", client.group_path(rg, name)).json()
    return g["properties"]["containers"][0]["name"]


@app.command()
def logs(
    resource_group: str = RG, name: str = NAME,
    container_name: str | None = typer.Option(None, "--container-name", help="Default: the first container."),
    tail: int | None = typer.Option(None, "--tail"),
    timestamps: bool = typer.Option(False, "--timestamps"),
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing new lines as they are written."),
) -> None:
    """Print a container's logs; with --follow, stream them until Ctrl-C or the group ends."""
    client = Client.from_config()
    container = _first_container(client, resource_group, name, container_name)
    params: dict[str, Any] = {"timestamps": str(timestamps).lower()}
    if tail is not None:
        params["tail"] = tail
    path = client.group_path(resource_group, name) + f"/containers/{container}/logs"
    if follow:
        params["follow"] = "true"
        try:
            with _stream(client, path, params) as resp:
                for chunk in resp.iter_text():
                    sys.stdout.write(chunk)
                    sys.stdout.flush()
        except KeyboardInterrupt:
            pass
        return
    resp = client.request("GET", path, params=params)
    sys.stdout.write(resp.json()["content"])


@app.command("exec", context_settings={"allow_interspersed_args": False})
def exec_(
    resource_group: str = RG, name: str = NAME,
    container_name: str | None = typer.Option(None, "--container-name", help="Default: the first container."),
    exec_command: str | None = typer.Option(None, "--exec-command", help="Command line to run in the container."),
    timeout: float | None = typer.Option(None, "--timeout", help="Seconds before a non-interactive command is killed."),
    args: list[str] = typer.Argument(None, help="Command and arguments after --, run without a terminal."),
) -> None:
    """Run a command in a running container.

    On a terminal, `--exec-command sh` opens an interactive session (ACI exec over a websocket).
    Without a terminal, or with `-- command args...`, the command runs to completion: its output
    is printed and `corral` exits with its exit code.
    """
    if bool(args) == bool(exec_command):
        raise typer.BadParameter("give either --exec-command CMD or -- COMMAND ARGS...", param_hint="--exec-command")
    client = Client.from_config()
    container = _first_container(client, resource_group, name, container_name)
    base = client.group_path(resource_group, name) + f"/containers/{container}"
    if exec_command and sys.stdin.isatty() and sys.stdout.isatty():
        from corral.cli import terminal

        rows, cols = terminal.terminal_size(sys.stdout.fileno())
        session = client.request("POST", base + "/exec", json={
            "command": exec_command, "terminalSize": {"rows": rows, "cols": cols},
        }).json()
        conn = terminal.open_session(session["webSocketUri"], session["password"], client.config.ca_cert)
        raise typer.Exit(terminal.interactive(conn))
    body: dict[str, Any] = {"command": list(args) if args else shlex.split(exec_command or "")}
    if timeout is not None:
        body["timeoutSeconds"] = timeout
    result = client.request("POST", base + "/execSync", json=body).json()
    sys.stdout.write(result.get("stdout", ""))
    sys.stdout.flush()
    sys.stderr.write(result.get("stderr", ""))
    raise typer.Exit(result["exitCode"])


@app.command()
def attach(
    resource_group: str = RG, name: str = NAME,
    container_name: str | None = typer.Option(None, "--container-name", help="Default: the first container."),
) -> None:
    """Stream a running container's output (ACI attach) until it exits or Ctrl-C."""
    from corral.cli import terminal

    client = Client.from_config()
    container = _first_container(client, resource_group, name, container_name)
    path = client.group_path(resource_group, name) + f"/containers/{container}/attach"
    session = client.request("POST", path).json()
    conn = terminal.open_session(session["webSocketUri"], session["password"], client.config.ca_cert)
    try:
        terminal.stream_output(conn, sys.stdout.fileno())
    except KeyboardInterrupt:
        pass
    finally:
        conn.close()


@app.command()
def delete(
    resource_group: str = RG, name: str = NAME,
    yes: bool = typer.Option(False, "-y", "--yes", help="Do not ask for confirmation."),
    no_wait: bool = typer.Option(False, "--no-wait"),
) -> None:
    """Delete a container group and everything it left on its node."""
    if not yes and sys.stdin.isatty():
        typer.confirm(f"Delete container group '{name}'?", abort=True)
    client = Client.from_config()
    resp = client.request("DELETE", client.group_path(resource_group, name))
    if resp.status_code == 204:
        console.print(f"container group '{name}' does not exist")
        return
    if not no_wait:
        with console.status(f"deleting {name}..."):
            client.wait_operation(resp)
    console.print(f"deleted {name}")


@app.command()
def restart(
    resource_group: str = RG, name: str = NAME,
    container: str | None = typer.Option(None, "--container", help="Restart only this container (Corral extension)."),
) -> None:
    """Restart all containers of a group in place, or only one with --container."""
    client = Client.from_config()
    if container:
        client.request("POST", client.group_path(resource_group, name) + f"/containers/{container}/restart")
        console.print(f"restarting container {container} of {name}")
        return
    client.request("POST", client.group_path(resource_group, name) + "/restart")
    console.print(f"restarting {name}")


def describe(kind: str, d: dict[str, Any]) -> str:
    """One line per watched change, for people."""
    who = f"{d.get('resourceGroup')}/{d.get('name')}"
    if kind == "group":
        return f"{who}: group {d['state']} (provisioning {d['provisioningState']})"
    if kind == "container":
        extra = f" exit code {d['exitCode']}" if d.get("exitCode") is not None else ""
        detail = f" [{d['detailStatus']}]" if d.get("detailStatus") else ""
        return f"{who}: container {d['container']} {d['state']}{detail}{extra}, restarts {d['restartCount']}"
    if kind == "event":
        where = f" container {d['container']}" if d.get("container") else ""
        e = d["event"]
        count = f" (x{e['count']})" if e.get("count", 1) > 1 else ""
        return f"{who}:{where} event {e['name']}: {e['message']}{count}"
    if kind == "deleted":
        return f"{who}: deleted"
    return f"{who}: {kind} {json.dumps(d)}"


@app.command()
def watch(
    resource_group: str = RG,
    name: str | None = typer.Option(None, "-n", "--name", help="Only this group (default: the whole resource group)."),
    output: Format = OUT,
) -> None:
    """Print state changes and events of container groups as they happen, until Ctrl-C."""
    client = Client.from_config()
    if name:
        path = client.group_path(resource_group, name) + "/events"
    else:
        path = client.group_path(resource_group).removesuffix("/containerGroups") + "/events"
    try:
        with _stream(client, path, {}) as resp:
            for kind, data in _sse(resp):
                if output == Format.table:
                    print(describe(kind, data), flush=True)
                else:
                    print(json.dumps({"event": kind, **data}), flush=True)
    except KeyboardInterrupt:
        pass


@app.command()
def stop(resource_group: str = RG, name: str = NAME) -> None:
    """Stop a group: its containers are terminated and its address released."""
    client = Client.from_config()
    client.request("POST", client.group_path(resource_group, name) + "/stop")
    console.print(f"stopped {name}")


@app.command()
def start(resource_group: str = RG, name: str = NAME, no_wait: bool = typer.Option(False, "--no-wait")) -> None:
    """Start a stopped group again."""
    client = Client.from_config()
    resp = client.request("POST", client.group_path(resource_group, name) + "/start")
    if not no_wait:
        with console.status(f"starting {name}..."):
            client.wait_operation(resp)
    console.print(f"started {name}")
