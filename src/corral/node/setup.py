"""Assemble a node from its settings: image store, runtime, network, host and agent."""

from __future__ import annotations

import logging
import os
import platform
import re
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, model_validator

from corral.errors import NetworkError
from corral.link.protocol import ControlPlaneLink
from corral.model.records import NodeInfo
from corral.model.status import now
from corral.net.vnet import client as vnet_client
from corral.net.vnet.config import VnetConf
from corral.node.host import NodeHost
from corral.node.images.store import ImageStore
from corral.node.network.backend import NodeNetwork
from corral.node.network.networks import NetworkSet
from corral.node.network.sandbox import NetworkConfig, NetworkManager
from corral.node.runtime import cgroups
from corral.node.runtime.runtime import Runtime
from corral.node.volumes.backends import share_backend, shares_root
from corral.node.volumes.manager import VolumeManager

if TYPE_CHECKING:  # imported by what starts a node (`corral node reset` builds only the host)
    from corral.net.vnet.service import CniService
    from corral.node.agent import NodeAgent
    from corral.node.lease import NodeLease

log = logging.getLogger(__name__)


class NodeSettings(BaseModel):
    name: str = socket.gethostname()
    data_dir: Path
    public_ip: str = "127.0.0.1"
    runtime: str = "crun"
    # "vnet": groups get addresses in virtual networks (corral-vnet, in-process); "bridge": one
    # plain CNI bridge network (standard plugins), as before virtual networks existed.
    network: Literal["vnet", "bridge"] = "vnet"
    bridge: str = "corral0"  # bridge mode only
    subnet: str = "10.240.0.0/16"  # bridge mode: its range; vnet mode: the default virtual network's
    pool_size: int = 2  # ready network sandboxes kept per virtual network (vnet mode)
    # Warm containers kept per recently started image (vnet mode, crun): started ahead, each becomes a
    # container in well under the time crun takes (node/warm_pool.py). 0: none.
    warm_containers: int = Field(default=0, ge=0, le=16)
    dns_zone: str = "corral.local"
    dns_enabled: bool = True
    cgroup_parent: str = "/corral"
    # Prefix of the network namespaces of groups under /var/run/netns (agents sharing a machine differ).
    netns_prefix: str = "corral-"
    max_groups: int = 250
    # Privileged containers run only where the operator allowed them (`corral up --allow-privileged`).
    allow_privileged: bool = False
    # Isolation of groups that don't choose one: "default" (crun) or "sandboxed" (gVisor).
    isolation: Literal["default", "sandboxed"] = "default"
    # Remount cgroup2 with favordynmods so moving a task into a cgroup skips an RCU grace period.
    cgroup_favordynmods: bool = True
    # Where azureFile shares live: None = as this node remembers (directories here unless told
    # otherwise); "local"; or "gluster://SERVER[,SERVER...]/VOLUME", a GlusterFS volume every node
    # of a cluster mounts at <data_dir>/shares, so a group that moves finds its files (docs/shares.md).
    shares: str | None = None
    # Seconds between usage samples (CPU, memory, network) sent to the control plane; 0: none.
    metrics_interval: float = 5.0
    # Placement attributes the node registers with (the scheduler reads them).
    zone: str | None = None
    labels: dict[str, str] = {}
    gpus: dict[str, int] | None = None  # None: detect
    # What the node offers the scheduler, at most the machine's (None: all of it): agents sharing one
    # machine each offer their part (`--cpu`, `--memory`), so placement sees the nodes they model.
    cpu: float | None = None
    memory_gb: float | None = None
    # Where the node's network service takes corral-vnet CNI calls from the executable (runtimes such
    # as Podman run it); None: no service, the executable does the work itself.
    cni_socket: str | None = Field(default_factory=lambda: os.environ.get(vnet_client.SOCKET_ENV)
                                   or vnet_client.DEFAULT_SOCKET)


    @model_validator(mode="after")
    def _within_the_machine(self) -> NodeSettings:
        if self.cpu is None and self.memory_gb is None:
            return self
        cores, mem = machine_capacity()
        for flag, value, have, unit in (("--cpu", self.cpu, cores, "cores"), ("--memory", self.memory_gb, mem, "GB")):
            if value is not None and not 0 < value <= have:
                raise ValueError(f"{flag} {value:g}: a node offers more than 0 and at most this machine's "
                                 f"{have:g} {unit}")
        return self

    def capacity(self) -> tuple[float, float]:
        """CPU cores and memory GB this node offers: the overrides, else the machine's."""
        cores, mem = machine_capacity()
        return (self.cpu if self.cpu is not None else cores), (self.memory_gb if self.memory_gb is not None else mem)


def machine_capacity() -> tuple[float, float]:
    """CPU cores and memory GB of this machine."""
    cores = float(os.cpu_count() or 1)
    mem_kb = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return cores, round(mem_kb / 1024 / 1024, 1)


def os_image() -> str:
    """The node's OS as `corral node show` reports it: the distribution's name and the kernel release."""
    name = platform.system()
    try:
        for line in open("/etc/os-release"):
            if line.startswith("PRETTY_NAME="):
                name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{name}, kernel {platform.release()}"


def detect_gpus(proc: Path = Path("/proc/driver/nvidia/gpus")) -> dict[str, int]:
    """NVIDIA GPUs by SKU (K80, P100, V100 as ACI names them, else the model name), from the driver's /proc files."""
    out: dict[str, int] = {}
    if not proc.is_dir():
        return out
    for info in proc.glob("*/information"):
        model = ""
        for line in info.read_text(errors="replace").splitlines():
            if line.startswith("Model:"):
                model = line.split(":", 1)[1].strip()
        sku = next((k for k in ("K80", "P100", "V100") if k in model), re.sub(r"\s+", "-", model) or "GPU")
        out[sku] = out.get(sku, 0) + 1
    return out


def build_network(settings: NodeSettings, link: ControlPlaneLink | None,
                  on_network: Callable[[VnetConf], None] | None = None) -> NodeNetwork:
    root = settings.data_dir / "node"
    if settings.network == "bridge":
        return NetworkManager(NetworkConfig(state_dir=root / "network", bridge=settings.bridge,
                                            subnet=settings.subnet, netns_prefix=settings.netns_prefix))

    def config_for(subnet_id: str | None) -> VnetConf:
        if link is None:
            raise NetworkError("this node is not connected to a control plane: it cannot join new networks")
        return link.vnet_config_for(settings.name, subnet_id)

    return NetworkSet(root / "vnets", config_for, pool_size=settings.pool_size, on_network=on_network,
                      netns_prefix=settings.netns_prefix)


def build_host(settings: NodeSettings, link: ControlPlaneLink | None = None,
               on_network: Callable[[VnetConf], None] | None = None) -> NodeHost:
    root = settings.data_dir / "node"
    images = ImageStore(settings.data_dir / "images")
    runtime = Runtime(root / "runtime", runtime=settings.runtime)
    network = build_network(settings, link, on_network)
    volumes = VolumeManager(root / "volumes", shares_root(settings.data_dir),
                            shares=share_backend(settings.data_dir, settings.shares))
    return NodeHost(root, images, runtime, network, settings.public_ip, cgroup_parent=settings.cgroup_parent,
                    volumes=volumes, allow_privileged=settings.allow_privileged, isolation=settings.isolation,
                    dns_zone=settings.dns_zone, dns_enabled=settings.dns_enabled,
                    warm_containers=settings.warm_containers)


def node_info(settings: NodeSettings, endpoint: str | None = None, lease_seconds: float | None = None) -> NodeInfo:
    """What the node registers with: capacity, placement attributes, OS, and for a remote agent its endpoint."""
    cores, mem = settings.capacity()
    return NodeInfo(
        name=settings.name, address=settings.public_ip, cpu=cores, memoryGB=mem,
        maxGroups=settings.max_groups, lastHeartbeat=now(), zone=settings.zone, labels=dict(settings.labels),
        gpus=settings.gpus if settings.gpus is not None else detect_gpus(), osImage=os_image(),
        endpoint=endpoint, leaseSeconds=lease_seconds,
    )


def start_cni_service(settings: NodeSettings) -> CniService | None:
    """The node's network service for the corral-vnet executable (None: off, or another agent serves it)."""
    if not settings.cni_socket:
        return None
    from corral.net.vnet.service import CniService

    service = CniService(settings.cni_socket)
    try:
        return service if service.start() else None
    except OSError as exc:
        log.warning("corral-vnet network service not started on %s: %s", settings.cni_socket, exc)
        return None


def build_agent(settings: NodeSettings, link: ControlPlaneLink, host: NodeHost, info: NodeInfo | None = None,
                lease: NodeLease | None = None, wait_timeout: float = 1.0) -> NodeAgent:
    from corral.node.agent import NodeAgent
    from corral.node.loadbalancer import LoadBalancerRules

    if settings.cgroup_favordynmods:  # tuning for a node that starts containers, not for `node reset`
        cgroups.favor_dynamic_changes()
    return NodeAgent(link, host, info or node_info(settings), lease=lease, wait_timeout=wait_timeout,
                     metrics_interval=settings.metrics_interval, lb=LoadBalancerRules(settings.data_dir / "node"))
