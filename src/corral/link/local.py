"""``ControlPlaneLink`` served in-process from the store: the all-in-one's agent uses it directly.

The control plane side of the link; the agent side only knows ``corral.link.protocol``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from corral.link.protocol import AGENT_PREFIXES
from corral.model.metrics import MetricsReport
from corral.model.records import GROUPS, NODES, GroupRecord, NodeInfo, status_key
from corral.model.status import GroupStatus
from corral.store.base import Compacted, Store

if TYPE_CHECKING:
    from corral.control.metrics.history import MetricsHistory
    from corral.control.netplane import NetworkControl
    from corral.net.vnet.config import VnetConf
    from corral.net.vnet.nsg import SecurityRule


class LocalLink:
    network: NetworkControl | None = None  # set by the ControlPlane
    metrics: MetricsHistory | None = None  # set by the ControlPlane

    def __init__(self, store: Store) -> None:
        self.store = store

    def register(self, node: NodeInfo) -> None:
        self.store.put(NODES + node.name, node.model_dump(mode="json"))

    def assignments(self, node: str) -> tuple[int, dict[str, GroupRecord]]:
        rev = self.store.revision()
        out = {}
        for rec in self.store.list(GROUPS):
            group = GroupRecord.model_validate(rec.value)
            if group.meta.node == node:
                out[rec.key] = group
        return rev, out

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
        if rec is None:
            return None
        group = GroupRecord.model_validate(rec.value)
        return group if group.meta.node == node else None

    def last_status(self, uid: str) -> GroupStatus | None:
        rec = self.store.get(status_key(uid))
        return GroupStatus.model_validate(rec.value) if rec else None

    def report(self, status: GroupStatus) -> None:
        self.store.put(status_key(status.uid), status.model_dump(mode="json"))

    def release(self, key: str, uid: str) -> None:
        rec = self.store.get(key)
        if rec is not None and rec.value["meta"]["uid"] == uid:
            self.store.delete(key, expect_version=rec.version)
        self.store.delete(status_key(uid))

    def vnet_config_for(self, node: str, subnet_id: str | None) -> VnetConf:
        from corral.control.netplane import NetworkControl

        return (self.network or NetworkControl(self.store)).vnet_config_for(node, subnet_id)

    def group_rules(self, nsg_id: str, subnet_id: str | None) -> list[SecurityRule]:
        from corral.control.netplane import NetworkControl

        return (self.network or NetworkControl(self.store)).group_rules(nsg_id, subnet_id)

    def report_metrics(self, report: MetricsReport) -> None:
        if self.metrics is not None:
            self.metrics.receive(report)
