"""A remote agent's lease on its groups: heartbeats, self-fencing, and when a container may start.

The agent renews its lease by heartbeat every ``interval``. It holds the lease for
``fence_after`` seconds from the *start* of the last heartbeat a server acknowledged (the
server recorded it after that instant, so the control plane's own count, which runs from
when it saw the renewal, always ends later). When the lease lapses the agent kills its
containers at once (``on_lapse``), and a watchdog process does the same should the agent be
gone (``corral.node.fence``).

A *session* is one unbroken stretch of lease. What the agent learnt of its assignments in an
earlier session may be stale (the control plane may have moved a group away meanwhile), so a
new session starts unconfirmed: no container starts until the agent has listed its
assignments again (``on_regain``) and confirmed the session. A worker may start a container
only under ``starting(session)``, with the session its record was read in; a lapse waits for
starts in progress to finish, so none can slip past it.

An agent stopped to be started again (an upgrade) asks for a ``hold``: one last heartbeat tells
the servers to leave the node alone that much longer, and the watchdog's lease file moves by as
much, so its groups keep running until the new agent takes over.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from corral.node import fence

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 0.5
FENCE_AFTER = 1.5
CLOCK_TICK = 0.05


class _ReadWriteLock:
    """Many starts at once (readers), or one lapse (writer)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            while self._writing:
                self._cond.wait()
            self._writing = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


class NodeLease:
    def __init__(self, renew: Callable[[float], None], state_dir: Path, interval: float = HEARTBEAT_INTERVAL,
                 fence_after: float = FENCE_AFTER, fencing: bool = True) -> None:
        if fence_after <= interval:
            raise ValueError("the fence time must be longer than the heartbeat interval")
        self._renew = renew
        self.state_dir = state_dir
        self.interval = interval
        self.fence_after = fence_after
        self.fencing = fencing  # False: a lapse ends the session (a re-list follows) but kills nothing
        self.session = 0
        self._confirmed = -1
        self._held = False  # inside a session (acknowledged, not lapsed), confirmed or not
        self._last_ack = float("-inf")
        self._lock = threading.Lock()
        self._starts = _ReadWriteLock()
        self._stop = threading.Event()
        self._on_lapse: Callable[[], None] = lambda: None
        self._on_regain: Callable[[int], None] = lambda s: None
        self._threads: list[threading.Thread] = []
        self._failures = 0

    # lifecycle ---------------------------------------------------------------
    def start(self, on_lapse: Callable[[], None], on_regain: Callable[[int], None]) -> None:
        """Heartbeat in the background. ``on_lapse()`` runs once the lease is lost (after the session
        moved on); ``on_regain(session)`` on a thread of its own when a new session begins: it must
        re-list the assignments and ``confirm(session)``."""
        self._on_lapse, self._on_regain = on_lapse, on_regain
        self._threads = [threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True),
                         threading.Thread(target=self._clock, name="lease-clock", daemon=True)]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

    def hold(self, seconds: float) -> bool:
        """The agent stops to be started again: one last heartbeat asks the servers to leave the node
        alone ``seconds`` beyond its lease, and the watchdog is told the same, so the groups keep running
        meanwhile. Call after ``stop``. False (nothing held: fencing as usual) when no server acknowledged."""
        if seconds <= 0 or not self.valid():
            return False
        sent = time.monotonic()
        try:
            self._renew(seconds)
        except Exception as exc:
            log.warning("could not ask the servers to hold this node while its agent restarts: %s", exc)
            return False
        fence.write_lease(self.state_dir, sent + seconds)  # the watchdog fences only after the hold too
        log.info("node held for %.0f s while its agent restarts", seconds)
        return True

    # what workers ask ----------------------------------------------------------
    def valid(self) -> bool:
        return time.monotonic() - self._last_ack < self.fence_after

    @contextlib.contextmanager
    def starting(self, session: int) -> Iterator[bool]:
        """True inside the block if the node may start a container of a record read in ``session``."""
        with self._starts.read():
            with self._lock:
                ok = session == self.session == self._confirmed and self._held and self.valid()
            yield ok

    def confirm(self, session: int) -> bool:
        """The assignments of ``session`` are listed: containers may start (False if it ended meanwhile)."""
        with self._lock:
            if session != self.session or not self._held:
                return False
            self._confirmed = session
        log.info("lease held (session %d)", session)
        return True

    def resync_failed(self, session: int) -> None:
        """The re-list of a new session failed: try again with the next acknowledged heartbeat."""
        with self._lock:
            if session == self.session:
                self._held = False

    # the two threads -----------------------------------------------------------
    def _beat(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                self._renew(0.0)
            except Exception as exc:
                self._failures += 1
                if self._failures in (1, 10) or self._failures % 100 == 0:
                    log.warning("heartbeat failed (%d in a row): %s", self._failures, exc)
            else:
                self._failures = 0
                self._acknowledged(sent)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - sent)))

    def _acknowledged(self, sent: float) -> None:
        begin = None
        with self._lock:
            if sent <= self._last_ack:
                return
            if not self.valid() and self._held:
                return  # acknowledged too late: the clock thread lapses this session first
            self._last_ack = sent
            fence.write_lease(self.state_dir, sent)
            if not self._held:
                self._held = True
                begin = self.session
        if begin is not None:
            threading.Thread(target=self._on_regain, args=(begin,), name="lease-resync", daemon=True).start()

    def _clock(self) -> None:
        while not self._stop.wait(CLOCK_TICK):
            with self._lock:
                lapsed = self._held and not self.valid()
            if lapsed:
                self._lapse()

    def _lapse(self) -> None:
        with self._starts.write():  # starts in progress finish first; none begins until the session moved on
            with self._lock:
                if not self._held or self.valid():
                    return
                self._held = False
                self.session += 1
        if not self.fencing:
            log.warning("lease lapsed: no heartbeat acknowledged for %.1f s (self-fencing is off)", self.fence_after)
            return
        log.warning("lease lapsed: no heartbeat acknowledged for %.1f s; stopping this node's groups",
                    self.fence_after)
        try:
            self._on_lapse()
        except Exception:
            log.exception("self-fencing failed; the watchdog kills what is left")
