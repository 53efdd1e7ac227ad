"""`corral up`: run the all-in-one (control plane, API, local node agent) in the foreground."""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from pydantic import ValidationError

from corral.cli import nodeflags, placement
from corral.cli.output import console
from corral.config import DEFAULT_DATA_DIR, DEFAULT_LISTEN, client_config_path
from corral.errors import InvalidRequest

if TYPE_CHECKING:  # the all-in-one is imported when it starts (every other `corral` command starts faster)
    from corral.allinone import AllInOne


def up(
    data_dir: Path = typer.Option(DEFAULT_DATA_DIR, "--data-dir", help="Where Corral keeps its state."),
    listen: str = typer.Option(DEFAULT_LISTEN, "--listen", help="HOST:PORT of the API."),
    insecure_http: bool = typer.Option(False, "--insecure-http", help="Serve plain HTTP (development only)."),
    public_ip: str = typer.Option("127.0.0.1", "--public-ip", help="Address where public ports are reachable."),
    node_name: str = typer.Option(socket.gethostname(), "--node-name"),
    runtime: str = typer.Option("crun", "--runtime", help="crun, runc or runsc."),
    network: str = typer.Option("vnet", "--network", help="vnet (virtual networks, corral-vnet) or bridge."),
    subnet: str = typer.Option("10.240.0.0/16", "--subnet",
                               help="Address space of the default virtual network (bridge mode: its range)."),
    pool_size: int = typer.Option(2, "--pool-size", help="Ready network sandboxes kept per virtual network."),
    bridge: str = typer.Option("corral0", "--bridge", help="Linux bridge of the network in bridge mode."),
    location: str = typer.Option("local", "--location", help="The location this installation reports."),
    cgroup_parent: str = typer.Option("/corral", "--cgroup-parent", help="Parent cgroup of all containers."),
    demo: bool = typer.Option(False, "--demo", help="Deploy the demo web group once Corral is up."),
    demo_port: int = typer.Option(8080, "--demo-port", help="Public port of the demo group."),
    verbose: bool = typer.Option(False, "-v", "--verbose"),
    allow_privileged: bool = typer.Option(False, "--allow-privileged",
                                          help="Let containers with securityContext.privileged run on this node."),
    isolation: str = typer.Option("default", "--isolation",
                                  help="Isolation of groups that pick none: default (crun) or sandboxed (gVisor)."),
    price_sheet: Path | None = typer.Option(None, "--price-sheet", help="JSON/YAML prices for metering."),
    cgroup_favordynmods: bool = typer.Option(
        True, "--cgroup-favordynmods/--no-cgroup-favordynmods",
        help="Remount cgroup2 with favordynmods: container starts skip a ~10 ms kernel wait (global, until reboot)."),
    dns_listen: str = typer.Option("127.0.0.1:5354", "--dns-listen",
                                   help="HOST:PORT of Corral's DNS server (name labels, service discovery); 'off'."),
    metrics_interval: float = typer.Option(5.0, "--metrics-interval", min=0,
                                           help="Seconds between usage samples of the containers (0: off)."),
    scheduling: str = nodeflags.SCHEDULING,
    zone: str | None = nodeflags.ZONE,
    labels: list[str] = nodeflags.LABELS,
    cpu: float | None = nodeflags.CPU,
    memory: float | None = nodeflags.MEMORY,
    warm_containers: int = nodeflags.WARM_CONTAINERS,
) -> None:
    """Start Corral on this machine: API, control plane and node agent, until Ctrl-C."""
    from corral.allinone import AllInOne, UpSettings, install_signal_handlers
    from corral.node.setup import NodeSettings

    scheduler = nodeflags.scheduler_settings(scheduling)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        node = NodeSettings(name=node_name, data_dir=data_dir, public_ip=public_ip, runtime=runtime,
                            bridge=bridge, subnet=subnet, cgroup_parent=cgroup_parent,
                            network=network, pool_size=pool_size, warm_containers=warm_containers,
                            allow_privileged=allow_privileged, isolation=isolation,
                            cgroup_favordynmods=cgroup_favordynmods, metrics_interval=metrics_interval,
                            zone=zone, labels=placement.pairs(labels, "--labels"), cpu=cpu, memory_gb=memory)
    except ValidationError as exc:
        raise InvalidRequest(nodeflags.settings_error(exc)) from None
    settings = UpSettings(data_dir=data_dir, listen=listen, insecure_http=insecure_http,
                          config_path=client_config_path(), node=node, location=location, price_sheet=price_sheet,
                          dns_listen=None if dns_listen == "off" else dns_listen,
                          scheduler=scheduler)
    app = AllInOne(settings)
    install_signal_handlers(app)
    cfg = app.client_config()
    console.print(f"Corral is starting: API at [bold]{cfg.endpoint}[/bold], data in {data_dir}")
    console.print(f"client config: {settings.config_path}  (Ctrl-C stops Corral; containers keep running)")
    ready = threading.Event()
    if demo:
        threading.Thread(target=_demo_when_ready, args=(app, ready, demo_port), daemon=True).start()
    try:
        app.serve(ready)
    except KeyboardInterrupt:
        pass
    console.print("Corral stopped.")


def _demo_when_ready(app: AllInOne, ready: threading.Event, port: int) -> None:
    from corral.demo import deploy_demo

    if ready.wait(60):
        try:
            deploy_demo(app.node_host.images, app.client_config(), port)
        except Exception as exc:  # the server keeps running; say what went wrong
            console.print(f"[red]could not deploy the demo group:[/red] {exc}")
