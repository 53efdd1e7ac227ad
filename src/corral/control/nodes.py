"""How the control plane reaches a node for what is not desired state: logs, exec, attach, image cache.

The all-in-one registers the local agent's client in-process; remote agents
will register an HTTP client with the same methods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from corral.errors import CorralError


class NodeUnavailable(CorralError):
    code = "NodeUnavailable"
    status = 503


class TerminalSession(Protocol):
    """An interactive process on a pty in a container (``corral.node.exec.PtySession`` has this shape)."""

    def read(self, size: int = 65536, timeout: float | None = None) -> bytes | None:
        """Output; b"" once the process has exited and its output is drained; None on timeout."""
        ...

    def write(self, data: bytes) -> None: ...

    def resize(self, rows: int, cols: int) -> None: ...

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code, or None if the process still runs after ``timeout``."""
        ...

    def close(self) -> None:
        """Hang up; the process gets SIGHUP and is killed if it lingers."""
        ...


class NodeClient(Protocol):
    def logs(self, uid: str, container: str, tail: int | None, timestamps: bool) -> str: ...

    def follow_logs(
        self, uid: str, container: str, timestamps: bool, stop: Callable[[], bool], tail: int | None = None
    ) -> Iterator[str]:
        """Existing lines (the last ``tail``), then new ones as they are written, until ``stop()``."""
        ...

    def exec(self, uid: str, container: str, argv: list[str], timeout: float | None) -> tuple[int, bytes, bytes]: ...

    def exec_pty(self, uid: str, container: str, argv: list[str], rows: int, cols: int) -> TerminalSession:
        """Start ``argv`` in the running container on a new pty of rows x cols."""
        ...

    def attach(self, uid: str, container: str, stop: Callable[[], bool], tail: int | None = 0) -> Iterator[str]:
        """The container's output lines from now on, until it exits or ``stop()``."""
        ...

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
