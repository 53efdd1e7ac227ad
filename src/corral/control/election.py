"""EtcdLeadership: the controllers' leader among several servers, elected through an etcd lease.

The office is one key (``/control/leader``) written with a lease. A server campaigns by creating
the key only if it does not exist; the winner renews its lease every ``renew_every`` seconds, the
others wait for the key to go. When the leader dies its lease expires after ``ttl`` seconds and
etcd deletes the key; a server that stops revokes the lease, so a successor takes over at once.

Never two leaders: etcd expires a lease no earlier than ``ttl`` after the renewal it last accepted,
and that renewal was sent no earlier than when we recorded sending it. So a leader whose renewals
fail steps down (``on_demoted``) ``margin`` seconds before that point: before any other server can
win. ``is_leader`` checks the same deadline, so a controller that asks is safe even if this
process was paused past it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from corral.errors import CorralError
from corral.store.etcd import EtcdStore
from corral.store.etcdclient import LeaseNotFound, b64, unb64

log = logging.getLogger(__name__)

LEADER_KEY = "/control/leader"
TTL = 3.0  # seconds: a dead leader is replaced about this long after its last renewal
RENEW_EVERY = 0.5
MARGIN = 1.0  # a leader that could not renew steps down this long before its lease can expire


class EtcdLeadership:
    def __init__(self, store: EtcdStore, name: str, *, key: str = LEADER_KEY, ttl: float = TTL,
                 renew_every: float = RENEW_EVERY, margin: float = MARGIN) -> None:
        if not renew_every < ttl - margin:
            raise ValueError("renew_every must be shorter than ttl - margin")
        self.store, self.key = store, key
        self.identity = f"{name}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.ttl, self.renew_every, self.margin = ttl, renew_every, margin
        self._lock = threading.Lock()  # the state below
        self._callbacks = threading.Lock()  # on_elected and on_demoted never run at once
        self._leader = False
        self._deadline = 0.0
        self._lease = 0
        self._term: int | None = None
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._on_elected: Callable[[], None] = lambda: None
        self._on_demoted: Callable[[], None] = lambda: None
        self._threads: list[threading.Thread] = []

    # the protocol ------------------------------------------------------------
    def start(self, on_elected: Callable[[], None], on_demoted: Callable[[], None]) -> None:
        self._on_elected, self._on_demoted = on_elected, on_demoted
        self._spawn(self._campaign, "leader-campaign")

    @property
    def is_leader(self) -> bool:
        with self._lock:
            return self._leader and time.monotonic() < self._deadline

    @property
    def term(self) -> int | None:
        """The revision at which this server won the office it holds (rises with every election)."""
        with self._lock:
            return self._term if self._leader else None

    def holder(self) -> str | None:
        """Who leads now, as the store says (any server may ask)."""
        rec = self.store.get(self.key)
        return str(rec.value.get("holder")) if rec else None

    def stop(self) -> None:
        self._stop.set()
        self._demote("stopping", self._term)
        for t in self._threads:
            t.join(timeout=5)
        self._demote("stopping", self._term)  # won while stopping

    # campaigning -------------------------------------------------------------
    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _campaign(self) -> None:
        while not self._stop.is_set():
            if self._leader:
                self._lost.wait(0.5)
                continue
            try:
                rec = self.store.get(self.key)
                if rec is not None:  # held: wait for it to change (its lease expiring deletes it)
                    self.store.watch(self.key, rec.version, timeout=1.0)
                    continue
                self._try_to_win()
            except CorralError as exc:
                log.info("leader election: the store is unavailable (%s); retrying", exc)
                self._stop.wait(0.5)

    def _try_to_win(self) -> None:
        client = self.store.client
        sent = time.monotonic()
        lease, ttl = client.grant(self.ttl)
        key = b64(self.store.etcd_key(self.key))
        value = b64(json.dumps({"holder": self.identity, "lease": f"{lease:x}", "ttl": ttl}).encode())
        answer = client.txn([{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
                            [{"request_put": {"key": key, "value": value, "lease": str(lease)}}], [])
        if not answer.get("succeeded"):
            client.revoke(lease)
            return
        term = int(answer["header"]["revision"])
        with self._lock:
            self._leader, self._lease, self._term = True, lease, term
            self._deadline = sent + ttl - self.margin
            self._lost.clear()
        log.info("%s leads the controllers (term %d)", self.identity, term)
        self._spawn(self._keep, "leader-keepalive", lease, term)
        with self._callbacks:
            if self.is_leader and self._term == term:
                _safely(self._on_elected, "on_elected")

    # holding -----------------------------------------------------------------
    def _keep(self, lease: int, term: int) -> None:
        client = self.store.client
        while not self._stop.is_set() and self._term == term and self._leader:
            left = self._deadline - time.monotonic()
            if left <= 0:
                self._demote("its lease could not be renewed in time", term)
                return
            if self._stop.wait(min(self.renew_every, left)):
                return
            sent = time.monotonic()
            left = self._deadline - sent
            if left <= 0:
                continue
            try:  # bounded by the deadline, so stepping down is never late
                budget = max(0.05, min(1.0, left) / len(client.endpoints))
                ttl = client.keepalive(lease, timeout=budget)
                held = client.call("/v3/kv/range", {"key": b64(self.store.etcd_key(self.key))}, idempotent=True,
                                   timeout=budget, retry_for=0).get("kvs") or []
            except LeaseNotFound:
                self._demote("its lease expired", term)
                return
            except CorralError as exc:
                log.info("leader lease renewal failed: %s", exc)
                continue
            if not held or json.loads(unb64(held[0].get("value"))).get("holder") != self.identity:
                self._demote("its key was removed", term)
                return
            with self._lock:
                if self._term == term:
                    self._deadline = sent + ttl - self.margin

    def _demote(self, reason: str, term: int | None) -> None:
        with self._lock:
            if not self._leader or self._term != term:
                return
            self._leader = False
            lease = self._lease
        log.warning("%s steps down as leader: %s", self.identity, reason)
        with self._callbacks:
            _safely(self._on_demoted, "on_demoted")
        try:
            self.store.client.revoke(lease)  # the key goes with it: a successor need not wait
        except CorralError:
            pass
        self._lost.set()


def _safely(callback: Callable[[], None], name: str) -> None:
    try:
        callback()
    except Exception:
        log.exception("leadership %s callback failed", name)
