"""The DNS server (dnslib) over UDP and TCP, with its index kept current by a ``DnsFeed``.

Answers only names of its zone: A records for known names, NXDOMAIN (with the
zone's SOA) for unknown ones, and REFUSED for anything outside the zone, so a
resolver that lists another server after this one goes on to it; nothing is
forwarded anywhere.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from dnslib import QTYPE, RCODE, RR, SOA, A
from dnslib.server import BaseResolver, DNSLogger
from dnslib.server import DNSServer as _DnsLibServer

from corral.net.dns.feed import DnsFeed, DnsUpdate
from corral.net.dns.index import DnsIndex

log = logging.getLogger("corral.dns")

TTL = 5  # seconds: groups come and go, resolvers should ask again soon


class _Resolver(BaseResolver):  # type: ignore[misc]
    def __init__(self, index: DnsIndex) -> None:
        self.index = index

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        reply.header.aa = 1
        qname = request.q.qname
        name = str(qname)
        if not self.index.in_zone(name):
            reply.header.aa = 0
            reply.header.rcode = RCODE.REFUSED
            return reply
        addrs = self.index.lookup(name)
        if addrs and request.q.qtype in (QTYPE.A, QTYPE.ANY):
            for a in addrs:
                reply.add_answer(RR(qname, QTYPE.A, rdata=A(a), ttl=TTL))
            return reply
        if not addrs and name.rstrip(".").lower() != self.index.zone:
            reply.header.rcode = RCODE.NXDOMAIN
        zone = self.index.zone + "."
        reply.add_auth(RR(zone, QTYPE.SOA, ttl=TTL, rdata=SOA(
            "ns." + zone, "hostmaster." + zone, (1, 60, 60, 3600, TTL))))
        return reply


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return (host.strip("[]") or "127.0.0.1"), int(port)


class DnsServer:
    """``start()`` binds UDP and TCP on ``listen`` (HOST:PORT; port 0 picks one; None: only the
    listeners added later) and follows the feed (the link: in process, or a remote agent's)."""

    def __init__(self, feed: DnsFeed, zone: str, listen: str | None = "127.0.0.1:5354",
                 poll_timeout: float = 1.0) -> None:
        self.feed = feed
        self.index = DnsIndex(zone)
        self.host, self.port = parse_listen(listen) if listen else ("", 0)
        self.poll_timeout = poll_timeout
        self._servers: list[_DnsLibServer] = []
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._synced = threading.Event()
        self._bind_lock = threading.Lock()
        self._extra: set[tuple[str, int]] = set()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self) -> None:
        if self.host:
            self.port = self._bind(self.host, self.port)
        self._rev = 0
        try:
            self._sync()
        except Exception:  # a remote feed not reachable yet: the follower keeps trying
            log.warning("DNS: no records yet (the feed did not answer); retrying in the background")
        self._watcher = threading.Thread(target=self._follow, name="corral-dns-watch", daemon=True)
        self._watcher.start()
        if self.host:
            log.info("DNS for zone %s on %s:%d (udp, tcp)", self.index.zone, self.host, self.port)

    def add_listener(self, host: str, port: int = 53) -> None:
        """Also answer on ``host:port``, e.g. a virtual network's gateway, where its groups' resolv.conf points."""
        with self._bind_lock:
            if (host, port) in self._extra:
                return
            self._bind(host, port)
            self._extra.add((host, port))
        log.info("DNS also on %s:%d", host, port)

    def _bind(self, host: str, port: int) -> int:
        resolver = _Resolver(self.index)
        quiet = DNSLogger("-request,-reply,-truncated,-error,-recv,-send,-data", logf=lambda _: None)
        # Port 0 picks a free UDP port; the same TCP port may be taken by someone else,
        # so pick again rather than fail.
        attempts = 20 if port == 0 else 1
        for attempt in range(attempts):
            udp = _DnsLibServer(resolver, address=host, port=port, logger=quiet)
            picked = udp.server.server_address[1]
            try:
                tcp = _DnsLibServer(resolver, address=host, port=picked, tcp=True, logger=quiet)
                break
            except OSError:
                udp.server.server_close()
                if attempt == attempts - 1:
                    raise
        port = picked
        self._servers += [udp, tcp]
        udp.start_thread()
        tcp.start_thread()
        return port

    def stop(self) -> None:
        self._stop.set()
        for s in self._servers:
            s.stop()
            s.server.server_close()
        self._servers = []
        if self._watcher is not None:
            self._watcher.join(5)

    # following the feed -------------------------------------------------------
    def _sync(self) -> None:
        self._apply(self.feed.dns_changes(0, 0))

    def _apply(self, update: DnsUpdate) -> None:
        if update.reset:
            self.index.reset()
        for e in update.entries:
            self.index.apply(e.key, e.value)
        self._rev = max(self._rev, update.revision) if not update.reset else update.revision
        if update.reset:
            self._synced.set()

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                self._apply(self.feed.dns_changes(self._rev, self.poll_timeout))
            except Exception:  # the store closed under us (shutdown), or the link is down: retry calmly
                if self._stop.wait(1.0):
                    return
