"""`corral kube-node`: register Corral as a node of a Kubernetes cluster and run its pods as container groups."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import typer


def kube_node(
    kubeconfig: Path = typer.Option(..., "--kubeconfig", help="Kubeconfig of the cluster to join."),
    name: str = typer.Option("corral", "--name", help="The Node's name."),
    corral_config: Path | None = typer.Option(None, "--corral-config",
                                              help="Corral client config (default: the one `corral up` wrote)."),
    resource_group: str | None = typer.Option(None, "-g", "--resource-group",
                                              help="Corral resource group of the pods' groups (default kube-NAME)."),
    address: str = typer.Option("127.0.0.1", "--address",
                                help="Address the API server reaches the kubelet API on (Node InternalIP)."),
    listen: str = typer.Option("0.0.0.0", "--listen", help="Address the kubelet API listens on."),
    port: int = typer.Option(10250, "--port", help="Port of the kubelet API (TLS)."),
    state_dir: Path | None = typer.Option(None, "--state-dir", help="Where the serving certificate is kept."),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="Serving certificate of the kubelet API."),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="Its key."),
    client_ca: Path | None = typer.Option(None, "--client-ca",
                                          help="CA of the API server's kubelet client certificate "
                                               "(default: the kubeconfig's cluster CA)."),
    cluster_dns: list[str] = typer.Option([], "--cluster-dns", help="Cluster DNS address for ClusterFirst pods."),
    cluster_domain: str = typer.Option("cluster.local", "--cluster-domain"),
    subnet: str | None = typer.Option(None, "--subnet-id", help="Corral subnet id the pods join."),
    verbose: bool = typer.Option(False, "-v", "--verbose"),
) -> None:
    """Run the Kubernetes virtual node until interrupted."""
    from corral.kube.connector import Connector, ConnectorSettings, default_state_dir

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ConnectorSettings(
        kubeconfig=kubeconfig, name=name, corral_config=corral_config, resource_group=resource_group,
        address=address, listen=listen, kubelet_port=port, state_dir=state_dir or default_state_dir(),
        tls_cert=tls_cert, tls_key=tls_key, client_ca=client_ca, cluster_dns=cluster_dns,
        cluster_domain=cluster_domain, subnet_id=subnet)
    try:
        asyncio.run(Connector(settings).run())
    except KeyboardInterrupt:
        pass
