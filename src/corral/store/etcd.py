"""The store on an etcd 3.4 cluster, for several control-plane servers.

Layout: a store key ``/a/b`` is the etcd key ``<namespace>/a/b`` (namespace ``/corral`` unless the
URL names one: ``etcd://h:p/ns``); the value is the record's JSON. A record's version is its
etcd ``mod_revision``, so ``expect_version`` is one Txn compare on it (0 = absent, as in etcd).
Watches are served from an in-memory window that one etcd watch keeps current (etcdwatch.py).
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from corral.errors import InvalidRequest, StoreRequestInvalid, StoreUnavailable, VersionConflict
from corral.store.base import ABSENT, Delete, Event, Op, Put, Record, check_expectation, check_txn
from corral.store.etcdclient import (
    EtcdClient,
    WriteOutcomeUnknown,
    b64,
    parse_endpoints,
    prefix_end,
    tls_context,
    unb64,
)
from corral.store.etcdwatch import MAX_EVENTS, EventWindow

DEFAULT_NAMESPACE = "/corral"
PAGE = 500  # keys per range request when listing
TLS_OPTIONS = ("cacert", "cert", "key")  # the store URL's query: etcdctl's names for them
ATTEMPTS = 3  # sends of a write whose outcome was unknown and which was certainly not applied


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _revision(answer: dict[str, Any]) -> int:
    return int(answer["header"]["revision"])


class EtcdStore:
    def __init__(self, endpoints: list[str], namespace: str = DEFAULT_NAMESPACE, *,
                 max_events: int = MAX_EVENTS, timeout: float = 5.0, tls: ssl.SSLContext | None = None) -> None:
        namespace = "/" + namespace.strip("/")
        if namespace == "/":
            raise InvalidRequest("an etcd store needs a namespace other than '/' (default /corral)")
        self.namespace = namespace
        self._ns = namespace.encode()
        self.client = EtcdClient(endpoints, timeout=timeout, tls=tls)
        self._window = EventWindow(self.client, self._ns, self.revision(), max_events=max_events)

    @classmethod
    def from_url(cls, url: str) -> EtcdStore:
        """``etcd://host:port[,host:port...][/namespace][?cacert=PATH[&cert=PATH&key=PATH]]``.

        ``cacert`` (the members' CA) turns TLS on; ``cert`` and ``key`` are the client certificate
        etcd's ``--client-cert-auth`` asks for (the names are etcdctl's flags).
        """
        rest, _, query = url.partition("://")[2].partition("?")
        hosts, _, path = rest.partition("/")
        opts = parse_qs(query, keep_blank_values=True) if query else {}
        for name, values in opts.items():
            if name not in TLS_OPTIONS:
                raise InvalidRequest(f"etcd store URL: unknown option '{name}' (known: {', '.join(TLS_OPTIONS)})")
            if len(values) != 1 or not values[0]:
                raise InvalidRequest(f"etcd store URL: give '{name}' once, as {name}=PATH")
        files = {name: Path(values[0]) for name, values in opts.items()}
        if files and "cacert" not in files:
            raise InvalidRequest("etcd store URL: cert= and key= need cacert=PATH (the members' CA), which turns "
                                 "TLS on")
        tls = tls_context(files["cacert"], files.get("cert"), files.get("key")) if files else None
        return cls(parse_endpoints(hosts, secure=tls is not None), path or DEFAULT_NAMESPACE, tls=tls)

    def etcd_key(self, key: str) -> bytes:
        if not key.startswith("/"):
            raise StoreRequestInvalid(f"store key {key!r} must start with '/'")
        return self._ns + key.encode()

    def _range(self, prefix: str) -> tuple[bytes, bytes] | None:
        prefix = prefix or "/"
        if not prefix.startswith("/"):
            return None  # every key starts with "/"
        start = self._ns + prefix.encode()
        return start, prefix_end(start)

    def _record(self, kv: dict[str, Any]) -> Record:
        return Record(key=unb64(kv["key"])[len(self._ns):].decode(), value=json.loads(unb64(kv.get("value"))),
                      version=int(kv["mod_revision"]))

    # reads -----------------------------------------------------------------
    def get(self, key: str) -> Record | None:
        kvs = self.client.range(self.etcd_key(key)).get("kvs")
        return self._record(kvs[0]) if kvs else None

    def list(self, prefix: str) -> list[Record]:
        span = self._range(prefix)
        if span is None:
            return []
        start, end = span
        out: list[Record] = []
        at: dict[str, Any] = {}
        while True:  # pages, all read at the first page's revision: one consistent snapshot
            answer = self.client.range(start, end, limit=str(PAGE), **at)
            kvs = answer.get("kvs") or []
            out.extend(self._record(kv) for kv in kvs)
            if not answer.get("more"):
                return out
            at = {"revision": str(_revision(answer))}
            start = unb64(kvs[-1]["key"]) + b"\0"

    def count(self, prefix: str) -> int:
        span = self._range(prefix)
        if span is None:
            return 0
        return int(self.client.range(span[0], span[1], count_only=True).get("count", 0))

    def revision(self) -> int:
        return _revision(self.client.range(self._ns, count_only=True))

    # writes ----------------------------------------------------------------
    def put(self, key: str, value: dict[str, Any], expect_version: int | None = None) -> Record:
        out = self.txn([Put(key=key, value=value, expect_version=expect_version)])[0]
        assert out is not None
        return out

    def delete(self, key: str, expect_version: int | None = None) -> bool:
        if expect_version == ABSENT:  # "only if it does not exist": there is nothing to delete
            check_expectation(key, None if self.get(key) is None else 1, ABSENT)
            return False
        if expect_version is not None:
            self.txn([Delete(key=key, expect_version=expect_version)])
            return True
        for _ in range(ATTEMPTS):
            try:
                answer = self.client.delete(self.etcd_key(key))
            except WriteOutcomeUnknown:
                if self.get(key) is None:
                    return True
                continue
            if int(answer.get("deleted", 0)) == 0:
                return False
            self._window.wrote(_revision(answer))
            return True
        raise StoreUnavailable(f"etcd did not delete '{key}'; retry")

    def txn(self, ops: list[Op]) -> list[Record | None]:
        """One etcd Txn: a compare per op that expects something, then all writes or none."""
        check_txn(ops)
        if not ops:
            return []
        compare, success, failure = [], [], []
        for op in ops:
            key = b64(self.etcd_key(op.key))
            if isinstance(op, Delete) and op.expect_version is None:  # a delete needs its key to exist
                compare.append({"key": key, "target": "MOD", "result": "GREATER", "mod_revision": "0"})
            elif isinstance(op, Delete) and op.expect_version == ABSENT:  # never holds: explained below
                compare.append({"key": key, "target": "MOD", "result": "EQUAL", "mod_revision": "-1"})
            elif op.expect_version is not None:
                compare.append({"key": key, "target": "MOD", "result": "EQUAL",
                                "mod_revision": str(op.expect_version)})
            if isinstance(op, Put):
                success.append({"request_put": {"key": key, "value": b64(_json(op.value))}})
            else:
                success.append({"request_delete_range": {"key": key}})
            failure.append({"request_range": {"key": key, "keys_only": True}})
        for _ in range(ATTEMPTS):
            try:
                answer = self.client.txn(compare, success, failure if compare else [])
            except WriteOutcomeUnknown as exc:  # e.g. etcd's leader died with our write in flight
                settled = self._settle(ops, exc)
                if settled is not None:
                    return settled
                continue  # certainly not applied: send it again
            if not answer.get("succeeded"):
                self._explain_failure(ops, answer)
            rev = _revision(answer)
            self._window.wrote(rev)
            return [Record(key=op.key, value=op.value, version=rev) if isinstance(op, Put) else None for op in ops]
        raise StoreUnavailable("etcd did not apply a store transaction; retry")

    def _settle(self, ops: list[Op], exc: WriteOutcomeUnknown) -> list[Record | None] | None:
        """After a write of unknown outcome: its results if it was applied, None if it certainly was not.

        Applied: every Put's key holds its value, all at one revision (one Txn), and every Delete's key
        is gone. Not applied: some op's expectation still holds exactly (the Txn is all or nothing),
        or no op expected anything (sending it again changes nothing). Otherwise raise ``exc``.
        """
        keys = [b64(self.etcd_key(op.key)) for op in ops]
        answer = self.client.call("/v3/kv/txn", {"success": [{"request_range": {"key": k}} for k in keys]},
                                  idempotent=True)
        now: list[dict[str, Any] | None] = []
        for resp in answer.get("responses") or []:
            kvs = resp.get("response_range", {}).get("kvs") or []
            now.append(kvs[0] if kvs else None)
        put_revs = {int(kv["mod_revision"]) for op, kv in zip(ops, now, strict=True) if isinstance(op, Put) and kv}
        applied = len(put_revs) <= 1 and all(
            kv is None if isinstance(op, Delete) else
            kv is not None and unb64(kv.get("value")) == _json(op.value)
            and op.expect_version != int(kv["mod_revision"])
            for op, kv in zip(ops, now, strict=True))
        if applied:
            rev = put_revs.pop() if put_revs else 0
            self._window.wrote(rev)
            return [Record(key=op.key, value=op.value, version=rev) if isinstance(op, Put) else None for op in ops]
        untouched = any(op.expect_version is not None
                        and (kv is None if op.expect_version == ABSENT
                             else kv is not None and int(kv["mod_revision"]) == op.expect_version)
                        for op, kv in zip(ops, now, strict=True))
        if untouched or all(op.expect_version is None for op in ops):
            return None
        raise exc

    def _explain_failure(self, ops: list[Op], answer: dict[str, Any]) -> None:
        """Raise VersionConflict naming the first op whose expectation failed (failure branch: their ranges)."""
        for op, resp in zip(ops, answer.get("responses") or [], strict=False):
            kvs = resp.get("response_range", {}).get("kvs") or []
            current = int(kvs[0]["mod_revision"]) if kvs else None
            check_expectation(op.key, current, op.expect_version)
            if isinstance(op, Delete) and current is None:
                raise VersionConflict(f"'{op.key}' does not exist")
        raise VersionConflict("a store transaction lost a race; retry")  # changed back between compare and read

    # history -----------------------------------------------------------------
    def watch(self, prefix: str, after: int, timeout: float) -> list[Event]:
        return self._window.watch(prefix, after, timeout)

    def compact(self, revision: int) -> None:
        """Forget the history up to ``revision``: a watch from before it raises Compacted.

        Operators usually let etcd do this itself (``--auto-compaction-mode=revision``).
        """
        self.client.compact(revision)
        self._window.forget_through(revision)

    def close(self) -> None:
        self._window.close()
        self.client.close()
