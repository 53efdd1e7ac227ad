"""``corral kube-node``: the Node, the pod controller and the kubelet API, together."""

from __future__ import annotations

import asyncio
import base64
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lightkube import AsyncClient, KubeConfig

from corral.api.tls import ensure_certificates
from corral.config import ClientConfig
from corral.kube.authz import KubeAuthorizer
from corral.kube.corral_api import CorralApi
from corral.kube.kubelet import KubeletApi, serve
from corral.kube.mapping import MappingSettings
from corral.kube.metrics import PodMetrics
from corral.kube.node import NodeKeeper, NodeSettings
from corral.kube.pods import PodController

log = logging.getLogger(__name__)


@dataclass
class ConnectorSettings:
    kubeconfig: Path
    name: str = "corral"
    corral_config: Path | None = None
    resource_group: str | None = None  # default: kube-<name>
    address: str = "127.0.0.1"  # where the API server reaches this node's kubelet API
    listen: str = "0.0.0.0"
    kubelet_port: int = 10250
    state_dir: Path = Path("/var/lib/corral/kube-node")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    client_ca: Path | None = None  # verifies the API server's kubelet client certificate; default: the kubeconfig CA
    cluster_dns: list[str] = field(default_factory=list)
    cluster_domain: str = "cluster.local"
    subnet_id: str | None = None


def _kubeconfig_ca(config: KubeConfig, state: Path) -> Path | None:
    cluster = config.get().cluster
    if cluster.certificate_auth:
        return Path(cluster.certificate_auth)
    if cluster.certificate_auth_data:
        path = state / "cluster-ca.pem"
        path.write_bytes(base64.b64decode(cluster.certificate_auth_data))
        return path
    return None


class Connector:
    def __init__(self, settings: ConnectorSettings) -> None:
        self.settings = settings
        s = settings
        s.state_dir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig = KubeConfig.from_file(str(s.kubeconfig))
        self.kube = AsyncClient(config=self.kubeconfig)
        cfg = ClientConfig.load(s.corral_config) if s.corral_config else ClientConfig.load()
        self.corral = CorralApi(cfg, s.resource_group or f"kube-{s.name}")
        search = f"{self.corral.rg.lower()}.corral.local"
        self.mapping = MappingSettings(node_name=s.name, location=cfg.location, cluster_dns=s.cluster_dns,
                                       cluster_domain=s.cluster_domain, corral_search=search, subnet_id=s.subnet_id)
        self.pods = PodController(self.kube, self.corral, self.mapping, host_ip=s.address)
        self.node = NodeKeeper(self.kube, self.corral, NodeSettings(s.name, s.address, s.kubelet_port),
                               self.pods.own_usage)
        self.metrics = PodMetrics(self.corral, s.name)
        authorizer = KubeAuthorizer(self.kube, s.name)
        self.kubelet = KubeletApi(self.corral, authorizer, s.name,
                                  lambda: [p for p in self.pods.pods.values()], self.metrics)

    def _tls(self) -> tuple[str, str, str | None]:
        s = self.settings
        if s.tls_cert and s.tls_key:
            cert, key = str(s.tls_cert), str(s.tls_key)
        else:
            _, c, k = ensure_certificates(s.state_dir / "tls", [s.address, s.name, "localhost"])
            cert, key = str(c), str(k)
        ca = s.client_ca or _kubeconfig_ca(self.kubeconfig, s.state_dir)
        return cert, key, str(ca) if ca else None

    async def run(self) -> None:
        cert, key, ca = self._tls()
        server = asyncio.create_task(serve(self.kubelet, self.settings.listen, self.settings.kubelet_port,
                                           cert, key, ca))
        await self.node.register()
        tasks = await self.pods.start()
        tasks += [server, asyncio.create_task(self.node.run())]
        log.info("node %s registered; kubelet API on %s:%d", self.settings.name, self.settings.address,
                 self.settings.kubelet_port)
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.corral.close()
            await self.kube.close()


def default_state_dir() -> Path:
    base = Path("/var/lib/corral")
    return base / "kube-node" if base.exists() else Path(tempfile.gettempdir()) / "corral-kube-node"
