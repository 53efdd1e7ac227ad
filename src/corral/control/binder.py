"""The scheduling controller: binds unplaced groups to nodes.

Level-triggered: on any change it looks at every unbound group, so a missed
event or a crash between the read and the write costs nothing but a retry.
"""

from __future__ import annotations

import logging

from corral.control.controller import Controller
from corral.errors import VersionConflict
from corral.model.records import GROUPS, NODES, GroupRecord, NodeInfo, status_key
from corral.model.status import GroupStatus, record_event
from corral.scheduler.placement import Unschedulable, loads, place
from corral.store.base import Event

log = logging.getLogger(__name__)


class Binder(Controller):
    name = "binder"

    def resync(self) -> None:
        self.reconcile()

    def handle(self, events: list[Event]) -> None:
        if any(e.key.startswith((GROUPS, NODES)) for e in events):
            self.reconcile()

    def reconcile(self) -> None:
        records = self.store.list(GROUPS)
        groups = [(r, GroupRecord.model_validate(r.value)) for r in records]
        pending = [(r, g) for r, g in groups if g.meta.node is None]
        if not pending:
            return
        nodes = [NodeInfo.model_validate(r.value) for r in self.store.list(NODES)]
        node_loads = loads(nodes, [g for _, g in groups])
        for rec, group in pending:
            if group.meta.deleting:
                # Never reached a node: nothing to tear down.
                self.store.delete(rec.key, expect_version=rec.version)
                self.store.delete(status_key(group.meta.uid))
                continue
            try:
                node = place(group, node_loads)
            except Unschedulable as exc:
                self._report_unschedulable(group, str(exc))
                continue
            group.meta.node = node
            try:
                self.store.put(rec.key, group.dump(), expect_version=rec.version)
            except VersionConflict:
                continue  # changed meanwhile; the next pass sees the new version
            node_loads = loads(nodes, [g for _, g in groups])

    def _report_unschedulable(self, group: GroupRecord, reason: str) -> None:
        rec = self.store.get(status_key(group.meta.uid))
        status = GroupStatus.model_validate(rec.value) if rec else GroupStatus(uid=group.meta.uid, node="")
        if status.events and status.events[-1].message == reason:
            return  # already said; writing again would wake this controller in a loop
        record_event(status.events, "FailedScheduling", reason, "Warning")
        # The create operation ends Failed with the reason; the group stays Pending and is placed
        # (the node's first pass clears the error) if a node that fits turns up.
        status.provisioningError = reason
        self.store.put(status_key(group.meta.uid), status.model_dump(mode="json"))
