"""The nodes the control plane can reach for logs, exec, attach and image cache (``NodeClient``s by name).

The all-in-one registers the local agent's client in-process; a remote agent is reached at
the endpoint it registered with, through a client ``remote`` makes (mutual TLS, see
``corral.link.node_http``), kept while the endpoint stays the same.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from corral.link.protocol import NodeClient, NodeUnavailable
from corral.model.records import NODES, NodeInfo
from corral.store.base import Store


class NodeDirectory:
    def __init__(self, store: Store | None = None) -> None:
        self.store = store
        # Makes the client of a remote node (set by `corral server`); None: only in-process nodes.
        self.remote: Callable[[NodeInfo], NodeClient] | None = None
        self._clients: dict[str, NodeClient] = {}
        self._remote: dict[str, tuple[str, NodeClient]] = {}
        self._lock = threading.Lock()

    def register(self, name: str, client: NodeClient) -> None:
        self._clients[name] = client

    def get(self, name: str | None) -> NodeClient:
        client = self._clients.get(name or "")
        if client is not None:
            return client
        info = self._info(name) if name else None
        if info is None or not info.endpoint or self.remote is None:
            raise NodeUnavailable(f"node '{name}' is not connected to this control plane")
        if not info.ready:
            raise NodeUnavailable(f"node '{name}' is NotReady (it stopped sending heartbeats); try again when it is "
                                  "back, or once its groups run elsewhere")
        return self._client_for(info)

    def _client_for(self, info: NodeInfo) -> NodeClient:
        with self._lock:
            known = self._remote.get(info.name)
            if known is not None and known[0] == info.endpoint:
                return known[1]
        assert self.remote is not None and info.endpoint
        client = self.remote(info)
        with self._lock:
            self._remote[info.name] = (info.endpoint, client)
        return client

    def _info(self, name: str) -> NodeInfo | None:
        if self.store is None:
            return None
        rec = self.store.get(NODES + name)
        return NodeInfo.model_validate(rec.value) if rec else None

    def all(self) -> list[NodeClient]:
        """Every node that can answer now: the in-process ones, and the ready remote ones."""
        out = list(self._clients.values())
        if self.store is not None and self.remote is not None:
            for rec in self.store.list(NODES):
                info = NodeInfo.model_validate(rec.value)
                if info.name not in self._clients and info.endpoint and info.ready:
                    out.append(self._client_for(info))
        return out
