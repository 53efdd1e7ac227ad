"""`corral server`: one control-plane server (API, link routes for remote agents, controllers when leader).

Several may run against one store (etcd): each serves the API and the agents' link; the
controllers run on the one the ``Leadership`` elects. The cluster's secrets (operator token,
join token, CA) live in the store, so every server answers with the same token and trusts
the same node credentials; each server issues itself a certificate from the cluster CA for
its API, and a client certificate with which it reaches node agents (mutual TLS).

`corral up` is this plus an agent in the same process (``corral.allinone``).
"""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

import uvicorn
from pydantic import BaseModel, Field

from corral.api.app import create_app
from corral.config import ClientConfig
from corral.control.credentials import NodeCredentials, ServerIdentity, server_identity
from corral.control.leader import leadership_for
from corral.control.plane import ControlPlane
from corral.control.secrets import cluster_secrets
from corral.fileio import atomic_write
from corral.link.node_http import RemoteNodeClient
from corral.model.network import NetworkSettings
from corral.model.records import NodeInfo
from corral.orchestrator.runner import OrchestratorTask
from corral.scheduler.pipeline import SchedulerSettings
from corral.serving import WILDCARDS, run_api, split_listen
from corral.store.open import open_store

log = logging.getLogger("corral")


class ServerSettings(BaseModel):
    store: str  # sqlite:///PATH or etcd://HOST:PORT[,HOST:PORT]
    data_dir: Path  # this server's own files: certificates, the join token, logs
    listen: str
    config_path: Path
    name: str = Field(default_factory=socket.gethostname)
    advertise: list[str] = Field(default_factory=list)  # more names/addresses its certificate must cover
    location: str = "local"
    price_sheet: Path | None = None
    subnet: str = "10.240.0.0/16"  # address space of the default virtual network (made by the first server)
    scheduler: SchedulerSettings = Field(default_factory=SchedulerSettings)


def listen_addresses(host: str) -> list[str]:
    """The addresses clients may reach a server listening on ``host`` by: every local IPv4 address for a wildcard."""
    if host not in WILDCARDS:
        return [host]
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        return [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=socket.AF_INET)]


class ControlServer:
    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.host, self.port = split_listen(settings.listen)
        self.store = open_store(settings.store)
        cluster = cluster_secrets(self.store)
        d = settings.data_dir
        hosts = list(dict.fromkeys([*settings.advertise, *listen_addresses(self.host), "127.0.0.1", "localhost",
                                    settings.name]))
        self.identity: ServerIdentity = server_identity(d / "tls", cluster, hosts, settings.name)
        self.plane = ControlPlane(self.store, cluster.token, location=settings.location,
                                  price_sheet=settings.price_sheet,
                                  network=NetworkSettings(default_prefix=settings.subnet),
                                  scheduler=settings.scheduler, leadership=leadership_for(self.store, settings.name))
        self.plane.credentials = NodeCredentials(self.store, cluster)
        self.plane.nodes.remote = self._node_client
        self.join_token = cluster.join_token
        self.join_token_path = d / "join-token"
        atomic_write(self.join_token_path, self.join_token + "\n", mode=0o600)
        self.app = create_app(self.plane)
        self.server: uvicorn.Server | None = None
        # On the leader only: the orchestrator, a client of this server's own API.
        self.orchestrator = OrchestratorTask(self._local_client_config)
        self.plane.leader_tasks.append(self.orchestrator)

    def _node_client(self, info: NodeInfo) -> RemoteNodeClient:
        i = self.identity
        assert info.endpoint
        return RemoteNodeClient(info.name, info.endpoint, i.ca, i.client_cert, i.client_key)

    def client_config(self) -> ClientConfig:
        host = self.settings.advertise[0] if self.settings.advertise else (
            "127.0.0.1" if self.host in WILDCARDS else self.host)
        return ClientConfig(endpoint=f"https://{host}:{self.port}", token=self.plane.token,
                            ca_cert=str(self.identity.ca), location=self.settings.location)

    def _local_client_config(self) -> ClientConfig:
        """This server's own API, for the orchestrator it runs when it leads."""
        host = "127.0.0.1" if self.host in WILDCARDS else self.host
        return self.client_config().model_copy(update={"endpoint": f"https://{host}:{self.port}"})

    def serve(self, ready: threading.Event | None = None) -> None:
        self.plane.start()
        path = self.client_config().write(self.settings.config_path)
        log.info("client config written to %s", path)

        def keep(server: uvicorn.Server) -> None:
            self.server = server
            self.orchestrator.leave_with(lambda: server.should_exit)

        try:
            run_api(self.app, self.host, self.port, ready, keep, ssl_certfile=str(self.identity.cert),
                    ssl_keyfile=str(self.identity.key))
        finally:
            self.plane.stop()
            self.store.close()

    def shutdown(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
