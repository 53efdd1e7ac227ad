"""`corral up`: control plane, API server and a local node agent in one process.

The server of ``corral.server`` with its agent inside: the agent follows the same link calls
a remote agent makes, answered in-process (``LocalLink``), and has no heartbeat lease (it
cannot be cut off from a control plane that is its own process).
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import uvicorn
from pydantic import BaseModel

from corral.api.app import create_app
from corral.api.auth import load_or_create_token
from corral.api.tls import ensure_certificates
from corral.config import ClientConfig
from corral.control.plane import ControlPlane
from corral.model.network import NetworkSettings
from corral.net.dns.server import DnsServer
from corral.net.vnet.config import VnetConf
from corral.net.vnet.install import install_plugin
from corral.node.client import LocalNodeClient
from corral.node.setup import NodeSettings, build_agent, build_host, start_cni_service
from corral.orchestrator.runner import OrchestratorTask
from corral.scheduler.pipeline import SchedulerSettings
from corral.serving import run_api, side_by_side
from corral.store.sqlite import SqliteStore

log = logging.getLogger("corral")


class UpSettings(BaseModel):
    data_dir: Path
    listen: str
    insecure_http: bool = False
    config_path: Path
    node: NodeSettings
    location: str = "local"
    price_sheet: Path | None = None
    dns_listen: str | None = "127.0.0.1:5354"  # Corral's DNS server; None: off
    scheduler: SchedulerSettings = SchedulerSettings()
    orchestrator: bool = True  # run the orchestrator (NGroups, standby pools) in this process


class AllInOne:
    def __init__(self, settings: UpSettings) -> None:
        self.settings = settings
        host, _, port = settings.listen.rpartition(":")
        self.host, self.port = host or "127.0.0.1", int(port)
        d = settings.data_dir
        self.store = SqliteStore(d / "control" / "store.db")
        self.token = load_or_create_token(d / "control" / "token")
        node = settings.node
        self.plane = ControlPlane(self.store, self.token, location=settings.location,
                                  price_sheet=settings.price_sheet,
                                  network=NetworkSettings(default_prefix=node.subnet),
                                  scheduler=settings.scheduler)
        self.plane.scrape_token = load_or_create_token(d / "control" / "scrape-token")
        node.dns_zone, node.dns_enabled = self.plane.dns_zone, settings.dns_listen is not None
        self.dns: DnsServer | None = None
        self.node_host = build_host(node, self.plane.link, on_network=self._serve_dns_on)
        self.agent = build_agent(settings.node, self.plane.link, self.node_host)
        self.plane.nodes.register(settings.node.name, LocalNodeClient(self.node_host))
        self.app = create_app(self.plane)
        self.server: uvicorn.Server | None = None
        # An API client like any other, of this process's API (the one server of `corral up` leads).
        self.orchestrator = OrchestratorTask(self.client_config) if settings.orchestrator else None
        if self.orchestrator is not None:
            self.plane.leader_tasks.append(self.orchestrator)

    def _serve_dns_on(self, conf: VnetConf) -> None:
        """Groups' resolv.conf names their network's gateway: answer there too (port 53)."""
        if self.dns is not None:
            self.dns.add_listener(str(conf.ipam.gateway_ip), 53)

    def client_config(self) -> ClientConfig:
        scheme = "http" if self.settings.insecure_http else "https"
        ca = None if self.settings.insecure_http else str(self.settings.data_dir / "control" / "tls" / "ca.pem")
        return ClientConfig(
            endpoint=f"{scheme}://{self.host}:{self.port}", token=self.token, ca_cert=ca,
            location=self.settings.location,
        )

    def serve(self, ready: threading.Event | None = None) -> None:
        """Run until stopped (Ctrl-C / SIGTERM, or ``shutdown()``)."""
        kwargs = {}
        if not self.settings.insecure_http:
            names = sorted({self.host, "127.0.0.1", "localhost"})
            _, cert, key = ensure_certificates(self.settings.data_dir / "control" / "tls", names)
            kwargs = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
        install_plugin()
        cni_service = start_cni_service(self.settings.node)
        self.plane.start()
        self.dns = start_dns(self.plane, self.settings.dns_listen)
        if self.dns is not None:
            for gateway in self.node_host.network.gateways().values():
                self.dns.add_listener(gateway, 53)
        self.agent.start()
        path = self.client_config().write(self.settings.config_path)
        log.info("client config written to %s", path)

        def keep(server: uvicorn.Server) -> None:
            self.server = server
            if self.orchestrator is not None:
                self.orchestrator.leave_with(lambda: server.should_exit)

        try:
            run_api(self.app, self.host, self.port, ready, keep, **kwargs)
        finally:
            parts = [self.agent.stop, self.plane.stop, self.node_host.network.stop]
            parts += [p.stop for p in (self.dns, cni_service) if p is not None]
            side_by_side(*parts)
            self.store.close()

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.should_exit = True


def install_signal_handlers(app: AllInOne) -> None:
    def _stop(*_: object) -> None:
        app.shutdown()

    signal.signal(signal.SIGTERM, _stop)


def start_dns(plane: ControlPlane, listen: str | None) -> DnsServer | None:
    """Corral's DNS server; a port already taken (another Corral on this host) is a warning, not fatal."""
    if not listen:
        return None
    dns = DnsServer(plane.link, plane.dns_zone, listen)
    try:
        dns.start()
    except OSError as exc:
        log.warning("DNS server not started on %s: %s", listen, exc)
        return None
    return dns
