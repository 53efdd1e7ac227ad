"""The shape every control-plane controller shares: a full pass, then follow the store's changes.

Level-triggered: ``resync`` must be able to rebuild everything from the store,
so a lost watch history (compaction), a failed pass or a restart costs only a
resync, never a missed change.
"""

from __future__ import annotations

import logging
import threading

from corral.store.base import Compacted, Event, Store

log = logging.getLogger(__name__)


class Controller:
    name = "controller"
    watch_prefix = "/"
    watch_timeout = 1.0  # also how often ``tick`` runs when nothing changes

    def __init__(self, store: Store) -> None:
        self.store = store
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self) -> None:
        """Start (or, after ``stop``, start again: a server re-elected leader)."""
        if self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def tick(self) -> None:
        """Work due on time rather than on a change (leases expiring); after every watch."""

    def resync(self) -> None:
        """A full pass over the store."""

    def handle(self, events: list[Event]) -> None:
        """React to changes since the last pass (default: another full pass)."""
        self.resync()

    def _run(self) -> None:
        rev: int | None = None
        while not self._stop.is_set():
            try:
                if rev is None:
                    rev = self.store.revision()
                    self.resync()
                events = self.store.watch(self.watch_prefix, rev, timeout=self.watch_timeout)
                if events:
                    self.handle(events)
                    rev = events[-1].revision
                self.tick()
            except Compacted:
                rev = None
            except Exception:  # keep the controller alive; the resync of the next pass repairs
                log.exception("%s pass failed", self.name)
                rev = None
                self._stop.wait(1.0)
