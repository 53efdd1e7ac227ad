"""Open the store a URL names: ``sqlite:///path/to/store.db`` (one server) or
``etcd://host:port[,host:port...][/namespace]`` (several servers; namespace ``/corral`` by default)."""

from __future__ import annotations

from pathlib import Path

from corral.errors import InvalidRequest
from corral.store.base import Store


def open_store(url: str) -> Store:
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise InvalidRequest(f"store URL '{url}' has no scheme: use sqlite:///PATH or etcd://HOST:PORT[,HOST:PORT]")
    if scheme == "sqlite":
        from corral.store.sqlite import SqliteStore

        if not rest.startswith("/"):
            raise InvalidRequest(f"store URL '{url}': a SQLite path must be absolute (sqlite:///var/lib/...)")
        return SqliteStore(Path(rest))
    if scheme == "etcd":
        from corral.store.etcd import EtcdStore

        return EtcdStore.from_url(url)
    raise InvalidRequest(f"store URL '{url}': unknown scheme '{scheme}' (sqlite or etcd)")
