"""The interface between the control plane and node agents.

An agent sees only this: its assignments (group records bound to its node),
a way to wait for them to change, and a place to report what it observes.
``LocalLink`` serves it from the store in the same process; a remote agent
will get the same interface over HTTP, so nothing in the agent knows which.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

from corral.control.netkeys import NODE_BLOCKS, NSGS, VNETS
from corral.model.records import GROUPS, NODES, GroupRecord, NodeInfo, status_key
from corral.model.status import GroupStatus
from corral.store.base import Compacted, Store

if TYPE_CHECKING:
    from corral.control.netplane import NetworkControl
    from corral.net.vnet.config import VnetConf
    from corral.net.vnet.nsg import SecurityRule


# What an agent follows: its groups, and what its networks are made of.
AGENT_PREFIXES = (GROUPS, VNETS, NSGS, NODE_BLOCKS)
NETWORK_PREFIXES = (VNETS, NSGS, NODE_BLOCKS)


class ControlPlaneLink(Protocol):
    def register(self, node: NodeInfo) -> None: ...

    def assignments(self, node: str) -> tuple[int, dict[str, GroupRecord]]:
        """The groups bound to ``node`` now, and the revision to wait from."""
        ...

    def wait(self, node: str, after: int, timeout: float) -> tuple[int, set[str] | None]:
        """Keys changed since ``after`` (None: history lost, re-list), and the new revision.

        Group keys (under ``/groups/``) and network keys (virtual networks, security groups,
        node blocks: the node re-reads its network configuration when one changes).
        """
        ...

    def assignment(self, node: str, key: str) -> GroupRecord | None: ...

    def last_status(self, uid: str) -> GroupStatus | None: ...

    def report(self, status: GroupStatus) -> None: ...

    def release(self, key: str, uid: str) -> None:
        """The agent removed everything of a deleted group: forget it."""
        ...

    def vnet_config_for(self, node: str, subnet_id: str | None) -> VnetConf:
        """The node's corral-vnet config for a subnet (None: the default network), granting a block."""
        ...

    def group_rules(self, nsg_id: str, subnet_id: str | None) -> list[SecurityRule]:
        """The security rules of a group's own network security group ([] once it is gone)."""
        ...


class LocalLink:
    network: NetworkControl | None = None  # set by the ControlPlane

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
