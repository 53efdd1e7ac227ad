"""The store interface: a versioned key-value space with compare-and-swap and watch.

Shaped after etcd so a distributed store can replace SQLite without touching
callers: every write bumps one global revision; a record remembers the
revision that last modified it (its version); writers pass the version they
read to detect lost updates; watchers resume from a revision.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel

from corral.errors import StoreRequestInvalid, VersionConflict


class Record(BaseModel):
    key: str
    value: dict[str, Any]
    version: int  # the revision of the write that produced this value


class Event(BaseModel):
    type: Literal["put", "delete"]
    key: str
    revision: int
    value: dict[str, Any] | None = None  # None for deletes


# expect_version=ABSENT means "only if the key does not exist".
ABSENT = 0


class Put(BaseModel):
    """One write of a transaction (``Store.txn``)."""

    key: str
    value: dict[str, Any]
    expect_version: int | None = None


class Delete(BaseModel):
    """One delete of a transaction; the key must exist (a missing key fails the transaction)."""

    key: str
    expect_version: int | None = None


Op = Put | Delete

# etcd 3.4 refuses a Txn of more than 128 operations (its --max-txn-ops); every store enforces the same
# limit so code tested on SQLite works on etcd. Callers batch at BATCH_OPS.
MAX_TXN_OPS = 128
BATCH_OPS = 100


def check_txn(ops: list[Op]) -> None:
    """Refuse a transaction etcd would refuse: too many operations, or one key written twice."""
    if len(ops) > MAX_TXN_OPS:
        raise StoreRequestInvalid(f"a store transaction holds at most {MAX_TXN_OPS} operations, this one "
                                  f"{len(ops)}: split it into batches of {BATCH_OPS}")
    keys = [op.key for op in ops]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise StoreRequestInvalid(f"a store transaction writes each key once; repeated: {', '.join(twice)}")


def check_expectation(key: str, current: int | None, expect_version: int | None) -> None:
    """Raise VersionConflict unless a key at ``current`` (None: absent) satisfies ``expect_version``."""
    if expect_version is None:
        return
    if expect_version == ABSENT and current is not None:
        raise VersionConflict(f"'{key}' already exists")
    if expect_version != ABSENT and current != expect_version:
        raise VersionConflict(
            f"'{key}' changed since it was read (version {current}, expected {expect_version}); retry"
        )


class Store(Protocol):
    def get(self, key: str) -> Record | None: ...

    def list(self, prefix: str) -> list[Record]: ...

    def count(self, prefix: str) -> int:
        """How many keys are under ``prefix``, without reading their values."""
        ...

    def put(self, key: str, value: dict[str, Any], expect_version: int | None = None) -> Record:
        """Write ``value``; with ``expect_version`` only if the key is still at it (ABSENT: new key).

        Raises VersionConflict when the expectation does not hold.
        """
        ...

    def delete(self, key: str, expect_version: int | None = None) -> bool:
        """Delete; False when the key did not exist. Raises VersionConflict on a stale version."""
        ...

    def txn(self, ops: list[Op]) -> list[Record | None]:
        """Apply every op or none, atomically (one transaction: one etcd Txn, one SQLite transaction).

        Each op's ``expect_version`` is checked as ``put``/``delete`` check it; if any fails, nothing
        is written and VersionConflict names the first key that failed. Returns, in order, the new
        record of each Put and None for each Delete. Watchers see the writes as ordinary events
        (their revisions may be equal, as in etcd, or consecutive, as in SQLite).
        """
        ...

    def revision(self) -> int: ...

    def watch(self, prefix: str, after: int, timeout: float) -> list[Event]:
        """Events under ``prefix`` with revision > ``after``, blocking up to ``timeout`` for the first.

        Raises Compacted when ``after`` is older than the retained history;
        the caller then re-lists and watches from the current revision.
        """
        ...

    def close(self) -> None: ...


class Compacted(Exception):
    """The watch asked for history the store no longer keeps."""
