"""Metric rollups in the store, and the controller that keeps them bounded.

    /metrics/<uid>/m/<start>   one minute of a group: {uid, start, grain, series}   kept MINUTE_RETENTION
    /metrics/<uid>/h/<start>   one hour, the merge of its minutes                    kept HOUR_RETENTION
    /metricsindex/<uid>        the groups that have rollups, so the compactor finds them (and orphans)

(An NGroup's past members keep theirs until retention: ``membership.py``.)

A minute is written once, by the API server its samples reached, after the minute is over. Writes merge
(compare-and-swap) into what is there, so two servers that both saw part of a minute (an agent that
switched servers) add up instead of overwriting each other. The compactor runs on the leader: it writes
hour rollups of finished hours, drops what is past retention and removes the rollups of deleted groups.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from corral.control.metrics.membership import member_uids_kept
from corral.control.metrics.stats import Series, dump_series, load_series, merge_into
from corral.errors import VersionConflict
from corral.model.records import GROUPS
from corral.store.base import ABSENT, BATCH_OPS, Delete, Op, Put, Store

log = logging.getLogger(__name__)

METRICS = "/metrics/"
METRICS_INDEX = "/metricsindex/"
MINUTE = 60
HOUR = 3600
MINUTE_RETENTION = 3 * HOUR  # seconds of one-minute rollups kept
HOUR_RETENTION = 7 * 24 * HOUR  # seconds of one-hour rollups kept
HOUR_SETTLE = 5 * MINUTE  # an hour is rolled up this long after its end: late minutes have landed by then
COMPACT_EVERY = 5 * MINUTE
_TIER = {MINUTE: "m", HOUR: "h"}
T = TypeVar("T")


def rollup_prefix(uid: str, grain: int) -> str:
    return f"{METRICS}{uid}/{_TIER[grain]}/"


def rollup_key(uid: str, grain: int, start: int) -> str:
    return f"{rollup_prefix(uid, grain)}{start:011d}"


def index_key(uid: str) -> str:
    return f"{METRICS_INDEX}{uid}"


def _record(uid: str, grain: int, start: int, series: Series) -> dict[str, object]:
    return {"uid": uid, "start": start, "grain": grain, "series": dump_series(series)}


def read_rollups(store: Store, uid: str, grain: int, start: int, end: int) -> dict[int, Series]:
    """The rollups of ``uid`` at ``grain`` whose bucket starts in [start, end), by bucket start."""
    out = {}
    for rec in store.list(rollup_prefix(uid, grain)):
        s = int(rec.value["start"])
        if start <= s < end:
            out[s] = load_series(rec.value["series"])
    return out


def _chunks(items: list[T]) -> Iterable[list[T]]:
    """``items`` in slices of at most one store transaction."""
    for i in range(0, len(items), BATCH_OPS):
        yield items[i:i + BATCH_OPS]


def merge_rollups(store: Store, batch: dict[tuple[str, int, int], Series]) -> None:
    """Add ``batch`` ((uid, grain, start) -> series) to the stored rollups: new keys in a few transactions,
    keys that exist already (a late or a shared minute) merged one by one with compare-and-swap."""
    for part in _chunks(list(batch.items())):
        ops: list[Op] = [Put(key=rollup_key(u, g, s), value=_record(u, g, s, series), expect_version=ABSENT)
                         for (u, g, s), series in part]
        try:
            store.txn(ops)
            continue
        except VersionConflict:
            pass
        for (u, g, s), series in part:
            _merge_one(store, u, g, s, series)


def _merge_one(store: Store, uid: str, grain: int, start: int, series: Series) -> None:
    key = rollup_key(uid, grain, start)
    for _ in range(10):
        rec = store.get(key)
        merged = series if rec is None else merge_into(load_series(rec.value["series"]), series)
        try:
            store.put(key, _record(uid, grain, start, merged), expect_version=rec.version if rec else ABSENT)
            return
        except VersionConflict:
            continue
    log.warning("gave up merging the metrics rollup %s after 10 conflicting writes", key)


def ensure_indexed(store: Store, uid: str, since: int) -> None:
    try:
        store.put(index_key(uid), {"uid": uid, "since": since}, expect_version=ABSENT)
    except VersionConflict:
        pass  # indexed already


def delete_group_rollups(store: Store, uid: str) -> None:
    """Every rollup of ``uid`` and its index entry."""
    ops: list[Op] = [Delete(key=r.key) for r in store.list(f"{METRICS}{uid}/")]
    for chunk in _chunks(ops):
        store.txn(chunk)
    store.delete(index_key(uid))


def compact(store: Store, now: float) -> None:
    """One pass over every indexed group: roll finished hours up, apply retention, remove deleted groups
    (but for the past members of an NGroup that exists: its metrics count them while they age out)."""
    live = {r.value["meta"]["uid"] for r in store.list(GROUPS)}
    kept: set[str] | None = None
    for idx in store.list(METRICS_INDEX):
        uid = idx.value["uid"]
        if uid not in live:
            if kept is None:
                kept = member_uids_kept(store)
            if uid not in kept:
                delete_group_rollups(store, uid)
                continue
        minutes = {int(r.value["start"]): r for r in store.list(rollup_prefix(uid, MINUTE))}
        hours = {int(r.value["start"]): r for r in store.list(rollup_prefix(uid, HOUR))}
        if not minutes and not hours and uid not in live:  # a past member's last rollup has aged out
            store.delete(idx.key)
            continue
        due: dict[int, Series] = {}
        for start, rec in minutes.items():
            hour = start - start % HOUR
            if hour not in hours and hour + HOUR + HOUR_SETTLE <= now:
                merge_into(due.setdefault(hour, {}), load_series(rec.value["series"]))
        puts: list[Op] = [Put(key=rollup_key(uid, HOUR, h), value=_record(uid, HOUR, h, s), expect_version=ABSENT)
                          for h, s in due.items()]
        rolled = hours.keys() | due.keys()
        deletes: list[Op] = [Delete(key=r.key, expect_version=r.version) for s, r in minutes.items()
                             if s + MINUTE <= now - MINUTE_RETENTION and (s - s % HOUR) in rolled]
        deletes += [Delete(key=r.key, expect_version=r.version) for s, r in hours.items()
                    if s + HOUR <= now - HOUR_RETENTION]
        try:
            for chunk in _chunks(puts):  # hours first: a minute is dropped only once its hour is stored
                store.txn(chunk)
            for chunk in _chunks(deletes):
                store.txn(chunk)
        except VersionConflict:  # a late minute landed meanwhile: the next pass sees it
            log.info("metrics rollups of %s changed during compaction; the next pass repeats it", uid)


class MetricsCompactor:
    """Runs ``compact`` every COMPACT_EVERY seconds (on the leader, as the other controllers)."""

    name = "metrics-compactor"

    def __init__(self, store: Store, every: float = COMPACT_EVERY, clock: Callable[[], float] = time.time) -> None:
        self.store, self.every, self.clock = store, every, clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                compact(self.store, self.clock())
            except Exception:
                log.exception("metrics compaction failed; the next pass repeats it")
