"""Per-second metering of container groups, and the price sheet that turns it into cost.

What is metered is what a group *requested* (CPU cores and memory GB, summed
over its containers), for as long as it ran: from the moment its node reports
it Running until it stops (Stopped, Succeeded, Failed, deleted). Each stretch
is an interval in a usage record kept under ``/metering/<sub>/<rg>/<uid>``;
records outlive their groups so a deleted group's usage stays billable.

The ``Meter`` controller follows the store's watch (group and status changes)
and updates only the records a change touches. It is level-triggered on
start: a full pass closes intervals of groups that vanished while it was down
and opens those of groups running now, so a crash costs at most precision.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from corral.control.controller import Controller
from corral.errors import InvalidRequest
from corral.model.armids import NGROUP_UID_TAG
from corral.model.group import total_requests
from corral.model.records import GROUPS, STATUS, GroupRecord
from corral.model.status import GroupStatus
from corral.store.base import Event, Store

log = logging.getLogger(__name__)

METERING = "/metering/"
GB_SECONDS_PER_GB_HOUR = 3600


def usage_key(sub: str, rg: str, uid: str) -> str:
    return f"{METERING}{sub.lower()}/{rg.lower()}/{uid}"


class Rates(BaseModel):
    cpuCoreSecond: float = Field(default=0.0000113, ge=0)
    memoryGBSecond: float = Field(default=0.0000012, ge=0)


class PriceSheet(Rates):
    """Prices per second of one requested core and one requested GB; per-SKU overrides in ``skus``.

    The defaults are the public ACI Linux pay-as-you-go prices (USD).
    """

    currency: str = "USD"
    skus: dict[str, Rates] = Field(default_factory=dict)

    def rates(self, sku: str) -> Rates:
        """The SKU's rates; a rate the SKU does not set is the sheet's."""
        over = self.skus.get(sku)
        if over is None:
            return self
        base = {"cpuCoreSecond": self.cpuCoreSecond, "memoryGBSecond": self.memoryGBSecond}
        return Rates.model_validate({**base, **over.model_dump(include=over.model_fields_set)})

    @classmethod
    def load(cls, path: Path | None) -> PriceSheet:
        if path is None:
            return cls()
        try:
            text = Path(path).read_text()
            data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
            return cls.model_validate(data or {})
        except OSError as exc:
            raise InvalidRequest(f"cannot read the price sheet {path}: {exc.strerror}") from None
        except (ValueError, yaml.YAMLError, ValidationError) as exc:
            raise InvalidRequest(f"the price sheet {path} is not valid: {exc}") from None


class Interval(BaseModel):
    start: datetime
    end: datetime | None = None  # None: still running
    cpu: float
    memoryGB: float


class UsageRecord(BaseModel):
    uid: str
    subscription: str
    resourceGroup: str
    name: str
    location: str | None = None
    sku: str = "Standard"
    intervals: list[Interval] = Field(default_factory=list)
    deleted: bool = False
    ngroup: str | None = None  # the uid of the NGroup it was a member of (its NGROUP_UID_TAG): NGroup metrics

    def ran_within(self, start: float, end: float) -> bool:
        """True if one of its runs overlaps [start, end) (epoch seconds)."""
        return any(iv.start.timestamp() < end and (iv.end is None or iv.end.timestamp() >= start)
                   for iv in self.intervals)

    @property
    def open(self) -> Interval | None:
        return self.intervals[-1] if self.intervals and self.intervals[-1].end is None else None


class UsageRow(BaseModel):
    """Usage of one group over a window; what the API and `corral usage` show."""

    subscription: str
    resourceGroup: str
    name: str
    uid: str
    sku: str
    running: bool
    deleted: bool
    firstStart: datetime | None
    lastEnd: datetime | None
    seconds: int
    coreSeconds: float
    gbSeconds: float
    cost: float
    currency: str


def _seconds(iv: Interval, start: datetime | None, end: datetime | None, now: datetime) -> int:
    """Billed whole seconds of ``iv`` inside [start, end): every started second counts."""
    a = iv.start if start is None else max(iv.start, start)
    b = iv.end or now
    if end is not None:
        b = min(b, end)
    span = (b - a).total_seconds()
    return math.ceil(span - 1e-6) if span > 0 else 0


def usage_row(rec: UsageRecord, prices: PriceSheet, start: datetime | None = None, end: datetime | None = None,
              now: datetime | None = None) -> UsageRow:
    now = now or datetime.now(UTC)
    rates = prices.rates(rec.sku)
    seconds, cores, gbs = 0, 0.0, 0.0
    for iv in rec.intervals:
        s = _seconds(iv, start, end, now)
        seconds += s
        cores += s * iv.cpu
        gbs += s * iv.memoryGB
    return UsageRow(
        subscription=rec.subscription, resourceGroup=rec.resourceGroup, name=rec.name, uid=rec.uid, sku=rec.sku,
        running=rec.open is not None, deleted=rec.deleted,
        firstStart=rec.intervals[0].start if rec.intervals else None,
        lastEnd=None if rec.open or not rec.intervals else rec.intervals[-1].end,
        seconds=seconds, coreSeconds=round(cores, 3), gbSeconds=round(gbs, 3),
        cost=round(cores * rates.cpuCoreSecond + gbs * rates.memoryGBSecond, 6), currency=prices.currency,
    )


class _GroupInfo(BaseModel):
    key: str
    subscription: str
    resourceGroup: str
    name: str
    location: str | None
    sku: str
    cpu: float
    memoryGB: float
    ngroup: str | None = None


def _info(key: str, rec: GroupRecord) -> _GroupInfo:
    cpu, mem = total_requests(rec.spec.properties)
    m = rec.meta
    return _GroupInfo(key=key, subscription=m.subscription, resourceGroup=m.resourceGroup, name=m.name,
                      location=rec.spec.location, sku=rec.spec.properties.sku, cpu=cpu, memoryGB=mem,
                      ngroup=(rec.spec.tags or {}).get(NGROUP_UID_TAG))


class Meter(Controller):
    name = "meter"

    def __init__(self, store: Store, prices: PriceSheet | None = None) -> None:
        super().__init__(store)
        self.prices = prices or PriceSheet()
        self._groups: dict[str, _GroupInfo] = {}  # uid -> what is metered
        self._uid_of: dict[str, str] = {}  # group key -> uid
        self._lock = threading.Lock()

    def handle(self, events: list[Event]) -> None:
        for ev in events:
            if ev.key.startswith((GROUPS, STATUS)):
                self._apply(ev.key, ev.value)

    def resync(self) -> None:
        """Full pass: learn every group, follow every status, close what vanished."""
        with self._lock:
            self._groups.clear()
            self._uid_of.clear()
            for r in self.store.list(GROUPS):
                g = GroupRecord.model_validate(r.value)
                self._groups[g.meta.uid] = _info(r.key, g)
                self._uid_of[r.key] = g.meta.uid
            statuses = {}
            for r in self.store.list(STATUS):
                st = GroupStatus.model_validate(r.value)
                statuses[st.uid] = st
            for uid, st in statuses.items():
                if uid in self._groups:
                    self._observe(uid, st)
            for r in self.store.list(METERING):
                rec = UsageRecord.model_validate(r.value)
                if rec.uid not in self._groups and (rec.open is not None or not rec.deleted):
                    self._close(rec, None, deleted=True, key=r.key)

    def _apply(self, key: str, value: dict[str, Any] | None) -> None:
        with self._lock:
            if key.startswith(GROUPS):
                if value is None:
                    uid = self._uid_of.pop(key, None)
                    if uid is not None:
                        self._gone(uid)
                    return
                g = GroupRecord.model_validate(value)
                old_uid = self._uid_of.get(key)
                if old_uid is not None and old_uid != g.meta.uid:
                    self._gone(old_uid)  # same name, new group
                info = _info(key, g)
                prev = self._groups.get(g.meta.uid)
                self._groups[g.meta.uid] = info
                self._uid_of[key] = g.meta.uid
                if prev is not None and (prev.cpu, prev.memoryGB) != (info.cpu, info.memoryGB):
                    self._resize(g.meta.uid, info)
            else:
                uid = key[len(STATUS):]
                if value is None:
                    self._stopped_at_deletion(uid)
                    return
                if uid in self._groups:
                    self._observe(uid, GroupStatus.model_validate(value))

    # transitions -------------------------------------------------------------
    def _load(self, uid: str) -> tuple[str, UsageRecord] | None:
        info = self._groups.get(uid)
        if info is None:
            return None
        key = usage_key(info.subscription, info.resourceGroup, uid)
        r = self.store.get(key)
        if r is not None:
            return key, UsageRecord.model_validate(r.value)
        return key, UsageRecord(uid=uid, subscription=info.subscription, resourceGroup=info.resourceGroup,
                                name=info.name, location=info.location, sku=info.sku, ngroup=info.ngroup)

    def _save(self, key: str, rec: UsageRecord) -> None:
        self.store.put(key, rec.model_dump(mode="json"))

    def _observe(self, uid: str, st: GroupStatus) -> None:
        loaded = self._load(uid)
        if loaded is None:
            return
        key, rec = loaded
        info = self._groups[uid]
        unowned = info.ngroup is not None and rec.ngroup != info.ngroup  # metered before records named it
        rec.ngroup = info.ngroup or rec.ngroup
        running = st.state == "Running" and not st.released
        now = datetime.now(UTC)
        if running and rec.open is None:
            # The first run starts when the node saw it Running; later ones when we see them.
            start = st.startedAt if (not rec.intervals and st.startedAt) else now
            if rec.intervals and rec.intervals[-1].end and start < rec.intervals[-1].end:
                start = rec.intervals[-1].end
            rec.intervals.append(Interval(start=start, cpu=info.cpu, memoryGB=info.memoryGB))
            self._save(key, rec)
        elif not running and rec.open is not None:
            self._close(rec, st.stoppedAt, key=key)
        elif unowned and rec.intervals:
            self._save(key, rec)

    def _close(self, rec: UsageRecord, at: datetime | None, deleted: bool = False, key: str | None = None) -> None:
        now = datetime.now(UTC)
        iv = rec.open
        if iv is not None:
            end = at if at is not None and iv.start <= at <= now else now
            iv.end = end
        rec.deleted = rec.deleted or deleted
        self._save(key or usage_key(rec.subscription, rec.resourceGroup, rec.uid), rec)

    def _resize(self, uid: str, info: _GroupInfo) -> None:
        """An in-place update changed the requests: bill the rest of the run at the new size."""
        loaded = self._load(uid)
        if loaded is None or loaded[1].open is None:
            return
        key, rec = loaded
        now = datetime.now(UTC)
        rec.open.end = now  # type: ignore[union-attr]
        rec.intervals.append(Interval(start=now, cpu=info.cpu, memoryGB=info.memoryGB))
        self._save(key, rec)

    def _stopped_at_deletion(self, uid: str) -> None:
        loaded = self._load(uid)
        if loaded is not None and loaded[1].open is not None:
            self._close(loaded[1], None, key=loaded[0])

    def _gone(self, uid: str) -> None:
        loaded = self._load(uid)
        self._groups.pop(uid, None)
        if loaded is not None:
            self._close(loaded[1], None, deleted=True, key=loaded[0])

    # queries -----------------------------------------------------------------
    def usage(self, sub: str, rg: str | None = None, start: datetime | None = None,
              end: datetime | None = None) -> list[UsageRow]:
        prefix = f"{METERING}{sub.lower()}/" + (f"{rg.lower()}/" if rg else "")
        now = datetime.now(UTC)
        rows = [usage_row(UsageRecord.model_validate(r.value), self.prices, start, end, now)
                for r in self.store.list(prefix)]
        # A group that just started shows (with 0 s) unless the window ended before now.
        rows = [r for r in rows if r.seconds > 0 or (r.running and (end is None or end > now))]
        return sorted(rows, key=lambda r: (r.resourceGroup.lower(), r.name, r.firstStart or now))
