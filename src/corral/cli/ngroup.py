"""`corral ngroup ...`: NGroups — N container groups from a profile, scaling, rolling updates and rollbacks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Group as RichGroup
from rich.table import Table

from corral.cli.client import Client
from corral.cli.container import body_from_file
from corral.cli.output import Format, console, emit, err_console
from corral.model.armids import LB_TYPE, NGROUP_TYPE, PROFILE_TYPE

app = typer.Typer(help="NGroups: many container groups from one profile, rolled and scaled together.",
                  no_args_is_help=True)
rollout_app = typer.Typer(help="Rolling updates: status, history, undo.", no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")

RG = typer.Option(..., "-g", "--resource-group", help="Resource group.")
NAME = typer.Option(..., "-n", "--name", help="NGroup name.")
OUT = typer.Option(Format.table, "-o", "--output", help="Output format.")
NO_WAIT = typer.Option(False, "--no-wait", help="Return without waiting for the NGroup to settle.")


def _pool_id(client: Client, rg: str, value: str) -> str:
    """A backend pool's id from LB/POOL (same resource group) or an id."""
    if value.startswith("/"):
        return value
    lb, _, pool = value.partition("/")
    if not pool:
        raise typer.BadParameter("give the pool as LB/POOL (or its full id)", param_hint="--pool")
    return f"{client.arm_path(LB_TYPE, rg, lb)}/backendAddressPools/{pool}"


def summary_table(items: list[dict[str, Any]]) -> Table:
    t = Table(show_edge=False)
    for col in ("Name", "ResourceGroup", "Provisioning", "Phase", "Ready/Desired", "Revision", "Mode"):
        t.add_column(col)
    for ng in items:
        p = ng["properties"]
        st = p.get("status") or {}
        rev = st.get("currentRevision")
        target = p["containerGroupProfiles"][0].get("revision")
        shown = f"{rev}" if rev == target or rev is None else f"{rev} -> {target}"
        t.add_row(ng["name"], ng["id"].split("/")[4], p.get("provisioningState", ""), st.get("phase", ""),
                  f"{st.get('readyCount', 0)}/{st.get('desiredCount', p['elasticProfile'].get('desiredCount', 0))}",
                  shown, (p.get("updateProfile") or {}).get("updateMode", "Manual"))
    return t


def members_table(ng: dict[str, Any]) -> Table:
    t = Table(show_edge=False)
    for col in ("Member", "Revision", "State", "Ready", "In service", "IP"):
        t.add_column(col)
    for m in (ng["properties"].get("status") or {}).get("members", []):
        t.add_row(m["name"], str(m.get("revision") or ""), m.get("state", ""), "yes" if m.get("ready") else "no",
                  "yes" if m.get("inService") else "no", m.get("ip") or "")
    return t


def _show(ng: dict[str, Any], output: Format) -> None:
    if output == Format.table:
        console.print(RichGroup(summary_table([ng]), members_table(ng)))
    else:
        emit(ng, output, None)


def _wait(client: Client, resp: Any, what: str, no_wait: bool) -> None:
    if no_wait:
        return
    with console.status(f"waiting for {what}..."):
        result = client.wait_operation(resp)
    if result.get("status") == "Failed":
        err_console.print(f"[red]{what} failed:[/red] {(result.get('error') or {}).get('message', '')}")
        raise typer.Exit(1)


@app.command()
def create(
    resource_group: str = RG,
    name: str | None = typer.Option(None, "-n", "--name", help="NGroup name."),
    profile: str | None = typer.Option(None, "--profile", help="Container group profile: name or id."),
    revision: int | None = typer.Option(None, "--revision", help="Profile revision (default: the latest)."),
    count: int = typer.Option(1, "--count", help="Members to keep (desiredCount)."),
    maintain: bool = typer.Option(True, "--maintain/--no-maintain",
                                  help="Replace members that fail or vanish (maintainDesiredCount)."),
    prefix: str | None = typer.Option(None, "--prefix", help="Member names: PREFIX<guid> (default: NAME-)."),
    update_mode: str = typer.Option("Rolling", "--update-mode", help="Rolling or Manual."),
    max_batch: int = typer.Option(20, "--max-batch-percent"),
    max_unhealthy: int = typer.Option(20, "--max-unhealthy-percent"),
    pause: str = typer.Option("PT0S", "--pause", help="Pause between batches (ISO 8601, e.g. PT10S)."),
    in_place: bool = typer.Option(False, "--in-place", help="Update members in place instead of replacing them."),
    rollback: bool = typer.Option(True, "--rollback/--no-rollback", help="Roll back a failed update by itself."),
    batch_timeout: str = typer.Option("PT2M", "--batch-timeout", help="How long a batch may take to be ready."),
    drain_period: str | None = typer.Option(
        None, "--drain-period", help="How long a leaving member keeps serving established connections "
        "(ISO 8601; default: the pools' drainPeriodInSeconds, else PT5S)."),
    pools: list[str] = typer.Option(None, "--pool", help="Backend pool LB/POOL (or id) the members join."),
    subnet: str | None = typer.Option(None, "--subnet", help="Subnet id the members join."),
    zones: list[str] = typer.Option(None, "--zones", help="Zones to spread members over."),
    fault_domains: int | None = typer.Option(None, "--fault-domains", help="placementProfile.faultDomainCount."),
    min_count: int | None = typer.Option(None, "--min-count", help="Autoscale: fewest members."),
    max_count: int | None = typer.Option(None, "--max-count", help="Autoscale: most members."),
    cpu_target: float | None = typer.Option(None, "--cpu-percent", help="Autoscale: target CPU utilisation %."),
    memory_target: float | None = typer.Option(None, "--memory-percent", help="Autoscale: target memory %."),
    scale_down_delay: str = typer.Option("PT5M", "--scale-down-delay", help="Autoscale: wait before removing."),
    location: str | None = typer.Option(None, "-l", "--location"),
    file: Path | None = typer.Option(None, "-f", "--file", help="NGroup YAML file (the ARM body)."),
    no_wait: bool = NO_WAIT,
    output: Format = OUT,
) -> None:
    """Create (or replace) an NGroup and wait for its members to serve."""
    client = Client.from_config()
    if file is not None:
        file_name, body = body_from_file(file, "an NGroup file")
        name = name or file_name
    else:
        if not profile:
            raise typer.BadParameter("--profile is required (or give --file)", param_hint="--profile")
        stub: dict[str, Any] = {"resource": {"id": client.resource_id(PROFILE_TYPE, resource_group, profile)}}
        if revision is not None:
            stub["revision"] = revision
        if pools:
            stub["networkProfile"] = {"loadBalancer": {"backendAddressPools": [
                {"resource": {"id": _pool_id(client, resource_group, p)}} for p in pools]}}
        if subnet:
            stub["containerGroupProperties"] = {"subnetIds": [{"id": subnet}]}
        elastic: dict[str, Any] = {"desiredCount": count, "maintainDesiredCount": maintain}
        if prefix:
            elastic["containerGroupNamingPolicy"] = {"guidNamingPolicy": {"prefix": prefix}}
        if min_count is not None or max_count is not None:
            elastic["autoscale"] = {"minCount": min_count if min_count is not None else count,
                                    "maxCount": max_count if max_count is not None else count,
                                    "scaleDownDelay": scale_down_delay}
            if cpu_target is not None:
                elastic["autoscale"]["targetCpuUtilizationPercent"] = cpu_target
            if memory_target is not None:
                elastic["autoscale"]["targetMemoryUtilizationPercent"] = memory_target
        props: dict[str, Any] = {
            "elasticProfile": elastic, "containerGroupProfiles": [stub],
            "updateProfile": {"updateMode": update_mode, "rollingUpdateProfile": {
                "maxBatchPercent": max_batch, "maxUnhealthyPercent": max_unhealthy, "pauseTimeBetweenBatches": pause,
                "inPlaceUpdate": in_place, "automaticRollback": rollback, "batchReadyTimeout": batch_timeout}},
        }
        if drain_period is not None:
            props["updateProfile"]["drainPeriod"] = drain_period
        if fault_domains:
            props["placementProfile"] = {"faultDomainCount": fault_domains}
        body = {"location": location or client.config.location, "properties": props}
        if zones:
            body["zones"] = zones
    if not name:
        raise typer.BadParameter("--name is required (or a 'name' in the file)", param_hint="--name")
    resp = client.request("PUT", client.arm_path(NGROUP_TYPE, resource_group, name), json=body)
    _wait(client, resp, f"NGroup {name}", no_wait)
    _show(client.request("GET", client.arm_path(NGROUP_TYPE, resource_group, name)).json(), output)


@app.command()
def show(resource_group: str = RG, name: str = NAME, output: Format = OUT) -> None:
    """Show an NGroup and its members."""
    client = Client.from_config()
    _show(client.request("GET", client.arm_path(NGROUP_TYPE, resource_group, name)).json(), output)


@app.command("list")
def list_(resource_group: str | None = typer.Option(None, "-g", "--resource-group"), output: Format = OUT) -> None:
    """List NGroups (of a resource group, or the whole subscription)."""
    client = Client.from_config()
    items = client.request("GET", client.arm_path(NGROUP_TYPE, resource_group)).json()["value"]
    emit(items, output, summary_table(items))


def _patch(client: Client, rg: str, name: str, props: dict[str, Any], what: str, no_wait: bool,
           output: Format) -> None:
    resp = client.request("PATCH", client.arm_path(NGROUP_TYPE, rg, name), json={"properties": props})
    _wait(client, resp, what, no_wait)
    _show(client.request("GET", client.arm_path(NGROUP_TYPE, rg, name)).json(), output)


@app.command()
def scale(resource_group: str = RG, name: str = NAME, count: int = typer.Option(..., "--count"),
          no_wait: bool = NO_WAIT, output: Format = OUT) -> None:
    """Change desiredCount (there is no scale verb in ACI: a scale is an update)."""
    client = Client.from_config()
    _patch(client, resource_group, name, {"elasticProfile": {"desiredCount": count}}, f"{name} to scale", no_wait,
           output)


@app.command()
def update(resource_group: str = RG, name: str = NAME,
           revision: int | None = typer.Option(None, "--revision", help="Roll to this profile revision."),
           profile: str | None = typer.Option(None, "--profile", help="Another profile (its latest revision)."),
           no_wait: bool = NO_WAIT, output: Format = OUT) -> None:
    """Move the NGroup to another profile revision (Rolling mode rolls it out in batches)."""
    client = Client.from_config()
    ng = client.request("GET", client.arm_path(NGROUP_TYPE, resource_group, name)).json()
    stub = dict(ng["properties"]["containerGroupProfiles"][0])
    if profile:
        stub["resource"] = {"id": client.resource_id(PROFILE_TYPE, resource_group, profile)}
        stub.pop("revision", None)
    if revision is not None:
        stub["revision"] = revision
    elif not profile:
        stub.pop("revision", None)  # the profile's latest
    _patch(client, resource_group, name, {"containerGroupProfiles": [stub]}, f"{name} to roll out", no_wait, output)


@app.command()
def delete(resource_group: str = RG, name: str = NAME, yes: bool = typer.Option(False, "-y", "--yes"),
           no_wait: bool = NO_WAIT) -> None:
    """Delete an NGroup: its members leave their load balancers, drain, and are deleted."""
    if not yes:
        typer.confirm(f"Delete NGroup {name} and its members?", abort=True)
    client = Client.from_config()
    resp = client.request("DELETE", client.arm_path(NGROUP_TYPE, resource_group, name))
    if resp.status_code == 202:
        _wait(client, resp, f"{name} to be deleted", no_wait)
    console.print(f"deleted {name}")


def _action(resource_group: str, name: str, action: str, no_wait: bool) -> None:
    """POST the NGroup's ``action`` (start, stop, restart) and wait for it unless ``no_wait``."""
    client = Client.from_config()
    _wait(client, client.request("POST", client.arm_path(NGROUP_TYPE, resource_group, name) + "/" + action),
          f"{name} to {action}", no_wait)


@app.command()
def start(resource_group: str = RG, name: str = NAME, no_wait: bool = NO_WAIT) -> None:
    """Start a stopped NGroup's members."""
    _action(resource_group, name, "start", no_wait)
    console.print(f"started {name}")


@app.command()
def stop(resource_group: str = RG, name: str = NAME) -> None:
    """Stop every member (they leave their load balancers first)."""
    _action(resource_group, name, "stop", no_wait=True)
    console.print(f"stopping {name}")


@app.command()
def restart(resource_group: str = RG, name: str = NAME, no_wait: bool = NO_WAIT) -> None:
    """Restart every member, a batch at a time (Manual mode: old members take the NGroup's revision)."""
    _action(resource_group, name, "restart", no_wait)
    console.print(f"restarted {name}")


# ---- rollout ---------------------------------------------------------------------------------


def _status_table(ng: dict[str, Any]) -> Table:
    st = ng["properties"].get("status") or {}
    ro = st.get("rollout") or {}
    t = Table(show_edge=False, show_header=False)
    t.add_column()
    t.add_column()
    rows = [("Phase", st.get("phase", "")), ("Provisioning", ng["properties"].get("provisioningState", "")),
            ("Serving revision", str(st.get("currentRevision", ""))),
            ("Target revision", str(st.get("targetRevision", ""))),
            ("Ready / desired", f"{st.get('readyCount', 0)} / {st.get('desiredCount', 0)}")]
    if ro:
        rows += [("Rollout", f"{ro.get('fromRevision')} -> {ro.get('toRevision')}: {ro.get('state')}"
                  + (" (rolling back)" if ro.get("rollingBack") and ro.get("state") == "Progressing" else "")),
                 ("Batch", str(ro.get("batch", 0))), ("Message", ro.get("message", ""))]
    for k, v in rows:
        t.add_row(k, v)
    return t


@rollout_app.command("status")
def rollout_status(resource_group: str = RG, name: str = NAME,
                   watch: bool = typer.Option(False, "-w", "--watch", help="Follow until the rollout ends."),
                   output: Format = OUT) -> None:
    """Where the NGroup's rolling update stands."""
    client = Client.from_config()
    while True:
        ng = client.request("GET", client.arm_path(NGROUP_TYPE, resource_group, name)).json()
        if output != Format.table:
            emit((ng["properties"].get("status") or {}), output, None)
        else:
            console.print(RichGroup(_status_table(ng), members_table(ng)))
        phase = (ng["properties"].get("status") or {}).get("phase")
        if not watch or phase not in ("RollingOut", "RollingBack", "Scaling", "Pending"):
            return
        time.sleep(1.0)


@rollout_app.command("history")
def rollout_history(resource_group: str = RG, name: str = NAME, output: Format = OUT) -> None:
    """The revisions the NGroup rolled to, and how each ended."""
    client = Client.from_config()
    ng = client.request("GET", client.arm_path(NGROUP_TYPE, resource_group, name)).json()
    history = (ng["properties"].get("status") or {}).get("history", [])
    t = Table(show_edge=False)
    for col in ("Revision", "Generation", "Result", "When", "Message"):
        t.add_column(col)
    for h in history:
        t.add_row(str(h["revision"]), str(h["generation"]), h["result"], h["at"], h.get("message", ""))
    emit(history, output, t)


@rollout_app.command("undo")
def rollout_undo(resource_group: str = RG, name: str = NAME,
                 to_revision: int | None = typer.Option(None, "--to-revision",
                                                        help="Default: the good revision before the current one."),
                 no_wait: bool = NO_WAIT, output: Format = OUT) -> None:
    """Roll back to an earlier revision (a rolling update like any other)."""
    client = Client.from_config()
    ng = client.request("GET", client.arm_path(NGROUP_TYPE, resource_group, name)).json()
    st = ng["properties"].get("status") or {}
    target = to_revision
    if target is None:
        target = undo_target(st.get("history", []), ng["properties"]["containerGroupProfiles"][0].get("revision"))
    if target is None:
        err_console.print("[red]error:[/red] no earlier good revision to go back to; give --to-revision")
        raise typer.Exit(1)
    stub = dict(ng["properties"]["containerGroupProfiles"][0])
    stub["revision"] = target
    _patch(client, resource_group, name, {"containerGroupProfiles": [stub]}, f"{name} to roll back to {target}",
           no_wait, output)


def undo_target(history: list[dict[str, Any]], current: int | None) -> int | None:
    """The last revision that rolled out completely and is not the one the NGroup names now."""
    for h in reversed(history):
        if h["result"] == "Complete" and h["revision"] != current:
            return int(h["revision"])
    return None
