"""`corral server` and `corral agent`: a cluster's control-plane servers and its nodes, one process each."""

from __future__ import annotations

import logging
import signal
import socket
from pathlib import Path

import typer
from pydantic import ValidationError

from corral.cli import nodeflags, placement
from corral.cli.output import console
from corral.config import client_config_path
from corral.errors import InvalidRequest


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per link call is noise, even with -v


def _on_sigterm(shutdown: object) -> None:
    signal.signal(signal.SIGTERM, lambda *_: shutdown())  # type: ignore[operator]


def server(
    store: str = typer.Option(..., "--store", help="sqlite:///PATH (one server) or etcd://HOST:PORT[,HOST:PORT]"
                              "[/NAMESPACE][?cacert=PATH&cert=PATH&key=PATH] (TLS: docs/etcd.md)."),
    listen: str = typer.Option("0.0.0.0:8443", "--listen", help="HOST:PORT of the API and of the agents' link."),
    data_dir: Path = typer.Option(Path("/var/lib/corral-server"), "--data-dir",
                                  help="This server's certificates and join-token file."),
    name: str = typer.Option(socket.gethostname(), "--name", help="This server's name (leader election, logs)."),
    advertise: list[str] = typer.Option([], "--advertise",
                                        help="Another name or address clients and agents use for this server."),
    location: str = typer.Option("local", "--location"),
    subnet: str = typer.Option("10.240.0.0/16", "--subnet", help="Address space of the default virtual network."),
    price_sheet: Path | None = typer.Option(None, "--price-sheet", help="JSON/YAML prices for metering."),
    scheduling: str = nodeflags.SCHEDULING,
    verbose: bool = typer.Option(False, "-v", "--verbose"),
) -> None:
    """Run a control-plane server: the API, the agents' link, and (when elected leader) the controllers."""
    from corral.server import ControlServer, ServerSettings

    _logging(verbose)
    settings = ServerSettings(store=store, data_dir=data_dir, listen=listen, config_path=client_config_path(),
                              name=name, advertise=advertise, location=location, price_sheet=price_sheet,
                              subnet=subnet, scheduler=nodeflags.scheduler_settings(scheduling))
    srv = ControlServer(settings)
    _on_sigterm(srv.shutdown)
    cfg = srv.client_config()
    console.print(f"Corral server {name}: API at [bold]{cfg.endpoint}[/bold], store {store}")
    console.print(f"join token (also in {srv.join_token_path}):\n  {srv.join_token}")
    console.print(f"add a node:  corral agent --server {cfg.endpoint} --join-token {srv.join_token} --name NODE")
    try:
        srv.serve()
    except KeyboardInterrupt:
        pass
    console.print("Corral server stopped.")


def agent(
    server_urls: str = typer.Option(..., "--server", help="URL[,URL...] of the cluster's servers."),
    join_token: str | None = typer.Option(None, "--join-token", envvar="CORRAL_JOIN_TOKEN",
                                          help="The cluster's join token (first start only)."),
    name: str = typer.Option(socket.gethostname(), "--name", help="This node's name."),
    zone: str | None = nodeflags.ZONE,
    labels: list[str] = nodeflags.LABELS,
    cpu: float | None = nodeflags.CPU,
    memory: float | None = nodeflags.MEMORY,
    warm_containers: int = nodeflags.WARM_CONTAINERS,
    data_dir: Path = typer.Option(Path("/var/lib/corral-agent"), "--data-dir", help="All of this node's state."),
    public_ip: str = typer.Option(..., "--public-ip", help="This machine's address: public ports, routes."),
    listen: str | None = typer.Option(None, "--listen", help="HOST:PORT of the node API (default PUBLIC_IP:10250)."),
    runtime: str = typer.Option("crun", "--runtime", help="crun, runc or runsc."),
    cgroup_parent: str = typer.Option("/corral", "--cgroup-parent", help="Parent cgroup of all containers."),
    netns_prefix: str = typer.Option("corral-", "--netns-prefix", help="Prefix of the groups' network namespaces."),
    pool_size: int = typer.Option(2, "--pool-size", help="Ready network sandboxes kept per virtual network."),
    heartbeat: float = typer.Option(0.5, "--heartbeat-interval", help="Seconds between heartbeats."),
    fence_after: float = typer.Option(1.5, "--fence-after",
                                      help="Seconds without an acknowledged heartbeat before this node stops its "
                                           "groups (self-fencing)."),
    node_lease: float = typer.Option(2.5, "--node-lease",
                                     help="Seconds without a heartbeat before the control plane declares this node "
                                          "NotReady and moves its groups (more than --fence-after + 0.5)."),
    restart_grace: float = typer.Option(30.0, "--restart-grace", min=0, max=600,
                                        help="Seconds a stopped agent's groups keep running, their node held, "
                                             "until the agent is back (0: fenced and moved as if it died)."),
    self_fencing: bool = typer.Option(True, "--self-fencing/--no-self-fencing",
                                      help="Stop this node's groups when cut off from every server; off: they keep "
                                           "running and the control plane never moves them elsewhere."),
    allow_privileged: bool = typer.Option(False, "--allow-privileged"),
    isolation: str = typer.Option("default", "--isolation", help="default (crun) or sandboxed (gVisor)."),
    dns_zone: str = typer.Option("corral.local", "--dns-zone"),
    shares: str | None = typer.Option(None, "--shares",
                                      help="gluster://SERVER[,SERVER]/VOLUME: the cluster's file shares, mounted "
                                           "here so groups find their files on any node (docs/shares.md)."),
    metrics_interval: float = typer.Option(5.0, "--metrics-interval", min=0,
                                           help="Seconds between usage samples sent to the servers (0: none)."),
    metrics_listen: str | None = typer.Option(None, "--metrics-listen",
                                              help="HOST:PORT: serve this agent's own Prometheus families (image "
                                                   "pulls, network pool) at plain-HTTP /metrics."),
    verbose: bool = typer.Option(False, "-v", "--verbose"),
) -> None:
    """Run this machine as a node of a cluster until stopped."""
    from corral.node.setup import NodeSettings
    from corral.remote_agent import AgentSettings, RemoteAgent

    _logging(verbose)
    try:
        node = NodeSettings(name=name, data_dir=data_dir, public_ip=public_ip, runtime=runtime,
                            cgroup_parent=cgroup_parent, netns_prefix=netns_prefix, pool_size=pool_size,
                            warm_containers=warm_containers,
                            allow_privileged=allow_privileged, isolation=isolation, zone=zone,
                            labels=placement.pairs(labels, "--labels"), cpu=cpu, memory_gb=memory, dns_zone=dns_zone,
                            shares=shares, metrics_interval=metrics_interval)
        settings = AgentSettings(node=node, servers=[s.strip() for s in server_urls.split(",") if s.strip()],
                                 join_token=join_token, listen=listen or f"{public_ip}:10250",
                                 heartbeat_interval=heartbeat, fence_after=fence_after, node_lease=node_lease,
                                 self_fencing=self_fencing, restart_grace=restart_grace,
                                 metrics_listen=metrics_listen)
    except ValidationError as exc:
        raise InvalidRequest(nodeflags.settings_error(exc)) from None
    agent_proc = RemoteAgent(settings)
    _on_sigterm(agent_proc.shutdown)
    console.print(f"Corral agent {name}: node API at https://{settings.listen}, servers {', '.join(settings.servers)}")
    try:
        agent_proc.serve()
    except KeyboardInterrupt:
        pass
    console.print("Corral agent stopped (its groups are fenced once its lease lapses).")
