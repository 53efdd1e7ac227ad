"""The virtual node as Kubernetes sees it: the Node object (capacity from Corral's free capacity, labels,
taint, conditions, the kubelet endpoint) and its Lease in ``kube-node-lease``.

The lease is renewed every ``LEASE_RENEW`` seconds only while Corral's API answers, so the node lifecycle
controller marks the node NotReady (and, past its grace, evicts) exactly when Corral is really gone.
"""

from __future__ import annotations

import asyncio
import logging
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lightkube import AsyncClient
from lightkube.core.exceptions import ApiError
from lightkube.models.coordination_v1 import LeaseSpec
from lightkube.models.core_v1 import (
    DaemonEndpoint,
    NodeAddress,
    NodeCondition,
    NodeDaemonEndpoints,
    NodeSpec,
    NodeStatus,
    NodeSystemInfo,
    Taint,
)
from lightkube.models.meta_v1 import ObjectMeta, OwnerReference
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import Node

from corral.kube.corral_api import CorralApi, CorralRefused, CorralUnavailable

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION = 40
LEASE_RENEW = 10.0
STATUS_EVERY = 60.0  # seconds between full Node status updates while nothing changes
TAINT_KEY = "virtual-kubelet.io/provider"
GIB = 1 << 30


@dataclass
class NodeSettings:
    name: str
    address: str  # where the apiserver reaches the kubelet API
    kubelet_port: int = 10250
    kubelet_version: str = "v1.33.0-corral"
    extra_labels: dict[str, str] | None = None


def labels(settings: NodeSettings) -> dict[str, str]:
    return {
        "type": "virtual-kubelet", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "kubernetes.io/role": "agent", "kubernetes.io/hostname": settings.name,
        "node.kubernetes.io/exclude-from-external-load-balancers": "true",
        **(settings.extra_labels or {}),
    }


def resources(capacity: dict[str, Any], own: tuple[float, float, int]) -> dict[str, str]:
    """What Kubernetes may still place here: Corral's free capacity plus what this node's own pods hold
    (the scheduler subtracts those itself)."""
    free = capacity.get("free") or {}
    cpu = float(free.get("cpu", 0)) + own[0]
    mem = float(free.get("memoryInGB", 0)) + own[1]
    pods = int(free.get("groups", 0)) + own[2]
    out = {"cpu": f"{int(cpu * 1000)}m", "memory": f"{int(mem * GIB) // 1024}Ki", "pods": str(pods),
           "ephemeral-storage": "100Gi"}
    gpus = sum(int(n) for n in (free.get("gpus") or {}).values())
    if gpus:
        out["nvidia.com/gpu"] = str(gpus)
    return out


def conditions(ready: bool, message: str, now: datetime, since: dict[str, datetime]) -> list[NodeCondition]:
    def cond(kind: str, ok: bool, reason: str, msg: str) -> NodeCondition:
        status = "True" if ok else "False"
        key = f"{kind}={status}"
        return NodeCondition(type=kind, status=status, reason=reason, message=msg, lastHeartbeatTime=now,
                             lastTransitionTime=since.setdefault(key, now))

    return [
        cond("Ready", ready, "KubeletReady" if ready else "CorralUnreachable", message),
        cond("MemoryPressure", False, "KubeletHasSufficientMemory", "Corral schedules memory per group"),
        cond("DiskPressure", False, "KubeletHasNoDiskPressure", "Corral manages its nodes' disks"),
        cond("PIDPressure", False, "KubeletHasSufficientPID", "Corral limits processes per group"),
        cond("NetworkUnavailable", False, "RouteCreated", "pods get addresses in Corral's virtual network"),
    ]


def node_object(settings: NodeSettings, capacity: dict[str, Any], own: tuple[float, float, int], ready: bool,
                message: str, since: dict[str, datetime]) -> Node:
    res = resources(capacity, own)
    now = datetime.now(UTC)
    return Node(
        metadata=ObjectMeta(name=settings.name, labels=labels(settings)),
        spec=NodeSpec(taints=[Taint(key=TAINT_KEY, value="corral", effect="NoSchedule")]),
        status=NodeStatus(
            capacity=res, allocatable=res, conditions=conditions(ready, message, now, since),
            addresses=[NodeAddress(type="InternalIP", address=settings.address),
                       NodeAddress(type="Hostname", address=settings.name)],
            daemonEndpoints=NodeDaemonEndpoints(kubeletEndpoint=DaemonEndpoint(Port=settings.kubelet_port)),
            nodeInfo=NodeSystemInfo(
                architecture="amd64", bootID="", containerRuntimeVersion="corral://0.1.0",
                kernelVersion=platform.release(), kubeProxyVersion="", kubeletVersion=settings.kubelet_version,
                machineID="", operatingSystem="linux", osImage="Corral", systemUUID=""),
        ),
    )


class NodeKeeper:
    """Registers the Node, keeps its status and renews its Lease while Corral answers."""

    def __init__(self, kube: AsyncClient, corral: CorralApi, settings: NodeSettings,
                 own_usage: Any) -> None:
        self.kube, self.corral, self.settings = kube, corral, settings
        self.own_usage = own_usage  # () -> (cpu, memoryGB, pods) of this node's pods
        self.healthy = False
        self._since: dict[str, datetime] = {}
        self._last_status = 0.0
        self._last_ready: bool | None = None
        self._node_uid: str | None = None

    async def register(self) -> None:
        """Create the Node, or take over an existing one of this name (a restart)."""
        capacity, ready, message = await self._corral_state()
        node = node_object(self.settings, capacity, self.own_usage(), ready, message, self._since)
        try:
            created = await self.kube.create(node)
        except ApiError as exc:
            if exc.status.code != 409:
                raise
            created = await self.kube.patch(Node, self.settings.name, {"metadata": {"labels": labels(self.settings)},
                                                                       "spec": {"taints": [t.to_dict() for t in
                                                                                           node.spec.taints or []]}})
        self._node_uid = created.metadata.uid if created.metadata else None
        await self._patch_status(node)
        self.healthy = ready
        if ready:
            await self.renew_lease()

    async def _corral_state(self) -> tuple[dict[str, Any], bool, str]:
        try:
            capacity = await self.corral.capacity(attempts=1)
            return capacity, True, "Corral's API answers; pods run as container groups"
        except (CorralUnavailable, CorralRefused) as exc:
            return {}, False, f"Corral's API does not answer: {exc}"

    async def _patch_status(self, node: Node) -> None:
        assert node.status is not None
        await self.kube.patch(Node.Status, self.settings.name, {"status": node.status.to_dict()})
        self._last_status = asyncio.get_running_loop().time()

    async def renew_lease(self) -> None:
        now = datetime.now(UTC)
        spec = LeaseSpec(holderIdentity=self.settings.name, leaseDurationSeconds=LEASE_DURATION, renewTime=now)
        try:
            await self.kube.patch(Lease, self.settings.name, {"spec": spec.to_dict()}, namespace=LEASE_NAMESPACE)
        except ApiError as exc:
            if exc.status.code != 404:
                raise
            owner = [OwnerReference(apiVersion="v1", kind="Node", name=self.settings.name,
                                    uid=self._node_uid)] if self._node_uid else None
            await self.kube.create(Lease(metadata=ObjectMeta(name=self.settings.name, namespace=LEASE_NAMESPACE,
                                                             ownerReferences=owner), spec=spec))

    async def step(self) -> None:
        capacity, ready, message = await self._corral_state()
        self.healthy = ready
        if ready:
            await self.renew_lease()
        loop_now = asyncio.get_running_loop().time()
        if ready != self._last_ready or loop_now - self._last_status >= STATUS_EVERY:
            if ready or self._last_ready is not False:
                # While Corral is down the capacity is unknown: only the condition changes.
                node = node_object(self.settings, capacity if ready else {"free": {}}, self.own_usage() if ready
                                   else (0.0, 0.0, 0), ready, message, self._since)
                if not ready:
                    assert node.status is not None
                    node.status.capacity = node.status.allocatable = None
                await self._patch_status(node)
            self._last_ready = ready

    async def run(self) -> None:
        while True:
            try:
                await self.step()
            except ApiError as exc:
                log.warning("node %s: the API server refused a node update: %s", self.settings.name, exc)
            except Exception:  # keep renewing whatever happened once
                log.exception("node %s: status update failed", self.settings.name)
            await asyncio.sleep(LEASE_RENEW)
