"""The SQLite store: revisions, compare-and-swap, watch, persistence."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from corral.errors import VersionConflict
from corral.store.base import ABSENT, Delete, Put
from corral.store.sqlite import SqliteStore


def test_put_get_list_delete_with_versions(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "db")
    a = s.put("/groups/a", {"x": 1}, expect_version=ABSENT)
    b = s.put("/groups/b", {"x": 2})
    s.put("/other/c", {"x": 3})
    assert a.version < b.version
    assert s.get("/groups/a").value == {"x": 1}
    assert [r.key for r in s.list("/groups/")] == ["/groups/a", "/groups/b"]
    assert s.count("/groups/") == 2 and s.count("/") == 3 and s.count("/none/") == 0
    assert s.delete("/groups/a", expect_version=a.version)
    assert s.get("/groups/a") is None and not s.delete("/groups/a")


def test_compare_and_swap_rejects_stale_and_duplicate_writes(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "db")
    first = s.put("/k", {"v": 1}, expect_version=ABSENT)
    with pytest.raises(VersionConflict):
        s.put("/k", {"v": 2}, expect_version=ABSENT)
    s.put("/k", {"v": 2}, expect_version=first.version)
    with pytest.raises(VersionConflict):
        s.put("/k", {"v": 3}, expect_version=first.version)  # lost update refused
    with pytest.raises(VersionConflict):
        s.delete("/k", expect_version=first.version)
    assert s.get("/k").value == {"v": 2}
    # A refused write does not advance the revision.
    rev = s.revision()
    with pytest.raises(VersionConflict):
        s.put("/k", {"v": 4}, expect_version=ABSENT)
    assert s.revision() == rev


def test_watch_wakes_on_a_write_under_the_prefix(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "db")
    rev = s.revision()
    threading.Timer(0.1, lambda: (s.put("/elsewhere", {}), s.put("/groups/x", {"n": 1}))).start()
    t0 = time.monotonic()
    events = s.watch("/groups/", rev, timeout=5)
    assert time.monotonic() - t0 < 4
    assert [(e.type, e.key, e.value) for e in events] == [("put", "/groups/x", {"n": 1})]
    s.delete("/groups/x")
    events = s.watch("/groups/", events[-1].revision, timeout=1)
    assert [(e.type, e.key) for e in events] == [("delete", "/groups/x")]
    assert s.watch("/groups/", s.revision(), timeout=0.05) == []


def test_state_survives_reopening(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "db")
    rec = s.put("/k", {"v": 1})
    s.close()
    s2 = SqliteStore(tmp_path / "db")
    assert s2.get("/k") == rec
    assert s2.revision() == rec.version
    assert s2.put("/j", {}).version == rec.version + 1


def test_txn_applies_all_or_nothing(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "db")
    a = s.put("/k/a", {"v": 1})
    s.put("/k/gone", {"v": 0})
    before = s.revision()
    out = s.txn([Put(key="/k/a", value={"v": 2}, expect_version=a.version),
                 Put(key="/k/b", value={"v": 3}, expect_version=ABSENT), Delete(key="/k/gone")])
    assert [r.value if r else None for r in out] == [{"v": 2}, {"v": 3}, None]
    assert s.get("/k/gone") is None and s.revision() > before
    events = s.watch("/k/", before, timeout=0)
    assert [(e.type, e.key) for e in events] == [("put", "/k/a"), ("put", "/k/b"), ("delete", "/k/gone")]
    rev = s.revision()
    with pytest.raises(VersionConflict, match="/k/b"):  # second op stale: the first is not applied either
        s.txn([Put(key="/k/c", value={"v": 4}), Put(key="/k/b", value={"v": 5}, expect_version=a.version)])
    assert s.get("/k/c") is None and s.get("/k/b").value == {"v": 3} and s.revision() == rev
    with pytest.raises(VersionConflict, match="/k/none"):
        s.txn([Delete(key="/k/none")])
    assert s.txn([]) == [] and s.revision() == rev
