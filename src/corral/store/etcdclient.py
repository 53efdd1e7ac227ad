"""A small client for etcd's v3 API through its JSON gateway (``/v3/...`` on the client port).

Unary calls go over one pooled httpx client; a watch is a long-lived streamed response read from a
plain socket, so its reader can poll, notice a silent member and be closed from another thread.
Several endpoints: a call that could not be sent, or a read whose member failed, moves on to the
next member; a write whose member failed after it was sent is reported as of unknown outcome
(StoreUnavailable), never silently repeated. Why this and not a client library: docs/etcd.md.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from corral.errors import InvalidRequest, StoreRequestInvalid, StoreUnavailable
from corral.store.base import Compacted

# gRPC status codes the gateway reports in its error bodies.
INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, OUT_OF_RANGE, UNAVAILABLE = 3, 5, 8, 11, 14
# Errors after which etcd has certainly not applied the request: any call may go to another member.
_NOT_APPLIED = ("no leader", "too many requests", "not capable", "unhealthy cluster")
# gRPC metadata through the gateway: a member cut off from its cluster closes our watch streams
# instead of leaving them silent (clientv3's WithRequireLeader).
REQUIRE_LEADER = {"Grpc-Metadata-hasleader": "true"}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text) if text else b""


def prefix_end(prefix: bytes) -> bytes:
    """The range end that makes [prefix, end) exactly the keys starting with ``prefix``."""
    head = bytearray(prefix)
    while head:
        if head[-1] < 0xFF:
            head[-1] += 1
            return bytes(head)
        head.pop()
    return b"\0"  # etcd: every key


def parse_endpoints(hosts: str, secure: bool = False) -> list[str]:
    """``host:port[,host:port...]`` -> base URLs (``https://`` when ``secure``: the store URL names a CA)."""
    want = "https" if secure else "http"
    out = []
    for part in hosts.split(","):
        part = part.strip()
        if not part:
            continue
        if "://" not in part:
            part = f"{want}://{part}"
        u = urlsplit(part)
        if u.scheme != want:
            raise InvalidRequest(f"etcd endpoint '{part}': {u.scheme} where the store URL asks for {want} "
                                 "(https is chosen by giving cacert=..., see docs/etcd.md)")
        if not u.hostname or not u.port:
            raise InvalidRequest(f"etcd endpoint '{part}' needs a host and a port (HOST:PORT)")
        out.append(f"{u.scheme}://{u.netloc}")
    if not out:
        raise InvalidRequest("an etcd store URL names at least one endpoint: etcd://HOST:PORT[,HOST:PORT]")
    return out


def tls_context(cacert: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """What the client trusts (the members' CA) and, for etcd's ``--client-cert-auth``, who it is."""
    if (cert is None) != (key is None):
        raise InvalidRequest("an etcd client certificate needs both cert=PATH and key=PATH in the store URL")
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    for what, path in (("cacert", cacert), ("cert", cert), ("key", key)):
        if path is not None and not path.is_file():
            raise InvalidRequest(f"etcd {what} '{path}' is not a readable file")
    try:
        ctx.load_verify_locations(cafile=str(cacert))
        if cert is not None and key is not None:
            ctx.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise InvalidRequest(f"etcd TLS files ({cacert}, {cert}, {key}) cannot be used: {exc}") from None
    return ctx


class WriteOutcomeUnknown(StoreUnavailable):
    """A write reached etcd but its member failed before answering: it may or may not have been applied."""


class LeaseNotFound(Exception):
    """The lease expired or was revoked."""


def _raise_for(err: dict[str, Any], endpoint: str) -> None:
    code, msg = err.get("code"), str(err.get("error") or err.get("message") or err)
    if code == OUT_OF_RANGE or "compacted" in msg:
        raise Compacted(msg)
    if code == NOT_FOUND and "lease" in msg:
        raise LeaseNotFound(msg)
    if code == INVALID_ARGUMENT or "too large" in msg:
        raise StoreRequestInvalid(f"etcd refused the request: {msg}")
    if code == RESOURCE_EXHAUSTED:
        raise StoreUnavailable(f"etcd at {endpoint} is full ({msg}): compact and defragment it, or raise "
                               "its --quota-backend-bytes")
    raise StoreUnavailable(f"etcd at {endpoint}: {msg}")


# Alerts a member sends about our certificate (or none), and a member certificate we do not trust: set-up
# errors, raised before the member read the request. A connection that merely broke (SSLEOFError and the
# like, a member dying mid-answer) is not one of them: a write there stays of unknown outcome.
_TLS_SETUP_REASONS = ("CERTIFICATE", "UNKNOWN_CA", "HANDSHAKE_FAILURE", "ACCESS_DENIED")


def _raise_if_tls(exc: BaseException, endpoint: str) -> None:
    """A TLS set-up failure (a CA that does not match, a client certificate the member refuses or lacks):
    say so at once instead of retrying."""
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, ssl.SSLError):
        seen = seen.__cause__ or seen.__context__
    if not isinstance(seen, ssl.SSLError):
        return
    reason = str(getattr(seen, "reason", None) or "")
    if isinstance(seen, ssl.SSLCertVerificationError) or any(r in reason for r in _TLS_SETUP_REASONS):
        raise StoreUnavailable(f"TLS with etcd at {endpoint} failed ({reason or seen}): check the store URL's "
                               "cacert, cert and key") from exc


class EtcdClient:
    def __init__(self, endpoints: list[str], *, timeout: float = 5.0, connect_timeout: float = 1.0,
                 retry_for: float = 10.0, tls: ssl.SSLContext | None = None) -> None:
        self.endpoints = endpoints
        self.timeout, self.connect_timeout, self.retry_for = timeout, connect_timeout, retry_for
        self.tls = tls
        self._http = httpx.Client(timeout=httpx.Timeout(timeout, connect=connect_timeout), verify=tls or True,
                                  limits=httpx.Limits(max_keepalive_connections=16, max_connections=64))
        self._current = 0  # the member that answered last
        self._lock = threading.Lock()

    # unary calls -------------------------------------------------------------
    def call(self, path: str, body: dict[str, Any], *, idempotent: bool, timeout: float | None = None,
             retry_for: float | None = None) -> dict[str, Any]:
        """POST one request, moving across members while it is safe to; returns the decoded answer."""
        deadline = time.monotonic() + (self.retry_for if retry_for is None else retry_for)
        failures: list[str] = []
        n = len(self.endpoints)
        for attempt in range(10_000):
            index = (self._current + attempt) % n
            endpoint = self.endpoints[index]
            if attempt and attempt % n == 0:  # a whole round failed: the cluster may be electing a leader
                if time.monotonic() >= deadline:
                    break
                time.sleep(min(0.2 * (attempt // n), 1.0))
            try:
                r = self._http.post(endpoint + path, json=body, headers=REQUIRE_LEADER,
                                    timeout=None if timeout is None else httpx.Timeout(timeout,
                                                                                       connect=self.connect_timeout))
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                _raise_if_tls(exc, endpoint)
                failures.append(f"{endpoint}: {exc or type(exc).__name__}")
                continue
            except httpx.TransportError as exc:
                _raise_if_tls(exc, endpoint)
                if not idempotent:
                    raise WriteOutcomeUnknown(
                        f"etcd at {endpoint} failed while answering a write ({exc or type(exc).__name__}); "
                        "it may or may not have been applied: read it back") from exc
                failures.append(f"{endpoint}: {exc or type(exc).__name__}")
                continue
            try:
                answer = r.json()
            except ValueError:
                answer = {"error": r.text[:200], "code": UNAVAILABLE}
            if r.status_code == 200 and "error" not in answer:
                self._current = index
                return answer
            msg = str(answer.get("error") or answer.get("message") or "")
            if answer.get("code") == UNAVAILABLE or r.status_code >= 500:
                if idempotent or any(s in msg for s in _NOT_APPLIED):
                    failures.append(f"{endpoint}: {msg}")
                    continue
                raise WriteOutcomeUnknown(f"etcd at {endpoint}: {msg}; the write may or may not have been applied")
            _raise_for(answer, endpoint)
        raise StoreUnavailable("no etcd member answered: " + "; ".join(failures[-len(self.endpoints):]))

    def range(self, key: bytes, end: bytes | None = None, **opts: Any) -> dict[str, Any]:
        body: dict[str, Any] = {"key": b64(key), **opts}
        if end is not None:
            body["range_end"] = b64(end)
        return self.call("/v3/kv/range", body, idempotent=True)

    def put(self, key: bytes, value: bytes, lease: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = str(lease)
        return self.call("/v3/kv/put", body, idempotent=False)

    def delete(self, key: bytes) -> dict[str, Any]:
        return self.call("/v3/kv/deleterange", {"key": b64(key)}, idempotent=False)

    def txn(self, compare: list[dict[str, Any]], success: list[dict[str, Any]],
            failure: list[dict[str, Any]]) -> dict[str, Any]:
        return self.call("/v3/kv/txn", {"compare": compare, "success": success, "failure": failure},
                         idempotent=False)

    def compact(self, revision: int) -> None:
        try:
            self.call("/v3/kv/compaction", {"revision": str(revision), "physical": True}, idempotent=True)
        except Compacted:
            pass  # already compacted at or past it

    def grant(self, ttl: float) -> tuple[int, int]:
        """A new lease: (id, granted TTL in seconds)."""
        out = self.call("/v3/lease/grant", {"TTL": str(max(1, round(ttl)))}, idempotent=False)
        return int(out["ID"]), int(out["TTL"])

    def keepalive(self, lease: int, timeout: float) -> int:
        """Renew a lease once; returns its TTL. Raises LeaseNotFound when it is gone."""
        out = self.call("/v3/lease/keepalive", {"ID": str(lease)}, idempotent=True, timeout=timeout,
                        retry_for=0)
        ttl = int(out.get("result", {}).get("TTL", 0))
        if ttl <= 0:
            raise LeaseNotFound(f"lease {lease:x} expired")
        return ttl

    def revoke(self, lease: int) -> None:
        try:
            self.call("/v3/lease/revoke", {"ID": str(lease)}, idempotent=True, retry_for=1.0)
        except LeaseNotFound:
            pass

    def answers(self, endpoint: str, timeout: float = 2.0) -> bool:
        """Whether one member answers a status request (and knows a leader)."""
        try:
            r = self._http.post(endpoint + "/v3/maintenance/status", json={}, timeout=timeout)
            return r.status_code == 200 and int(r.json().get("leader", 0)) != 0
        except (httpx.HTTPError, ValueError):
            return False

    # watch -------------------------------------------------------------------
    def open_watch(self, create: dict[str, Any]) -> WatchStream:
        """Start a watch stream (a WatchCreateRequest) on the first member that takes it."""
        failures = []
        n = len(self.endpoints)
        for attempt in range(n):
            index = (self._current + attempt) % n
            try:
                return WatchStream(self.endpoints[index], {"create_request": create},
                                   connect_timeout=self.connect_timeout, tls=self.tls)
            except OSError as exc:
                failures.append(f"{self.endpoints[index]}: {exc}")
        raise StoreUnavailable("no etcd member accepted a watch: " + "; ".join(failures))

    def close(self) -> None:
        self._http.close()


class WatchStream:
    """One etcd watch over the gateway: an HTTP/1.1 response of newline-separated JSON messages.

    Iterating yields each message's ``result`` as it arrives, or None every ``poll`` seconds while
    nothing does (so the reader can check whether to stop). ``close`` may be called from any thread.
    """

    def __init__(self, endpoint: str, body: dict[str, Any], *, connect_timeout: float, poll: float = 0.5,
                 tls: ssl.SSLContext | None = None) -> None:
        u = urlsplit(endpoint)
        self.endpoint = endpoint
        self._sock = socket.create_connection((u.hostname, u.port), timeout=connect_timeout)
        try:
            if u.scheme == "https":
                # The handshake runs within the connect timeout; its failures are OSErrors (ssl.SSLError).
                self._sock = (tls or ssl.create_default_context()).wrap_socket(self._sock, server_hostname=u.hostname)
            payload = json.dumps(body).encode()
            head = (f"POST /v3/watch HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\nGrpc-Metadata-hasleader: true\r\n\r\n")
            self._sock.sendall(head.encode() + payload)
            self._sock.settimeout(max(connect_timeout, 2.0))
            self._buf = b""
            status, headers = self._read_head()
            if status != 200 or "chunked" not in headers.get("transfer-encoding", ""):
                raise OSError(f"etcd watch answered {status}: {self._buf[:200]!r}")
            self._sock.settimeout(poll)
        except BaseException:
            self._sock.close()
            raise
        self._body = b""
        self._closed = False

    def _recv(self) -> bytes:
        data = self._sock.recv(65536)
        if not data:
            raise EOFError(f"etcd at {self.endpoint} closed the watch")
        return data

    def _read_head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self._buf:
            self._buf += self._recv()
        head, self._buf = self._buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        return status, headers

    def _take_chunk(self) -> bytes | None:
        """The next whole chunk of the body from the buffer, or None until it has arrived."""
        size_line, sep, rest = self._buf.partition(b"\r\n")
        if not sep:
            return None
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            raise EOFError(f"etcd at {self.endpoint} ended the watch")
        if len(rest) < size + 2:
            return None
        self._buf = rest[size + 2:]
        return rest[:size]

    def _chunks(self) -> Iterator[bytes | None]:
        """The body's chunks as they arrive; None when ``poll`` passes without data."""
        while True:
            chunk = self._take_chunk()
            if chunk is not None:
                yield chunk
                continue
            try:
                self._buf += self._recv()
            except TimeoutError:
                yield None

    def __iter__(self) -> Iterator[dict[str, Any] | None]:
        for chunk in self._chunks():
            if chunk is None:
                yield None
                continue
            self._body += chunk
            while b"\n" in self._body:
                line, self._body = self._body.split(b"\n", 1)
                if not line.strip():
                    continue
                msg = json.loads(line)
                if "error" in msg:
                    err = msg["error"]
                    raise EOFError(f"etcd at {self.endpoint} ended the watch: {err.get('message', err)}")
                yield msg.get("result", {})

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            try:
                # The plain socket's shutdown, also under TLS: it wakes a reader blocked in another thread
                # without tearing down the TLS object under it.
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
