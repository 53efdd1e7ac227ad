"""The store interface: a versioned key-value space with compare-and-swap and watch.

Shaped after etcd so a distributed store can replace SQLite without touching
callers: every write bumps one global revision; a record remembers the
revision that last modified it (its version); writers pass the version they
read to detect lost updates; watchers resume from a revision.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel


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
