"""The scheduling controller: binds unplaced groups to nodes, from the store's changes.

A full pass (``resync``, at start and after a lost watch) rebuilds the
scheduler's snapshot from the store; after that every event is applied as a
delta (a node registered, a group bound, stopped, resized or deleted), never
by re-listing. Pending groups are tried in arrival order; one that fits
nowhere is parked with a ``FailedScheduling`` event and tried again when room
may have appeared (a node joins, becomes ready or is uncordoned, a group
leaves, stops or shrinks, an address block is returned) or, for a group
waiting on affinity or spread, when another group is bound. Binds are written
in batches, one compare-and-swap transaction per batch.

A bound group that asks its node for more than it held (``meta.refit``: a stopped
group started, larger requests) is checked against that node alone: if it still
fits it stays (the flag is cleared, and its node carries the change out), else it
is evicted (``meta.evicting`` with the reason: its node stops it, the node
lifecycle unbinds it with a new epoch) and placed like any other group.
"""

from __future__ import annotations

import gc
import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from corral.config import DEFAULT_SUBSCRIPTION
from corral.control import netkeys as K
from corral.control.controller import Controller
from corral.errors import VersionConflict
from corral.model.network import NetworkSettings, NodeBlocks, VnetRecord
from corral.model.records import GROUPS, NODE_BLOCKS, NODES, VNETS, NodeInfo, status_key
from corral.model.status import Event as StatusEvent
from corral.model.status import GroupStatus, now, record_event
from corral.scheduler.demand import Demand, demand_of, subnet_key
from corral.scheduler.pipeline import Pipeline, SchedulerSettings, Unschedulable
from corral.scheduler.state import ClusterState
from corral.store.base import BATCH_OPS, Event, Put, Store
from corral.telemetry import SCHEDULING_ATTEMPTS, SCHEDULING_LATENCY

log = logging.getLogger(__name__)

BULK = 1000  # events or pending groups from which a pass runs with the cyclic collector paused
FAILED_SCHEDULING = "FailedScheduling"
# A parked group's reason is rewritten when its kinds change, or its counts after this long.
REPORT_INTERVAL = 30.0


@dataclass(slots=True)
class Pending:
    version: int
    value: dict[str, Any]
    demand: Demand
    since: float = field(default_factory=time.monotonic)  # when this binder first saw it unbound


@dataclass(slots=True)
class Reported:
    message: str
    kinds: frozenset[str]
    at: float


class Binder(Controller):
    name = "binder"

    def __init__(self, store: Store, settings: SchedulerSettings | None = None,
                 network: NetworkSettings | None = None, default_subnet_id: str | None = None) -> None:
        super().__init__(store)
        self.network = network or NetworkSettings()
        net = self.network
        self.default_subnet = subnet_key(default_subnet_id or K.subnet_id(
            DEFAULT_SUBSCRIPTION, net.default_resource_group, net.default_vnet, net.default_subnet))
        self.pipeline = Pipeline(settings)
        self._reset()

    def _reset(self) -> None:
        net = self.network
        self.state = ClusterState(net.block_prefixlen, net.max_groups_per_node)
        self.versions: dict[str, int] = {}  # key -> version applied (groups, nodes, vnets, blocks)
        self.uids: dict[str, str] = {}  # group key -> uid
        self.pending: dict[str, Pending] = {}
        self.refits: dict[str, Pending] = {}  # bound groups to check against their node (meta.refit)
        self.active: OrderedDict[str, None] = OrderedDict()  # pending keys to try, in arrival order
        self.parked: dict[str, None] = {}  # pending keys that fit nowhere at their last try
        self.waiting: set[str] = set()  # parked keys that another group's bind may unblock
        self.reported: dict[str, Reported] = {}
        self.vnets: dict[str, tuple[str, set[str]]] = {}  # vnet key -> (uid, subnet keys)
        self.vnet_of_uid: dict[str, str] = {}
        self.grants: dict[str, dict[str, dict[str, str]]] = {}  # vnet uid -> subnet -> node -> block
        self._room = False
        self._bound_any = False
        # The batch being built: key -> (write, the pending group it binds; None for a status).
        self._batch: dict[str, tuple[Put, Pending | None]] = {}

    # the controller's two entry points ------------------------------------------
    def resync(self) -> None:
        with _collector_paused():
            self.load()
            self.schedule()

    def load(self) -> None:
        """Rebuild the snapshot from the store (no placement): what ``resync`` starts from."""
        self._reset()
        for prefix in (NODES, VNETS, NODE_BLOCKS, GROUPS):
            for rec in self.store.list(prefix):
                self._apply(rec.key, rec.version, rec.value)

    def handle(self, events: list[Event]) -> None:
        with _collector_paused(len(events) >= BULK or len(self.active) >= BULK):
            self.apply(events)
            self.schedule()

    def apply(self, events: list[Event]) -> None:
        """Take changes into the snapshot without placing anything."""
        for e in events:
            self._apply(e.key, e.revision, e.value if e.type == "put" else None)

    # deltas ---------------------------------------------------------------------
    def _apply(self, key: str, revision: int, value: dict[str, Any] | None) -> None:
        """One change: ``value`` is the record written at ``revision``, None for a delete."""
        if self.versions.get(key, 0) >= revision:
            return  # already seen (a listed record, or the echo of our own write)
        if key.startswith(GROUPS):
            self._group(key, revision, value)
        elif key.startswith(NODES):
            self._node(key, value)
        elif key.startswith(VNETS):
            self._vnet(key, value)
        elif key.startswith(NODE_BLOCKS):
            self._blocks(key, value)
        else:
            return
        if value is not None:
            self.versions[key] = revision
        else:
            self.versions.pop(key, None)

    def _group(self, key: str, revision: int, value: dict[str, Any] | None) -> None:
        if value is None:
            self._forget(key)
            return
        d = demand_of(key, value, self.default_subnet)
        if self.uids.get(key) not in (None, d.uid):
            self._forget(key)  # deleted and created again under the same name
        self.uids[key] = d.uid
        if d.node is None:
            self._retain(d)  # before the old version lets go: counts shared by both stay
            self._unqueue(key)
            if key in self.state.bound:  # unbound by someone: it holds nothing now
                self.state.release(key)
                self._room = True
            old = self.pending.get(key)
            self.pending[key] = Pending(revision, value, d, old.since if old else time.monotonic())
            self.active[key] = None
            return
        self._unqueue(key)
        if d.refit:
            # What it held stays held until it is checked; first seen (a resync), it is taken to hold what it
            # asks (more than it may: never less, so nothing is placed into room its copy still uses).
            if key not in self.state.bound:
                self.state.bind(d, d.node)
            self.refits[key] = Pending(revision, value, d)
            return
        prev = self.state.bound.get(key)
        if prev is not None and prev.node == d.node and prev.demand.same_footprint(d):
            prev.demand = d
            return
        self.state.bind(d, d.node)
        if prev is not None:
            self._room = True  # stopped, resized, re-tagged: what it held may be free
        elif d.running:
            self._bound_any = True

    def _unqueue(self, key: str) -> None:
        """The group is no longer pending nor to be checked (bound, deleted, or replaced by a newer version)."""
        p = self.pending.pop(key, None)
        if p is not None:
            self._release(p.demand)
        self.active.pop(key, None)
        self.parked.pop(key, None)
        self.waiting.discard(key)
        self.refits.pop(key, None)

    def _forget(self, key: str) -> None:
        self.uids.pop(key, None)
        self._unqueue(key)
        self.reported.pop(key, None)
        if self.state.release(key) is not None:
            self._room = True

    def _retain(self, d: Demand) -> None:
        for sel in d.selectors:
            self.state.topology.retain(sel)

    def _release(self, d: Demand) -> None:
        for sel in d.selectors:
            self.state.topology.release(sel)

    def _node(self, key: str, value: dict[str, Any] | None) -> None:
        if value is None:
            self.state.remove_node(key[len(NODES):])
            return
        if self.state.upsert_node(NodeInfo.model_validate(value)):
            self._room = True

    def _vnet(self, key: str, value: dict[str, Any] | None) -> None:
        old_uid, old_subnets = self.vnets.pop(key, ("", set()))
        self.vnet_of_uid.pop(old_uid, None)
        subnets: set[str] = set()
        if value is not None:
            rec = VnetRecord.model_validate(value)
            m = rec.meta
            for name, sn in rec.subnets.items():
                subnet = "/".join((m.subscription, m.resourceGroup, m.name, name)).lower()
                self.state.subnets.define(subnet, str(sn.properties.prefix))
                subnets.add(subnet)
            self.vnets[key] = (m.uid, subnets)
            self.vnet_of_uid[m.uid] = key
            self._apply_grants(m.uid)
        for gone in old_subnets - subnets:
            self.state.subnets.undefine(gone)

    def _blocks(self, key: str, value: dict[str, Any] | None) -> None:
        uid = key[len(NODE_BLOCKS):]
        if value is None:
            self.grants.pop(uid, None)
        else:
            self.grants[uid] = NodeBlocks.model_validate(value).blocks
        self._apply_grants(uid)

    def _apply_grants(self, uid: str) -> None:
        vnet = self.vnet_of_uid.get(uid)
        if vnet is None:
            return
        grants = self.grants.get(uid, {})
        for key in self.vnets[vnet][1]:
            # NodeBlocks files grants by the subnet's lowercase name, the last part of its key.
            if self.state.subnets.set_grants(key, grants.get(key.rsplit("/", 1)[-1], {})):
                self._room = True

    # the scheduling pass -----------------------------------------------------------
    def schedule(self) -> None:
        """Try the pending groups that may fit now; write the binds."""
        while self.refits:  # first: they are on their node already
            key, p = self.refits.popitem()
            self._refit(key, p)
        if self._room:
            self.active.update(self.parked)
            self.parked.clear()
            self.waiting.clear()
            self._room = False
        while True:
            if self._bound_any and self.waiting:
                for key in [k for k in self.parked if k in self.waiting]:  # in arrival order
                    del self.parked[key]
                    self.active[key] = None
                self.waiting.clear()
            self._bound_any = False
            if not self.active:
                break
            while self.active:
                key, _ = self.active.popitem(last=False)
                p = self.pending.get(key)
                if p is not None:
                    self._try(key, p)
            self._flush()
        self._flush()

    def _try(self, key: str, p: Pending) -> None:
        d = p.demand
        if d.deleting:
            # Never reached a node: nothing to tear down.
            self._flush()
            try:
                self.store.delete(key, expect_version=p.version)
            except VersionConflict:
                return  # changed meanwhile; its event comes
            self.store.delete(status_key(d.uid))
            return
        started = time.perf_counter()
        try:
            node = self.pipeline.place(d, self.state)
        except Unschedulable as exc:
            SCHEDULING_ATTEMPTS.labels("unschedulable").observe(time.perf_counter() - started)
            self.parked[key] = None
            if d.affinity or d.spread:
                self.waiting.add(key)
            self._report(key, d, exc)
            return
        SCHEDULING_ATTEMPTS.labels("scheduled").observe(time.perf_counter() - started)
        self.state.bind(d, node)
        self._bound_any = True
        value = {**p.value, "meta": {**p.value["meta"], "node": node}}
        self._add(Put(key=key, value=value, expect_version=p.version), p)

    def _refit(self, key: str, p: Pending) -> None:
        """A bound group asking its node for more: it stays if the node can take it now, else it moves."""
        d = p.demand
        node = d.node
        assert node is not None
        prev = self.state.release(key)  # what it held there is its own to re-use
        meta = {**p.value["meta"], "refit": False}
        why = self.pipeline.misfit(d, self.state, node) if d.running else None
        if why is None:
            self.state.bind(d, node)
            if prev is None or not prev.demand.same_footprint(d):
                self._bound_any = True
        else:
            if prev is not None:
                self.state.bind(prev.demand, node)  # its copy there holds what it held until it is stopped
            meta |= {"evicting": True,
                     "evictReason": f"node {node} cannot take the group as it is now ({why}): it moves to another node"}
            log.info("group %s does not fit on its node %s any more (%s): evicting it", key, node, why)
        self._add(Put(key=key, value={**p.value, "meta": meta}, expect_version=p.version), p)

    def _add(self, op: Put, p: Pending | None) -> None:
        self._batch[op.key] = (op, p)  # a later write of the same key replaces the earlier one
        if len(self._batch) >= BATCH_OPS:
            self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        batch = list(self._batch.values())
        self._batch = {}
        try:
            results = self.store.txn([op for op, _ in batch])
        except VersionConflict:
            # Someone wrote one of these since we read it: write one by one, give up on the losers
            # (their newer version is on its way to us as an event).
            results = []
            for op, p in batch:
                try:
                    results.append(self.store.put(op.key, op.value, expect_version=op.expect_version))
                except VersionConflict:
                    results.append(None)
                    if p is not None:
                        self.state.release(op.key)
        for rec, (op, p) in zip(results, batch, strict=True):
            key = op.key
            if rec is None or p is None:
                continue
            if key in self.pending:
                SCHEDULING_LATENCY.observe(time.monotonic() - self.pending[key].since)
            self._unqueue(key)
            self.reported.pop(key, None)
            self.versions[key] = rec.version

    def _report(self, key: str, d: Demand, exc: Unschedulable) -> None:
        message = str(exc)
        kinds = frozenset(exc.reasons)
        last = self.reported.get(key)
        t = time.monotonic()
        if last is not None and (last.message == message or (last.kinds == kinds and t - last.at < REPORT_INTERVAL)):
            return
        self.reported[key] = Reported(message, kinds, t)
        rec = self.store.get(status_key(d.uid))
        status = GroupStatus.model_validate(rec.value) if rec else GroupStatus(uid=d.uid, node="")
        last_event = status.events[-1] if status.events else None
        if last_event is not None and last_event.name == FAILED_SCHEDULING:
            if last_event.message == message and status.provisioningError == message:
                return  # already said; writing again would wake this controller in a loop
            _update(last_event, message)
        else:
            record_event(status.events, FAILED_SCHEDULING, message, "Warning")
        # The create operation ends Failed with the reason; the group stays Pending and is placed
        # (the node's first pass clears the error) when a node that fits turns up.
        status.provisioningError = message
        self._add(Put(key=status_key(d.uid), value=status.model_dump(mode="json")), None)


@contextmanager
def _collector_paused(pause: bool = True) -> Iterator[None]:
    """A pass over thousands of groups allocates millions of small objects that all stay alive (the
    records read): the cyclic collector would walk them over and over, a third of the pass. Reference
    counting still frees everything else meanwhile."""
    was = gc.isenabled()
    if pause:
        gc.disable()
    try:
        yield
    finally:
        if pause and was:
            gc.enable()


def _update(event: StatusEvent, message: str) -> None:
    """One FailedScheduling event per group: a new reason replaces the old one (as a repeat would)."""
    event.message = message
    event.count += 1
    event.lastTimestamp = now()
