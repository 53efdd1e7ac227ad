"""The nodes the control plane can reach for logs, exec, attach and image cache (``NodeClient``s by name).

The all-in-one registers the local agent's client in-process; remote agents
will register an HTTP client with the same methods.
"""

from __future__ import annotations

from corral.link.protocol import NodeClient, NodeUnavailable


class NodeDirectory:
    def __init__(self) -> None:
        self._clients: dict[str, NodeClient] = {}

    def register(self, name: str, client: NodeClient) -> None:
        self._clients[name] = client

    def get(self, name: str | None) -> NodeClient:
        client = self._clients.get(name or "")
        if client is None:
            raise NodeUnavailable(f"node '{name}' is not connected to this control plane")
        return client

    def all(self) -> list[NodeClient]:
        return list(self._clients.values())
