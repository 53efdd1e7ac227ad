"""`corral agent`: a node of a cluster, in a process of its own, talking to the servers over HTTPS.

On first start it trades the join token for node credentials (``corral.link.join``), kept in
``<data-dir>/agent/credentials``; later starts reuse them. It then runs the same node
agent as `corral up` does in-process, over the HTTP link, under a heartbeat lease with
self-fencing (``corral.node.lease``, ``corral.node.fence``), serves the node API (logs, exec,
attach) to the servers with mutual TLS, and serves Corral's DNS at its virtual networks'
gateways, fed through the link. With ``--metrics-listen`` it serves the families this process
updates (image pulls, the network pool, ``process_*``) at ``GET /metrics`` for a scraper.

Everything it makes on the machine is its own: data dir (images, runtime state, sandboxes),
cgroup parent and network-namespace prefix, so several agents can share one machine.
"""

from __future__ import annotations

import logging
import ssl
import threading
from wsgiref.simple_server import WSGIServer

import uvicorn
from prometheus_client import start_http_server
from pydantic import BaseModel, field_validator, model_validator

from corral.errors import InvalidRequest
from corral.link.http import HttpLink
from corral.link.join import NodeCredentialFiles, join
from corral.link.node_api import node_app
from corral.net.dns.server import DnsServer
from corral.net.vnet.config import VnetConf
from corral.net.vnet.install import install_plugin
from corral.node import fence
from corral.node.client import LocalNodeClient
from corral.node.lease import FENCE_AFTER, HEARTBEAT_INTERVAL, NodeLease
from corral.node.setup import NodeSettings, build_agent, build_host, node_info, start_cni_service
from corral.serving import WILDCARDS, run_api, side_by_side, split_listen

log = logging.getLogger("corral")

NODE_LEASE = 2.5  # the control plane's side: NotReady, then failover, after this long without a heartbeat
WATCHDOG_GRACE = 0.25  # the agent fences itself first; the watchdog this much later
LEASE_MARGIN = 0.5  # the node lease must outlast the fence by this (the kill, the watchdog's grace)
RESTART_GRACE = 30.0
WAIT_TIMEOUT = 2.0  # long poll of the assignments (and how long stopping the agent may wait on it)


class AgentSettings(BaseModel):
    node: NodeSettings
    servers: list[str]
    join_token: str | None = None
    listen: str  # the node API, HOST:PORT (the servers reach it there)
    heartbeat_interval: float = HEARTBEAT_INTERVAL
    fence_after: float = FENCE_AFTER
    node_lease: float = NODE_LEASE
    # Off: the node never stops its groups when cut off, and the control plane never moves them (it cannot
    # know they stopped): they wait for the node to come back, or for `corral node delete`.
    self_fencing: bool = True
    # Seconds a stopped agent asks its node to be left alone (its groups keep running) until it is back.
    restart_grace: float = RESTART_GRACE
    dns: bool = True
    # HOST:PORT of a plain-HTTP /metrics of this process's own families (None: not served).
    metrics_listen: str | None = None

    @field_validator("metrics_listen")
    @classmethod
    def _metrics_listen(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            _, port = split_listen(value)
        except ValueError:
            port = 0
        if not 0 < port < 65536:
            raise ValueError(f"--metrics-listen {value!r} is not HOST:PORT with a port from 1 to 65535")
        return value

    @model_validator(mode="after")
    def _timings(self) -> AgentSettings:
        if self.fence_after <= self.heartbeat_interval:
            raise ValueError(f"--fence-after ({self.fence_after} s) must be longer than the heartbeat interval "
                             f"({self.heartbeat_interval} s)")
        if self.node_lease < self.fence_after + LEASE_MARGIN:
            raise ValueError(f"--node-lease ({self.node_lease} s) must exceed --fence-after by at least "
                             f"{LEASE_MARGIN} s, so this node has stopped its groups before they are placed elsewhere")
        return self


class RemoteAgent:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        node = settings.node
        self.api_host, self.api_port = split_listen(settings.listen)
        agent_dir = node.data_dir / "agent"
        self.files = NodeCredentialFiles(directory=agent_dir / "credentials")
        if not self.files.exists(node.name):
            if not settings.join_token:
                raise InvalidRequest(f"node '{node.name}' has not joined a cluster yet: give --join-token "
                                     "(`corral server` prints it and writes it to its join-token file)")
            addresses = [a for a in dict.fromkeys([self.api_host, node.public_ip]) if a not in WILDCARDS]
            join(settings.servers, settings.join_token, node.name, addresses, self.files)
            log.info("joined the cluster as node %s", node.name)
        self.link = HttpLink(settings.servers, self.files.token.read_text().strip(), self.files.ca)
        self.fence_dir = agent_dir / "fence"
        self.dns: DnsServer | None = None
        self.host = build_host(node, self.link, on_network=self._serve_dns_on)
        self.lease = NodeLease(lambda hold: self.link.heartbeat(node.name, hold), self.fence_dir,
                               interval=settings.heartbeat_interval, fence_after=settings.fence_after,
                               fencing=settings.self_fencing)
        reach = node.public_ip if self.api_host in WILDCARDS else self.api_host  # where the servers connect
        info = node_info(node, endpoint=f"https://{reach}:{self.api_port}", lease_seconds=settings.node_lease)
        info.selfFencing = settings.self_fencing
        self.agent = build_agent(node, self.link, self.host, info, lease=self.lease, wait_timeout=WAIT_TIMEOUT)
        self.app = node_app(LocalNodeClient(self.host))
        self.server: uvicorn.Server | None = None

    def _serve_dns_on(self, conf: VnetConf) -> None:
        if self.dns is not None:
            self.dns.add_listener(str(conf.ipam.gateway_ip), 53)

    def serve(self, ready: threading.Event | None = None) -> None:
        """Run until stopped (SIGTERM / Ctrl-C, or ``shutdown()``)."""
        metrics = self._serve_metrics()  # first: a taken port must stop the agent before it starts anything
        install_plugin()
        cni_service = start_cni_service(self.settings.node)
        if self.settings.self_fencing:
            fence.ensure_watchdog(self.fence_dir, self.settings.node.cgroup_parent,
                                  self.settings.fence_after + WATCHDOG_GRACE)
        else:
            fence.stop_watchdog(self.fence_dir)
        if self.settings.dns:
            self.dns = DnsServer(self.link, self.settings.node.dns_zone, listen=None, poll_timeout=WAIT_TIMEOUT)
            self.dns.start()
            for gateway in self.host.network.gateways().values():
                self.dns.add_listener(gateway, 53)
        self.agent.start()

        def keep(server: uvicorn.Server) -> None:
            self.server = server

        # Mutual TLS: only the servers' client certificates (cluster CA, TLS client use) get in.
        tls = {"ssl_certfile": str(self.files.cert), "ssl_keyfile": str(self.files.key),
               "ssl_ca_certs": str(self.files.ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
        try:
            run_api(self.app, self.api_host, self.api_port, ready, keep, **tls)
        finally:
            self.lease.stop()
            self.lease.hold(self.settings.restart_grace)  # the groups keep running while the agent restarts
            side_by_side(self.agent.stop, self.host.network.stop,
                         *[p.stop for p in (self.dns, cni_service) if p is not None])
            if metrics is not None:
                metrics.shutdown()
                metrics.server_close()
            self.link.close()

    def _serve_metrics(self) -> WSGIServer | None:
        """prometheus-client's own server (a thread) for this process's registry: no TLS, no token, so for
        loopback or a scrape network; the cluster-wide families come from the servers' /metrics."""
        if self.settings.metrics_listen is None:
            return None
        host, port = split_listen(self.settings.metrics_listen)
        try:
            server, _ = start_http_server(port, addr=host)
        except OSError as exc:
            raise InvalidRequest(f"--metrics-listen {self.settings.metrics_listen}: cannot listen there "
                                 f"({exc.strerror})") from None
        return server

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
