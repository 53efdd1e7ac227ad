"""The scheduling controller: binds unplaced groups to nodes.

Level-triggered: on any change it looks at every unbound group, so a missed
event or a crash between the read and the write costs nothing but a retry.
"""

from __future__ import annotations

import logging
import threading

from corral.errors import VersionConflict
from corral.model.records import GROUPS, NODES, GroupRecord, NodeInfo, status_key
from corral.model.status import GroupStatus, record_event
from corral.scheduler.placement import Unschedulable, loads, place
from corral.store.base import Store

log = logging.getLogger(__name__)


class Binder:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="binder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        rev = 0
        while not self._stop.is_set():
            try:
                self.reconcile()
                events = self.store.watch("/", rev, timeout=1.0)
                rev = events[-1].revision if events else self.store.revision()
            except Exception:  # keep the controller alive; the next pass retries
                log.exception("binder pass failed")
                self._stop.wait(1.0)

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
        self.store.put(status_key(group.meta.uid), status.model_dump(mode="json"))
