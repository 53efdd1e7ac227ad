"""The in-process ``NodeClient``: what the control plane may ask this node directly."""

from __future__ import annotations

import select
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from corral.errors import Conflict, PortUnreachable
from corral.node.exec import PtySession, attach, exec_capture, exec_pty
from corral.node.host import NodeHost, container_id
from corral.node.logs import follow_logs, read_logs


class TcpStream:
    """``PortStream`` over a socket from the host to the group's address (the host reaches it on the node bridge)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def read(self, size: int = 65536, timeout: float | None = None) -> bytes | None:
        ready, _, _ = select.select([self.sock], [], [], timeout)
        if not ready:
            return None
        try:
            return self.sock.recv(size)
        except OSError:
            return b""

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class LocalNodeClient:
    def __init__(self, host: NodeHost) -> None:
        self.host = host

    def _log(self, uid: str, container: str) -> Path:
        path = self.host.log_path(uid, container)
        if not path.exists() and self.host.log_path(uid, container, init=True).exists():
            path = self.host.log_path(uid, container, init=True)
        return path

    def _running(self, uid: str, container: str) -> str:
        cid = container_id(uid, container)
        status = self.host.runtime.state(cid).status
        if status != "running":
            # 409, not 404: the container exists in the group, it is just not running now.
            raise Conflict(f"container '{container}' is not running (it is {status}); start the group first")
        return cid

    def logs(self, uid: str, container: str, tail: int | None, timestamps: bool) -> str:
        return read_logs(self._log(uid, container), tail=tail, timestamps=timestamps)

    def follow_logs(
        self, uid: str, container: str, timestamps: bool, stop: Callable[[], bool], tail: int | None = None
    ) -> Iterator[str]:
        return follow_logs(self._log(uid, container), stop, timestamps=timestamps, tail=tail)

    def exec(self, uid: str, container: str, argv: list[str], timeout: float | None) -> tuple[int, bytes, bytes]:
        return exec_capture(self.host.runtime, self._running(uid, container), argv, timeout=timeout)

    def exec_pty(self, uid: str, container: str, argv: list[str], rows: int, cols: int) -> PtySession:
        return exec_pty(self.host.runtime, self._running(uid, container), argv, rows=rows, cols=cols)

    def attach(self, uid: str, container: str, stop: Callable[[], bool], tail: int | None = 0) -> Iterator[str]:
        return attach(self.host.runtime, self._running(uid, container), stop, tail=tail)

    def port_forward(self, uid: str, port: int) -> TcpStream:
        sandbox = self.host.network.get(uid)
        if sandbox is None:
            raise Conflict("the group has no network sandbox on this node (it is not running)")
        try:
            sock = socket.create_connection((sandbox.ip, port), timeout=5)
        except OSError as exc:
            raise PortUnreachable(f"cannot connect to port {port} of the group ({sandbox.ip}:{port}): "
                                  f"{exc.strerror or exc}") from None
        sock.settimeout(None)
        return TcpStream(sock)

    def cached_images(self) -> list[str]:
        return [img.reference for img in self.host.images.list()]
