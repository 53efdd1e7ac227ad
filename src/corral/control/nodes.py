"""How the control plane reaches a node for what is not desired state: logs, exec, image cache.

The all-in-one registers the local agent's client in-process; remote agents
will register an HTTP client with the same methods.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from corral.errors import CorralError


class NodeUnavailable(CorralError):
    code = "NodeUnavailable"
    status = 503


class NodeClient(Protocol):
    def logs(self, uid: str, container: str, tail: int | None, timestamps: bool) -> str: ...

    def follow_logs(self, uid: str, container: str, timestamps: bool, stop: object) -> Iterator[str]: ...

    def exec(self, uid: str, container: str, argv: list[str], timeout: float | None) -> tuple[int, bytes, bytes]: ...

    def cached_images(self) -> list[str]: ...


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
