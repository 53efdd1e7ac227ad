"""The recent events of an etcd store, fed by one long-lived watch and served to many watchers.

Agents, controllers and API streams call ``Store.watch`` in loops; answering each call from memory
instead of opening an etcd watch per call keeps them off the network. The window holds every event
with a revision above ``floor``. A watcher asking for older history gets it from etcd itself: a
watch from that revision, read up to a marker write (the fence), so the read has a definite end
even when the history holds nothing for the watcher.
"""

from __future__ import annotations

import bisect
import json
import logging
import threading
import time
from typing import Any, NamedTuple

from corral.errors import StoreUnavailable
from corral.store.base import Compacted, Event
from corral.store.etcdclient import EtcdClient, WatchStream, b64, prefix_end, unb64

log = logging.getLogger(__name__)

MAX_EVENTS = 10_000  # as many as SQLite keeps
CATCH_UP = 2.0  # seconds a watcher waits at most for this process's own last write to come back
IDLE_CHECK = 5.0  # seconds of silence after which the stream's member is asked whether it still answers


class _Item(NamedTuple):
    revision: int
    key: str
    type: str
    value: bytes | None

    def event(self) -> Event:
        value = json.loads(self.value) if self.value is not None else None
        return Event(type=self.type, key=self.key, revision=self.revision, value=value)  # type: ignore[arg-type]


class EventWindow:
    def __init__(self, client: EtcdClient, namespace: bytes, start: int, *, max_events: int = MAX_EVENTS) -> None:
        self._client, self._ns = client, namespace
        self._records = namespace + b"/"
        self._max = max_events
        self._items: list[_Item] = []
        self._revs: list[int] = []
        self._floor = start  # every event above it is in the window (from _items[0] on)
        self._head = start  # the last revision the stream delivered
        self._written = start  # the last revision this process wrote (watchers see their own writes)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._stream: WatchStream | None = None
        self._thread = threading.Thread(target=self._run, name="etcd-watch", daemon=True)
        self._thread.start()

    # the stream --------------------------------------------------------------
    def _create(self, start_revision: int) -> dict[str, Any]:
        # The namespace key itself is the fence; [ns, end(ns + "/")) holds it and the records.
        return {"key": b64(self._ns), "range_end": b64(prefix_end(self._records)),
                "start_revision": str(start_revision), "progress_notify": True}

    def _item(self, ev: dict[str, Any]) -> _Item | None:
        kv = ev["kv"]
        key = unb64(kv["key"])
        if not key.startswith(self._records):
            return None  # the fence, or a neighbouring namespace sharing our range
        kind = "delete" if ev.get("type") == "DELETE" else "put"
        return _Item(int(kv["mod_revision"]), key[len(self._ns):].decode(), kind,
                     unb64(kv.get("value")) if kind == "put" else None)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                stream = self._client.open_watch(self._create(self._head + 1))
            except StoreUnavailable:
                self._stop.wait(0.5)
                continue
            with self._cond:
                self._stream = stream
            try:
                self._follow(stream)
            except Exception as exc:  # the member went away or broke the stream: resume from _head
                log.debug("etcd watch on %s ended: %s", stream.endpoint, exc)
            finally:
                stream.close()
                with self._cond:
                    self._stream = None
            self._stop.wait(0.1)

    def _follow(self, stream: WatchStream) -> None:
        quiet_since = time.monotonic()
        for msg in stream:
            if self._stop.is_set():
                return
            if msg is None:
                if time.monotonic() - quiet_since > IDLE_CHECK:
                    if not self._client.answers(stream.endpoint):
                        return  # a member that stopped answering also stopped sending events
                    quiet_since = time.monotonic()
                continue
            quiet_since = time.monotonic()
            if msg.get("canceled"):
                if int(msg.get("compact_revision", 0)):
                    self._restart_after_compaction()
                return
            events = msg.get("events")
            if not events:
                if not msg.get("created"):  # a progress notice: nothing up to its revision is missing
                    with self._cond:
                        self._head = max(self._head, int(msg["header"]["revision"]))
                continue
            items = [it for it in map(self._item, events) if it is not None]
            last = int(events[-1]["kv"]["mod_revision"])
            with self._cond:
                self._items.extend(items)
                self._revs.extend(it.revision for it in items)
                self._head = max(self._head, last)
                if len(self._items) > self._max * 1.1:
                    self._trim(len(self._items) - self._max)
                self._cond.notify_all()

    def _trim(self, n: int) -> None:
        """Drop the oldest ``n`` events, and the rest of the last one's revision (a Txn is never split)."""
        floor = self._revs[n - 1]
        cut = bisect.bisect_right(self._revs, floor)
        del self._items[:cut], self._revs[:cut]
        self._floor = max(self._floor, floor)

    def _restart_after_compaction(self) -> None:
        """History we had not seen yet was compacted while we were away: start over from now."""
        now = int(self._client.range(self._ns, count_only=True)["header"]["revision"])
        with self._cond:
            self._items.clear()
            self._revs.clear()
            self._floor = self._head = now
            self._cond.notify_all()

    def forget_through(self, revision: int) -> None:
        """Drop history up to ``revision`` (the store was compacted there)."""
        with self._cond:
            cut = bisect.bisect_right(self._revs, revision)
            del self._items[:cut], self._revs[:cut]
            self._floor = max(self._floor, revision)

    # watchers ------------------------------------------------------------------
    def wrote(self, revision: int) -> None:
        """This process wrote at ``revision``: its watchers will see that write."""
        with self._cond:
            self._written = max(self._written, revision)

    def watch(self, prefix: str, after: int, timeout: float) -> list[Event]:
        deadline = time.monotonic() + timeout
        with self._cond:  # our own writes first reach the window (bounded: the stream may be down)
            catch_up = time.monotonic() + CATCH_UP
            while self._head < self._written and time.monotonic() < catch_up and not self._stop.is_set():
                self._cond.wait(catch_up - time.monotonic())
        for _ in range(5):
            with self._cond:
                while after >= self._floor:
                    i = bisect.bisect_right(self._revs, after)
                    found = [it.event() for it in self._items[i:] if it.key.startswith(prefix)]
                    if found:
                        return found
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return []
                    self._cond.wait(left)
            found, fence = self._history(prefix, after)
            if found:
                return found
            after = fence  # nothing for this watcher up to the fence: the window has the rest
        raise Compacted(f"revision {after} is older than the history this server keeps; re-list")

    def _history(self, prefix: str, after: int) -> tuple[list[Event], int]:
        """Events under ``prefix`` after ``after`` from etcd's own history, up to a fence written now."""
        stream = self._client.open_watch({**self._create(after + 1), "progress_notify": False})
        try:
            fence = int(self._client.put(self._ns, b"")["header"]["revision"])
            found: list[Event] = []
            give_up = time.monotonic() + self._client.timeout * 2
            for msg in stream:
                if msg is None:
                    if time.monotonic() > give_up:
                        raise StoreUnavailable(f"etcd at {stream.endpoint} did not replay history from {after}")
                    continue
                if msg.get("canceled"):
                    if int(msg.get("compact_revision", 0)):
                        raise Compacted(f"revision {after} was compacted (oldest kept: {msg['compact_revision']})")
                    raise StoreUnavailable(f"etcd at {stream.endpoint} cancelled a watch: {msg.get('cancel_reason')}")
                for ev in msg.get("events") or ():
                    if int(ev["kv"]["mod_revision"]) >= fence:
                        return found, fence
                    it = self._item(ev)
                    if it is not None and it.key.startswith(prefix):
                        found.append(it.event())
        except (OSError, EOFError) as exc:
            raise StoreUnavailable(f"etcd history read failed: {exc}") from exc
        finally:
            stream.close()
        raise StoreUnavailable("etcd ended a history read early")

    def close(self) -> None:
        self._stop.set()
        with self._cond:
            if self._stream is not None:
                self._stream.close()
            self._cond.notify_all()
        self._thread.join(timeout=5)
