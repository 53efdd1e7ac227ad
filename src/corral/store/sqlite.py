"""SQLite (WAL) implementation of the store, for one control plane process."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from corral.errors import VersionConflict
from corral.store.base import Compacted, Event, Op, Put, Record, check_expectation, check_txn

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    revision INTEGER PRIMARY KEY, key TEXT NOT NULL, type TEXT NOT NULL, value TEXT);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

# History kept for watchers that fall behind; older events are compacted away.
RETAINED_EVENTS = 10_000


class SqliteStore:
    local_reads = True  # reads are in-process and never wait on a lock or the network (api/deps.read_store)

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        row = self._db.execute("SELECT value FROM meta WHERE name='revision'").fetchone()
        self._rev = row[0] if row else 0
        row = self._db.execute("SELECT value FROM meta WHERE name='compacted'").fetchone()
        self._compacted = row[0] if row else 0
        self._path = str(path)
        self._readers = threading.local()

    def _reader(self) -> sqlite3.Connection:
        """This thread's own read connection. WAL lets readers run beside the writer and each other,
        so reads take no lock: queued behind one lock, concurrent API reads (a list is one query per
        group) and the watchers convoyed, and the handoffs cost more than the queries."""
        db: sqlite3.Connection | None = getattr(self._readers, "db", None)
        if db is None:
            db = self._readers.db = sqlite3.connect(self._path, isolation_level=None)
        return db

    # reads -----------------------------------------------------------------
    def get(self, key: str) -> Record | None:
        row = self._reader().execute("SELECT value, version FROM kv WHERE key=?", (key,)).fetchone()
        return Record(key=key, value=json.loads(row[0]), version=row[1]) if row else None

    def list(self, prefix: str) -> list[Record]:
        rows = self._reader().execute(
            "SELECT key, value, version FROM kv WHERE key >= ? AND key < ? ORDER BY key",
            (prefix, prefix + "\uffff"),
        ).fetchall()
        return [Record(key=k, value=json.loads(v), version=ver) for k, v, ver in rows]

    def count(self, prefix: str) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM kv WHERE key >= ? AND key < ?",
                                   (prefix, prefix + "\uffff")).fetchone()
        return int(row[0])

    def revision(self) -> int:
        with self._lock:
            return self._rev

    # writes ----------------------------------------------------------------
    def _check(self, key: str, expect_version: int | None) -> int | None:
        row = self._db.execute("SELECT version FROM kv WHERE key=?", (key,)).fetchone()
        current = row[0] if row else None
        check_expectation(key, current, expect_version)
        return current

    def _append(self, key: str, kind: str, value: str | None) -> int:
        self._rev += 1
        self._db.execute("INSERT INTO events VALUES (?, ?, ?, ?)", (self._rev, key, kind, value))
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('revision', ?)", (self._rev,))
        if self._rev % 1000 == 0:
            self._forget_through(self._rev - RETAINED_EVENTS)
        return self._rev

    def _forget_through(self, revision: int) -> None:
        """Drop the history up to ``revision``; what is gone stays gone (the floor never goes down). Under the lock."""
        if revision > self._compacted:
            self._compacted = revision
            self._db.execute("DELETE FROM events WHERE revision <= ?", (revision,))
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('compacted', ?)", (revision,))

    def put(self, key: str, value: dict[str, Any], expect_version: int | None = None) -> Record:
        out = self.txn([Put(key=key, value=value, expect_version=expect_version)])[0]
        assert out is not None
        return out

    def delete(self, key: str, expect_version: int | None = None) -> bool:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                current = self._check(key, expect_version)
                if current is None:
                    self._db.execute("ROLLBACK")
                    return False
                self._append(key, "delete", None)
                self._db.execute("DELETE FROM kv WHERE key=?", (key,))
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            self._changed.notify_all()
        return True

    def txn(self, ops: list[Op]) -> list[Record | None]:
        check_txn(ops)
        out: list[Record | None] = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for op in ops:
                    current = self._check(op.key, op.expect_version)
                    if isinstance(op, Put):
                        text = json.dumps(op.value, separators=(",", ":"))
                        rev = self._append(op.key, "put", text)
                        self._db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)", (op.key, text, rev))
                        out.append(Record(key=op.key, value=op.value, version=rev))
                    else:
                        if current is None:
                            raise VersionConflict(f"'{op.key}' does not exist")
                        self._append(op.key, "delete", None)
                        self._db.execute("DELETE FROM kv WHERE key=?", (op.key,))
                        out.append(None)
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            if ops:
                self._changed.notify_all()
        return out

    def _rollback(self) -> None:
        self._db.execute("ROLLBACK")
        row = self._db.execute("SELECT value FROM meta WHERE name='revision'").fetchone()
        self._rev = row[0] if row else 0

    def compact(self, revision: int) -> None:
        """Forget the history up to ``revision``: a watch from before it raises Compacted."""
        with self._lock:
            self._forget_through(min(revision, self._rev))

    # watch -----------------------------------------------------------------
    def watch(self, prefix: str, after: int, timeout: float) -> list[Event]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                if after < self._compacted:
                    raise Compacted(f"revision {after} was compacted (oldest kept: {self._compacted})")
                if self._rev > after:
                    rows = self._db.execute(
                        "SELECT revision, key, type, value FROM events WHERE revision > ? "
                        "AND key >= ? AND key < ? ORDER BY revision",
                        (after, prefix, prefix + "\uffff"),
                    ).fetchall()
                    if rows:
                        return [
                            Event(revision=r, key=k, type=t, value=json.loads(v) if v else None)
                            for r, k, t, v in rows
                        ]
                    after = self._rev  # nothing under prefix yet: wait for newer writes
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._changed.wait(left)

    def close(self) -> None:
        with self._lock:
            self._db.close()
