"""The Store contract, run against both stores: SQLite (one server) and etcd (a real member, and one
behind client TLS).

Each etcd case works in a namespace of its own on the session's etcd member (etcd_support.py).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from etcd_support import EtcdCluster, TlsFiles
from pydantic import BaseModel

from corral.errors import InvalidRequest, StoreRequestInvalid, StoreUnavailable, VersionConflict
from corral.store.base import ABSENT, MAX_TXN_OPS, Compacted, Delete, Put, Store
from corral.store.etcd import EtcdStore
from corral.store.etcdclient import parse_endpoints
from corral.store.open import open_store
from corral.store.sqlite import SqliteStore
from corral.store.update import update_record

Opener = Callable[[], Store]


@pytest.fixture(params=["sqlite", "etcd", "etcd-tls"])
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens (another handle on) one fresh store; every handle is closed at the end. etcd-tls: a member
    that asks for client certificates, reached over TLS (the store URL's cacert, cert, key)."""
    if request.param == "sqlite":
        url = f"sqlite://{tmp_path / 'store.db'}"
    else:
        etcd: EtcdCluster = request.getfixturevalue("etcd" if request.param == "etcd" else "etcd_tls")
        url = etcd.url(request.getfixturevalue("etcd_namespace"))
    opened: list[Store] = []

    def opener() -> Store:
        opened.append(open_store(url))
        return opened[-1]

    yield opener
    for s in opened:
        s.close()


@pytest.fixture
def s(reopen: Opener) -> Store:
    return reopen()


def test_put_get_list_count_delete_with_versions(s: Store) -> None:
    a = s.put("/groups/a", {"x": 1}, expect_version=ABSENT)
    b = s.put("/groups/b", {"x": 2})
    s.put("/other/c", {"x": 3})
    assert a.version < b.version
    assert s.get("/groups/a").value == {"x": 1}
    assert [r.key for r in s.list("/groups/")] == ["/groups/a", "/groups/b"]
    assert [r.key for r in s.list("/")] == ["/groups/a", "/groups/b", "/other/c"]
    assert s.count("/groups/") == 2 and s.count("/") == 3 and s.count("/none/") == 0
    assert s.delete("/groups/a", expect_version=a.version)
    assert s.get("/groups/a") is None and not s.delete("/groups/a")
    assert not s.delete("/groups/a", expect_version=ABSENT)


def test_compare_and_swap_rejects_stale_and_duplicate_writes(s: Store) -> None:
    first = s.put("/k", {"v": 1}, expect_version=ABSENT)
    with pytest.raises(VersionConflict):
        s.put("/k", {"v": 2}, expect_version=ABSENT)
    s.put("/k", {"v": 2}, expect_version=first.version)
    with pytest.raises(VersionConflict):
        s.put("/k", {"v": 3}, expect_version=first.version)  # lost update refused
    with pytest.raises(VersionConflict):
        s.delete("/k", expect_version=first.version)
    with pytest.raises(VersionConflict):
        s.delete("/k", expect_version=ABSENT)
    with pytest.raises(VersionConflict):
        s.delete("/missing", expect_version=first.version)
    assert s.get("/k").value == {"v": 2}
    # A refused write does not advance the revision.
    rev = s.revision()
    with pytest.raises(VersionConflict):
        s.put("/k", {"v": 4}, expect_version=ABSENT)
    assert s.revision() == rev


def test_watch_wakes_on_a_write_under_the_prefix(s: Store) -> None:
    rev = s.revision()
    threading.Timer(0.1, lambda: (s.put("/elsewhere", {}), s.put("/groups/x", {"n": 1}))).start()
    events = s.watch("/groups/", rev, timeout=10)
    assert [(e.type, e.key, e.value) for e in events] == [("put", "/groups/x", {"n": 1})]
    s.delete("/groups/x")
    events = s.watch("/groups/", events[-1].revision, timeout=5)
    assert [(e.type, e.key) for e in events] == [("delete", "/groups/x")]
    assert s.watch("/groups/", s.revision(), timeout=0.05) == []


def test_watch_resumes_from_a_revision_even_on_a_new_handle(reopen: Opener) -> None:
    s = reopen()
    revs = [s.put(f"/r/{i}", {"i": i}).version for i in range(5)]
    s.delete("/r/1")
    events = s.watch("/r/", revs[2], timeout=5)
    assert [(e.type, e.key) for e in events] == [("put", "/r/3"), ("put", "/r/4"), ("delete", "/r/1")]
    s.close()
    # A server started later (etcd: its in-memory window begins after these writes) still resumes.
    s2 = reopen()
    events = s2.watch("/r/", revs[2], timeout=5)
    assert [(e.type, e.key) for e in events] == [("put", "/r/3"), ("put", "/r/4"), ("delete", "/r/1")]
    assert s2.watch("/nothing/", revs[2], timeout=0.05) == []  # old revision, no events for it
    assert s2.get("/r/4").version == revs[4]  # and the state is what was written
    assert s2.put("/r/5", {}).version > revs[-1]


def test_compacted_history_is_reported(s: Store) -> None:
    early = s.put("/c/a", {"v": 0}).version
    for v in range(1, 4):
        s.put("/c/a", {"v": v})
    keep = s.put("/c/b", {}).version
    later = s.put("/c/c", {})
    s.compact(keep)  # type: ignore[attr-defined]  # both stores have it; not part of the protocol
    with pytest.raises(Compacted):
        s.watch("/c/", early, timeout=1)
    events = s.watch("/c/", keep, timeout=1)  # from the compaction point on, history is whole
    assert [(e.key, e.revision) for e in events] == [("/c/c", later.version)]
    assert s.get("/c/a").value == {"v": 3}  # compaction keeps the current values



def test_sqlite_own_compaction_keeps_an_earlier_one(tmp_path: Path) -> None:
    # SQLite forgets history itself every 1,000 revisions; that must not bring back a floor set by hand,
    # or a watcher from before it would miss events silently instead of being told to re-list.
    s = SqliteStore(tmp_path / "store.db")
    for i in range(1500):
        s.put(f"/k/{i % 7}", {"i": i})
    s.compact(1200)
    for i in range(600):  # past revision 2,000: the store's own compaction
        s.put(f"/k/{i % 7}", {"i": i})
    with pytest.raises(Compacted):
        s.watch("/k/", 100, timeout=0)
    s.close()

def test_txn_applies_all_or_nothing(s: Store) -> None:
    a = s.put("/k/a", {"v": 1})
    s.put("/k/gone", {"v": 0})
    before = s.revision()
    out = s.txn([Put(key="/k/a", value={"v": 2}, expect_version=a.version),
                 Put(key="/k/b", value={"v": 3}, expect_version=ABSENT), Delete(key="/k/gone")])
    assert [r.value if r else None for r in out] == [{"v": 2}, {"v": 3}, None]
    assert s.get("/k/gone") is None and s.revision() > before
    assert s.get("/k/b").version == out[1].version
    events = s.watch("/k/", before, timeout=5)
    assert [(e.type, e.key) for e in events] == [("put", "/k/a"), ("put", "/k/b"), ("delete", "/k/gone")]
    rev = s.revision()
    with pytest.raises(VersionConflict, match="/k/b"):  # second op stale: the first is not applied either
        s.txn([Put(key="/k/c", value={"v": 4}), Put(key="/k/b", value={"v": 5}, expect_version=a.version)])
    assert s.get("/k/c") is None and s.get("/k/b").value == {"v": 3} and s.revision() == rev
    with pytest.raises(VersionConflict, match="/k/none"):
        s.txn([Delete(key="/k/none")])
    assert s.txn([]) == [] and s.revision() == rev


def test_txn_refuses_what_etcd_would(s: Store) -> None:
    with pytest.raises(StoreRequestInvalid, match=f"at most {MAX_TXN_OPS}"):
        s.txn([Put(key=f"/big/{i}", value={}) for i in range(MAX_TXN_OPS + 1)])
    with pytest.raises(StoreRequestInvalid, match="/big/1"):
        s.txn([Put(key="/big/1", value={}), Delete(key="/big/1")])
    assert s.count("/big/") == 0
    s.txn([Put(key=f"/big/{i}", value={}) for i in range(MAX_TXN_OPS)])
    assert s.count("/big/") == MAX_TXN_OPS


def test_list_reads_large_prefixes_whole(s: Store) -> None:
    for start in range(0, 1100, 100):
        s.txn([Put(key=f"/many/{i:05d}", value={"i": i}) for i in range(start, start + 100)])
    records = s.list("/many/")
    assert [r.value["i"] for r in records] == list(range(1100))
    assert s.count("/many/") == 1100


class Counter(BaseModel):
    n: int = 0


def test_concurrent_compare_and_swap_writers_lose_no_update(reopen: Opener) -> None:
    s = reopen()
    writers, each = 4, 15

    def bump() -> None:
        for _ in range(each):
            update_record(s, "/counter", Counter, lambda c: Counter(n=(c.n if c else 0) + 1),
                          busy="too busy", attempts=200)

    threads = [threading.Thread(target=bump) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert s.get("/counter").value == {"n": writers * each}


def test_etcd_window_falls_back_to_etcd_history(etcd: EtcdCluster, etcd_namespace: str) -> None:
    """A watcher further behind than the in-memory window still gets every event, from etcd."""
    s = EtcdStore(etcd.endpoints, etcd_namespace, max_events=10)
    try:
        start = s.revision()
        for i in range(40):
            s.put(f"/w/{i:02d}", {"i": i})
        deadline = time.monotonic() + 10
        seen: list[int] = []
        after = start
        while len(seen) < 40 and time.monotonic() < deadline:
            events = s.watch("/w/", after, timeout=1)
            seen += [e.value["i"] for e in events if e.value]
            after = events[-1].revision if events else after
        assert seen == list(range(40))
    finally:
        s.close()


def test_etcd_tls_says_what_is_wrong_with_the_clients_credentials(etcd_tls: EtcdCluster, etcd_namespace: str,
                                                                   tmp_path: Path) -> None:
    """A member that asks for client certificates: without one, or trusting another CA, the store says it is
    TLS, at once (no retrying), and nothing is written."""
    assert etcd_tls.tls is not None
    base = f"etcd://{etcd_tls.hosts}{etcd_namespace}"
    other = TlsFiles.make(tmp_path / "other", ["127.0.0.1"])
    for url, why in ((f"{base}?cacert={etcd_tls.tls.ca}", "no client certificate"),
                     (f"{base}?cacert={other.ca}&cert={etcd_tls.tls.client_cert}&key={etcd_tls.tls.client_key}",
                      "the members' certificate is not from this CA"),
                     (f"{base}?cacert={etcd_tls.tls.ca}&cert={other.client_cert}&key={other.client_key}",
                      "a client certificate of another CA")):
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable, match="TLS with etcd at https://127.0.0.1:.*cacert, cert and key"):
            open_store(url)
        assert time.monotonic() - t0 < 5, why  # not the 10 s of retries an unreachable cluster gets
    s = open_store(etcd_tls.url(etcd_namespace))
    try:
        assert s.list("/") == []
    finally:
        s.close()


@pytest.mark.parametrize(("query", "says"), [
    ("?cacert={ca}&ca=x", "unknown option 'ca'"),
    ("?cert={ca}&key={ca}", "need cacert=PATH"),
    ("?cacert={ca}&cert={ca}", "needs both cert=PATH and key=PATH"),
    ("?cacert={ca}&cacert={ca}", "give 'cacert' once"),
    ("?cacert=", "give 'cacert' once"),
    ("?cacert=/nonexistent/ca.pem", "cacert '/nonexistent/ca.pem' is not a readable file"),
    ("?cacert={junk}", "cannot be used"),
])
def test_etcd_store_url_options_are_checked(tmp_path: Path, query: str, says: str) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    ca = TlsFiles.make(tmp_path / "tls", ["127.0.0.1"]).ca
    with pytest.raises(InvalidRequest, match=re.escape(says)):
        open_store("etcd://127.0.0.1:1/ns" + query.format(ca=ca, junk=tmp_path / "junk.pem"))
    with pytest.raises(InvalidRequest, match="http where the store URL asks for https"):
        parse_endpoints("127.0.0.1:2,http://127.0.0.1:1", secure=True)
