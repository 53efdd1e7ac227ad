"""Node lifecycle, on the leader: heartbeat leases, NotReady, failover, drains.

- **Leases**: a remote node renews ``/leases/<node>`` by heartbeat. This controller notes, on
  its own monotonic clock, when it last saw each renewal; a node silent for longer than its
  ``leaseSeconds`` (plus the ``hold`` an agent stopping to restart asked for) is marked NotReady,
  and Ready again when renewals come back. A new leader
  starts every node's count afresh (it cannot know how old the last renewal was), which
  only ever delays a failover, never hastens it.
- **Failover**: the groups of a NotReady (or unregistered) node that should still run are
  unbound (node None, epoch + 1, a status saying why) in one transaction; the binder places
  them. By then the node has fenced itself: its lease on the groups (``corral.node.lease``)
  is shorter than the node lease here. Groups being deleted are finalized (the node cannot
  do it); finished groups stay where they ran, with their status. A node that does not fence
  itself (``selfFencing`` off) keeps its groups until it is back or removed.
- **Drain**: one group at a time is marked ``evicting``, once the scheduler can place it on
  another node (``corral.control.drainplan``); its node stops it and says so
  (``status.evicted``), then it is unbound and placed elsewhere; the next one goes once the
  moved group runs again (or after ``MOVE_TIMEOUT``). Groups that fit on no other node stay
  and are listed on the node (``drainBlocked``); they are tried again every ``DRAIN_RECHECK``.
  Stopped groups are unbound at once. The same eviction moves a group the binder found no
  longer fits on its node (``evictReason`` says why).

Level-triggered like every controller: each pass looks at all nodes and groups.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from corral.control.controller import Controller
from corral.control.drainplan import DrainPlanner
from corral.errors import CorralError, NotFound, VersionConflict
from corral.model.records import GROUPS, LEASES, NODES, GroupRecord, NodeInfo, status_key
from corral.model.status import ContainerStateView, ContainerStatus, GroupStatus, record_event
from corral.store.base import ABSENT, Delete, Event, Put, Record, Store
from corral.store.update import update_record
from corral.telemetry import FAILOVERS

log = logging.getLogger(__name__)

LEASE_CHECK = 0.1  # seconds between looks at the leases
MOVE_TIMEOUT = 60.0  # a drain goes on with the next group if a moved one is not running elsewhere by then
DRAIN_RECHECK = 2.0  # seconds between looks for room for groups a drain could not move


def update_node(store: Store, name: str, missing: Callable[[], CorralError], busy: str, /,
                **fields: object) -> NodeInfo:
    """Set fields of a node's record (compare-and-swap, retried); ``missing()`` is raised if it is gone."""
    def apply(n: NodeInfo | None) -> NodeInfo:
        assert n is not None
        for k, v in fields.items():
            setattr(n, k, v)
        return n

    return update_record(store, NODES + name, NodeInfo, apply, missing=missing, busy=busy)[0]


def finished(group: GroupRecord, status: GroupStatus | None) -> bool:
    """Ended for good on its node (Succeeded or Failed under its restart policy): it must not run again."""
    return status is not None and status.epoch == group.meta.epoch and status.state in ("Succeeded", "Failed")


class NodeLifecycle(Controller):
    name = "node-lifecycle"
    watch_timeout = LEASE_CHECK

    def __init__(self, store: Store, planner: DrainPlanner | None = None) -> None:
        super().__init__(store)
        self.planner = planner or DrainPlanner(store, follows=True)
        self._blocked: dict[str, float] = {}  # draining node -> when to look again for room for its groups
        self._seen: dict[str, float] = {}  # node -> monotonic time its lease was last renewed (as seen here)
        self._hold: dict[str, float] = {}  # node -> seconds beyond its lease it asked for (an agent restarting)
        self._nodes: dict[str, NodeInfo] = {}
        self._moving: dict[str, float] = {}  # group key a drain moves -> when the move began
        self._evicting = False  # some group is being evicted: its node's report (a status) finishes it

    # following the store -------------------------------------------------------
    def resync(self) -> None:
        self.planner.reset()
        now = time.monotonic()
        self._nodes = {r.key[len(NODES):]: NodeInfo.model_validate(r.value) for r in self.store.list(NODES)}
        self._seen = {name: now for name in self._nodes}  # every node gets a full lease from here
        # A hold an agent asked for before this leader took over still stands (its watchdog honours it).
        self._hold = {r.key[len(LEASES):]: float(r.value.get("hold") or 0.0) for r in self.store.list(LEASES)}
        self._check_leases()
        self.reconcile()

    def handle(self, events: list[Event]) -> None:
        self.planner.follow(events)
        now = time.monotonic()
        changed = False
        for e in events:
            if e.key.startswith(LEASES):
                name = e.key[len(LEASES):]
                self._seen[name] = now
                self._hold[name] = float((e.value or {}).get("hold") or 0.0)
            elif e.key.startswith(NODES):
                name = e.key[len(NODES):]
                if e.value is None:
                    self._nodes.pop(name, None)
                else:
                    self._nodes[name] = NodeInfo.model_validate(e.value)
                    self._seen.setdefault(name, now)
                changed = True
            elif e.key.startswith(GROUPS) or ((self._moving or self._evicting) and e.key.startswith("/status/")):
                changed = True
        if self._check_leases() or changed:
            self.reconcile()

    def tick(self) -> None:
        if self._check_leases():
            self.reconcile()
        elif self._moving and any(time.monotonic() - t > MOVE_TIMEOUT for t in self._moving.values()):
            self.reconcile()
        elif self._blocked and min(self._blocked.values()) <= time.monotonic():
            self.reconcile()

    def _check_leases(self) -> bool:
        """Mark nodes NotReady / Ready by their leases; True if any changed."""
        now = time.monotonic()
        changed = False
        for name, node in list(self._nodes.items()):
            if node.leaseSeconds is None:
                continue  # in the server's own process: no lease
            silent = now - self._seen.get(name, now)
            alive = silent <= node.leaseSeconds + self._hold.get(name, 0.0)
            if alive != node.ready:
                self._set_ready(name, alive, silent)
                changed = True
        return changed

    def _update_node(self, name: str, **fields: object) -> bool:
        """Set fields of a node's record; False if the node is gone."""
        try:
            node = update_node(self.store, name, lambda: NotFound(name), f"node {name} is changing too often",
                               **fields)
        except NotFound:
            self._nodes.pop(name, None)
            return False
        self._nodes[name] = node
        return True

    def _set_ready(self, name: str, ready: bool, silent: float) -> None:
        if not self._update_node(name, ready=ready):
            return
        if ready:
            log.info("node %s is Ready again", name)
        else:
            log.warning("node %s is NotReady: no heartbeat for %.1f s", name, silent)

    # groups ----------------------------------------------------------------------
    def reconcile(self) -> None:
        records = {r.key: r for r in self.store.list(GROUPS)}
        self._evicting = False
        for rec in records.values():
            meta = rec.value["meta"]
            name = meta.get("node")
            if name is None:
                continue
            node = self._nodes.get(name)
            lost = node is None or (node.leaseSeconds is not None and not node.ready)
            if not lost and not meta.get("evicting"):
                continue  # most groups: nothing to do, not worth a model validation in a pass per group change
            group = GroupRecord.model_validate(rec.value)
            if node is None:
                self._leave(rec, group, f"node {name} is no longer part of the cluster")
            elif node.leaseSeconds is not None and not node.ready:
                silent = time.monotonic() - self._seen.get(name, time.monotonic())
                self._leave(rec, group, f"node {name} is NotReady (no heartbeat for {silent:.1f} s)",
                            lost_at=datetime.now(UTC) - timedelta(seconds=max(0.0, silent)))
            elif group.meta.evicting:
                self._evicting = True
                self._finish_eviction(rec, group, name)
        for node in list(self._nodes.values()):
            if node.draining and node.ready:
                self._drain_step(node, records)
            else:
                self._blocked.pop(node.name, None)

    def _status(self, group: GroupRecord) -> tuple[GroupStatus | None, int]:
        rec = self.store.get(status_key(group.meta.uid))
        return (GroupStatus.model_validate(rec.value), rec.version) if rec else (None, ABSENT)

    def _leave(self, rec: Record, group: GroupRecord, why: str, lost_at: datetime | None = None) -> None:
        """A group whose node is gone: finalize its delete, leave it be (finished, stopped), or fail it over."""
        status, version = self._status(group)
        props = group.spec.properties
        done = finished(group, status)
        if group.meta.deleting or (done and props.deleteOnExit):
            try:
                self.store.txn([Delete(key=rec.key, expect_version=rec.version)])
            except VersionConflict:
                return
            self.store.delete(status_key(group.meta.uid))
            log.info("group %s deleted for its node (%s)", rec.key, why)
            return
        if done or group.meta.desiredState == "Stopped":
            return  # nothing runs; a start later makes it one to move
        node = self._nodes.get(group.meta.node or "")
        if node is not None and not node.selfFencing:
            return  # its copy may still run: it waits for its node (or for `corral node delete`)
        self._unbind(rec, group, status, version, "NodeLost", f"{why}: the group is rescheduled", lost_at)

    def _unbind(self, rec: Record, group: GroupRecord, status: GroupStatus | None, version: int, reason: str,
                message: str, stopped_at: datetime | None = None) -> None:
        """Off its node, with a new epoch, in one transaction with a status saying why; the binder places it."""
        old_node = group.meta.node
        group.meta.node, group.meta.epoch, group.meta.evicting = None, group.meta.epoch + 1, False
        group.meta.evictReason, group.meta.refit = None, False
        now = datetime.now(UTC)
        new = GroupStatus(uid=group.meta.uid, node="", epoch=group.meta.epoch, state="Pending",
                          observedGeneration=status.observedGeneration if status else 0,
                          observedRestartGeneration=group.meta.restartGeneration,
                          observedContainerRestarts=dict(group.meta.containerRestarts),
                          startedAt=status.startedAt if status else None, stoppedAt=stopped_at or now)
        for name, cs in (status.containers if status else {}).items():
            prev = cs.currentState if cs.currentState.state == "Terminated" else cs.previousState
            if cs.currentState.state == "Running":
                prev = ContainerStateView(state="Terminated", startTime=cs.currentState.startTime,
                                          finishTime=stopped_at or now, exitCode=-1, detailStatus=reason)
            new.containers[name] = ContainerStatus(restartCount=cs.restartCount, previousState=prev,
                                                   currentState=ContainerStateView(detailStatus=reason),
                                                   events=list(cs.events))
        new.events = list(status.events) if status else []
        record_event(new.events, reason, message, "Warning")
        try:
            self.store.txn([Put(key=rec.key, value=group.dump(), expect_version=rec.version),
                            Put(key=status_key(group.meta.uid), value=new.model_dump(mode="json"),
                                expect_version=version)])
        except VersionConflict:
            return  # changed meanwhile: the next pass looks again
        FAILOVERS.labels(reason).inc()
        log.warning("group %s unbound from node %s (epoch %d): %s", rec.key, old_node, group.meta.epoch, message)

    # drains ------------------------------------------------------------------------
    def _finish_eviction(self, rec: Record, group: GroupRecord, node: str) -> None:
        status, version = self._status(group)
        if status is not None and status.epoch == group.meta.epoch and status.evicted:
            self._unbind(rec, group, status, version, "Evicted",
                         group.meta.evictReason or f"moved off node {node}, which is being drained")

    def _drain_step(self, node: NodeInfo, records: dict[str, Record]) -> None:
        if node.evicting:
            if self._move_done(node.evicting, node.name, records):
                self._moving.pop(node.evicting, None)
                self._update_node(node.name, evicting=None)
            return
        mine = [(k, GroupRecord.model_validate(r.value)) for k, r in sorted(records.items())
                if r.value["meta"].get("node") == node.name and not r.value["meta"].get("deleting")]
        for key, group in mine:
            if group.meta.desiredState == "Stopped":  # nothing runs: no need to wait for the node
                status, version = self._status(group)
                self._unbind(records[key], group, status, version, "Evicted",
                             f"moved off node {node.name}, which is being drained")
        movable = [(k, g) for k, g in mine if g.meta.desiredState == "Running"
                   and not finished(g, self._status(g)[0])]
        if not movable:
            self._blocked.pop(node.name, None)
            if node.drainBlocked:
                self._update_node(node.name, drainBlocked={})
            return
        # One already marked (a crash in between, or moved by the binder for lack of room) goes first.
        movable.sort(key=lambda kg: not kg[1].meta.evicting)
        key, group = movable[0]
        if not group.meta.evicting:
            if time.monotonic() < self._blocked.get(node.name, 0.0):
                return  # nothing could move at the last look; the next is due soon
            plan = self.planner.plan(node.name, [k for k, _ in movable])
            blocked = {k: why for k, why in plan.items() if why}
            if blocked != node.drainBlocked:
                for k in blocked.keys() - node.drainBlocked.keys():
                    log.warning("draining node %s: group %s fits on no other node, it stays: %s", node.name, k,
                                blocked[k])
                self._update_node(node.name, drainBlocked=blocked)
            choice = next(((k, g) for k, g in movable if k not in blocked), None)
            if choice is None:
                self._blocked[node.name] = time.monotonic() + DRAIN_RECHECK
                return
            self._blocked.pop(node.name, None)
            key, group = choice
            if not self._mark_evicting(key, group, records[key].version):
                return
        self._moving[key] = time.monotonic()
        self._update_node(node.name, evicting=key)
        log.info("draining node %s: moving group %s", node.name, key)

    def _mark_evicting(self, key: str, group: GroupRecord, version: int) -> bool:
        """Ask the group's node to stop it so it can move (compare-and-swap); False if it changed meanwhile."""
        group.meta.evicting = True
        try:
            self.store.put(key, group.dump(), expect_version=version)
        except VersionConflict:
            return False
        return True

    def _move_done(self, key: str, node: str, records: dict[str, Record]) -> bool:
        rec = records.get(key)
        if rec is None:
            return True
        group = GroupRecord.model_validate(rec.value)
        if time.monotonic() - self._moving.setdefault(key, time.monotonic()) > MOVE_TIMEOUT:
            log.warning("draining node %s: group %s is not running elsewhere after %.0f s; going on",
                        node, key, MOVE_TIMEOUT)
            return True
        if group.meta.node == node:
            if group.meta.desiredState != "Running" or group.meta.deleting:
                return True
            if not group.meta.evicting:  # the mark was lost (an update raced it): mark again
                self._mark_evicting(key, group, rec.version)
            return False
        if group.meta.node is None:
            return False
        status, _ = self._status(group)
        return status is not None and status.epoch == group.meta.epoch and status.state != "Pending"
