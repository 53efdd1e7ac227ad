"""The metrics history of container groups, as one API server keeps it.

Samples arrive every few seconds per group (``receive``, from the link). They are folded into one-minute
aggregates in memory, on the server they reached; once a minute is over (plus a grace for samples in
flight) it is merged into the store as a minute rollup: one write per group per minute, whichever number of
API servers share the store. Reads combine the store with what is still in memory here, so the minute in
progress shows at once on this server and about a minute later on the others.

A restart loses at most the unflushed minute (``stop`` flushes it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

from corral.control.metrics.definitions import sample_values
from corral.control.metrics.rollups import HOUR, MINUTE, ensure_indexed, merge_rollups, read_rollups
from corral.control.metrics.stats import Series, Stats, merge_into
from corral.model.metrics import GroupSample, MetricsReport
from corral.store.base import Store

log = logging.getLogger(__name__)

FLUSH_GRACE = 15.0  # seconds after a minute's end before it is written: samples still in flight land in it
FLUSH_EVERY = 5.0  # seconds between looks for finished minutes
LATEST_TTL = 120.0  # seconds a group's last sample counts as current (Prometheus gauges, the portal)


class MetricsHistory:
    def __init__(self, store: Store, clock: Callable[[], float] = time.time,
                 grace: float = FLUSH_GRACE, flush_every: float = FLUSH_EVERY) -> None:
        self.store, self.clock, self.grace, self.flush_every = store, clock, grace, flush_every
        self._lock = threading.Lock()
        self._partial: dict[tuple[str, int], Series] = {}  # (uid, minute start) -> not yet in the store
        self._latest: dict[str, tuple[float, str, GroupSample]] = {}  # uid -> (received at, node, sample)
        self._indexed: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # writes ------------------------------------------------------------------------------------------------------
    def receive(self, report: MetricsReport) -> None:
        now = self.clock()
        with self._lock:
            for sample in report.groups:
                minute = _minute(sample.time)
                series = self._partial.setdefault((sample.uid, minute), {})
                for metric, values in sample_values(sample).items():
                    by_dim = series.setdefault(metric, {})
                    for dim, value in values.items():
                        by_dim.setdefault(dim, Stats()).add(value)
                self._latest[sample.uid] = (now, report.node, sample)
            if self._thread is None:  # the first report starts the flusher (every server that receives any)
                self._thread = threading.Thread(target=self._run, args=(self._stop,), name="metrics-flusher",
                                                daemon=True)
                self._thread.start()

    def flush(self, everything: bool = False) -> None:
        """Write the finished minutes (``everything``: the unfinished ones too) to the store."""
        now = self.clock()
        with self._lock:
            due = {k: v for k, v in self._partial.items() if everything or k[1] + MINUTE + self.grace <= now}
            if not due:
                return
            for uid in {u for u, _ in due} - self._indexed:
                ensure_indexed(self.store, uid, min(m for u, m in due if u == uid))
                self._indexed.add(uid)
            # Under the lock: a reader never sees a minute both in memory and in the store, nor in neither.
            merge_rollups(self.store, {(uid, MINUTE, m): s for (uid, m), s in due.items()})
            for k in due:
                del self._partial[k]
            for uid in [u for u, (t, _, _) in self._latest.items() if t + LATEST_TTL < now]:
                del self._latest[uid]

    # reads -------------------------------------------------------------------------------------------------------
    def minutes(self, uid: str, start: int, end: int) -> dict[int, Series]:
        """One-minute aggregates of ``uid`` for minutes starting in [start, end): stored and in memory here."""
        with self._lock:
            out = read_rollups(self.store, uid, MINUTE, start, end)
            for (u, m), series in self._partial.items():
                if u == uid and start <= m < end:
                    merge_into(out.setdefault(m, {}), series)
        return out

    def hours(self, uid: str, start: int, end: int) -> dict[int, Series]:
        """One-hour aggregates for hours starting in [start, end): the stored hour rollups, and for the hours
        not rolled up yet (the current one, the last few minutes of the previous) the merge of their minutes."""
        out = read_rollups(self.store, uid, HOUR, start, end)
        if len(out) < (end - start) // HOUR:  # some hour is not rolled up (the span may be years: no list of them)
            merged: dict[int, Series] = {}
            for m, series in self.minutes(uid, start, end).items():
                h = m - m % HOUR
                if h not in out:
                    merge_into(merged.setdefault(h, {}), series)
            out.update(merged)
        return out

    def latest(self) -> dict[str, tuple[str, GroupSample]]:
        """uid -> (node, last sample) of the groups whose samples reach this server now."""
        horizon = self.clock() - LATEST_TTL
        with self._lock:
            return {uid: (node, s) for uid, (t, node, s) in self._latest.items() if t >= horizon}

    # lifecycle ---------------------------------------------------------------------------------------------------
    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self.flush_every):
            try:
                self.flush()
            except Exception:  # the store away for a moment: the minutes stay in memory for the next try
                log.warning("could not write metrics rollups; retrying", exc_info=True)

    def stop(self) -> None:
        """Stop the flusher and write what is in memory; a later ``receive`` starts a new flusher."""
        with self._lock:
            thread, stop = self._thread, self._stop
            self._thread, self._stop = None, threading.Event()
        stop.set()
        if thread is not None:
            thread.join(timeout=5)
        try:
            self.flush(everything=True)
        except Exception:
            log.warning("could not write the last metrics rollups", exc_info=True)


def _minute(t: datetime) -> int:
    s = int(t.timestamp())
    return s - s % MINUTE
