"""``ControlPlaneLink`` served in-process from the store: the all-in-one's agent uses it directly,
and the HTTP routes (``corral.link.routes``) call it for remote agents once they are authorized.

The control plane side of the link; the agent side only knows ``corral.link.protocol``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from corral.errors import NotAssigned, StaleBinding, VersionConflict
from corral.link.protocol import AGENT_PREFIXES
from corral.model.metrics import MetricsReport
from corral.model.records import GROUPS, LEASES, NODES, GroupRecord, NodeInfo, status_key
from corral.model.status import GroupStatus
from corral.net.dns.feed import DnsUpdate, store_changes
from corral.store.base import ABSENT, Compacted, Store

if TYPE_CHECKING:
    from corral.control.loadbalancers import LoadBalancerService
    from corral.control.metrics.history import MetricsHistory
    from corral.control.netplane import NetworkControl
    from corral.model.lb import NodeLbRules
    from corral.net.vnet.config import VnetConf
    from corral.net.vnet.nsg import SecurityRule

# What the control plane decides of a node; a node registering again keeps it.
CONTROL_FIELDS = ("unschedulable", "draining", "evicting", "drainBlocked")


class LocalLink:
    network: NetworkControl | None = None  # set by the ControlPlane
    metrics: MetricsHistory | None = None  # set by the ControlPlane
    loadbalancers: LoadBalancerService | None = None  # set by the ControlPlane

    def __init__(self, store: Store) -> None:
        self.store = store

    def register(self, node: NodeInfo) -> None:
        key = NODES + node.name
        for _ in range(10):
            cur = self.store.get(key)
            value = node.model_dump(mode="json")
            if cur is not None:
                value.update({k: cur.value[k] for k in CONTROL_FIELDS if k in cur.value})
            try:
                self.store.put(key, value, expect_version=cur.version if cur else ABSENT)
                return
            except VersionConflict:
                continue
        raise VersionConflict(f"node '{node.name}' is changing too often to register; retry")

    def heartbeat(self, node: str, hold: float = 0.0) -> None:
        self.store.put(LEASES + node, {"node": node, "renewedAt": datetime.now(UTC).isoformat(), "hold": hold})

    def assignments(self, node: str) -> tuple[int, dict[str, GroupRecord]]:
        rev = self.store.revision()
        # Every group of the cluster is listed: only the node's own are worth a model validation.
        return rev, {rec.key: GroupRecord.model_validate(rec.value) for rec in self.store.list(GROUPS)
                     if _bound_to(rec.value, node)}

    def wait(self, node: str, after: int, timeout: float) -> tuple[int, set[str] | None]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                events = self.store.watch("/", after, max(0.0, deadline - time.monotonic()))
            except Compacted:
                return self.store.revision(), None
            if not events:
                return after, set()
            after = events[-1].revision
            keys = {e.key for e in events if e.key.startswith(AGENT_PREFIXES)}
            if keys or time.monotonic() >= deadline:  # status and metering writes are not the agent's concern
                return after, keys

    def assignment(self, node: str, key: str) -> GroupRecord | None:
        rec = self.store.get(key)
        # Every node's wait asks this of each changed group: another node's is not validated.
        if rec is None or not _bound_to(rec.value, node):
            return None
        return GroupRecord.model_validate(rec.value)

    def last_status(self, key: str, uid: str) -> GroupStatus | None:
        rec = self.store.get(status_key(uid))
        return GroupStatus.model_validate(rec.value) if rec else None

    def report(self, key: str, status: GroupStatus) -> None:
        skey = status_key(status.uid)
        for _ in range(10):
            group = self.store.get(key)
            if group is None or group.value["meta"]["uid"] != status.uid:
                raise NotAssigned(f"container group {status.uid} is gone; nothing to report on")
            if group.value["meta"].get("epoch", 0) > status.epoch:
                raise StaleBinding(f"container group {status.uid} was rebound (epoch "
                                   f"{group.value['meta'].get('epoch', 0)}); this report is for epoch {status.epoch}")
            cur = self.store.get(skey)
            if cur is not None and cur.value.get("epoch", 0) > status.epoch:
                raise StaleBinding(f"the status of container group {status.uid} is already at epoch "
                                   f"{cur.value.get('epoch', 0)}; this report is for epoch {status.epoch}")
            try:
                # A compare-and-swap: a rebinding that lands between the check and the write wins.
                self.store.put(skey, status.model_dump(mode="json"), expect_version=cur.version if cur else ABSENT)
                return
            except VersionConflict:
                continue
        raise VersionConflict(f"the status of container group {status.uid} is changing too often; retry")

    def release(self, key: str, uid: str) -> None:
        rec = self.store.get(key)
        if rec is not None and rec.value["meta"]["uid"] == uid:
            self.store.delete(key, expect_version=rec.version)
        self.store.delete(status_key(uid))

    def vnet_config_for(self, node: str, subnet_id: str | None) -> VnetConf:
        from corral.control.netplane import NetworkControl

        return (self.network or NetworkControl(self.store)).vnet_config_for(node, subnet_id)

    def group_rules(self, key: str, nsg_id: str, subnet_id: str | None) -> list[SecurityRule]:
        from corral.control.netplane import NetworkControl

        return (self.network or NetworkControl(self.store)).group_rules(nsg_id, subnet_id)

    def report_metrics(self, report: MetricsReport) -> None:
        if self.metrics is not None:
            self.metrics.receive(report)

    def dns_changes(self, after: int, timeout: float) -> DnsUpdate:
        return store_changes(self.store, after, timeout)

    def load_balancer_rules(self, node: str) -> NodeLbRules:
        from corral.model.lb import NodeLbRules

        if self.loadbalancers is None:
            return NodeLbRules(revision=self.store.revision())
        return self.loadbalancers.node_rules(node)

    def report_load_balancers(self, node: str, revision: int) -> None:
        if self.loadbalancers is not None:
            self.loadbalancers.report_applied(node, revision)


def _bound_to(value: dict[str, Any], node: str) -> bool:
    """Whether a stored group record (``GroupRecord.dump()``) is bound to ``node``."""
    return value.get("meta", {}).get("node") == node
