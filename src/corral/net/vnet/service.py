"""The node's network service: runs ``corral-vnet`` CNI calls in-process for the executable.

A CNI runtime (Podman, a kubelet's runtime) starts the executable once per call;
starting Python and importing pydantic and pyroute2 costs far more than the
work. The node agent therefore listens on a unix socket (``client.py`` is the
other end, and describes the wire format) and does each call in its own,
already warm process with ``cli.respond`` -- the very code the executable would
run, so results, error codes and idempotence are the same either way.

It serves only callers that see the host as it does: root, in the service's
network and mount namespaces (the host side of a vnet is "the calling thread's
network namespace", and ``CNI_NETNS`` is a path). Anyone else is told to do the
work itself. One agent per socket path: a lock file next to the socket says
who serves it, so a second agent on the machine leaves it alone.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable

from corral.net.vnet import client

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, str], bytes], tuple[int, bytes]]

MAX_REQUEST = 16 << 20  # a conf with a prevResult is a few kB; GC lists every attachment
MAX_PARALLEL = 16
_UCRED = struct.Struct("3i")


def _respond(env: dict[str, str], stdin: bytes) -> tuple[int, bytes]:
    from corral.net.vnet import cli

    return cli.respond(env, stdin)


def _ns_id(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


class CniService:
    def __init__(self, path: str | os.PathLike[str], handler: Handler = _respond) -> None:
        self.path = str(path)
        self.handler = handler
        self._sock: socket.socket | None = None
        self._lock_fd: int | None = None
        self._thread: threading.Thread | None = None
        self._slots = threading.BoundedSemaphore(MAX_PARALLEL)
        self._stopping = threading.Event()
        self._inode = 0
        self.served = 0  # calls done here
        self.declined = 0  # calls sent back to be done by the executable itself

    def start(self) -> bool:
        """Listen (False when another live service holds the path, or it cannot be used)."""
        if len(self.path.encode()) >= 108:
            log.warning("CNI service not started: socket path %s is too long for a unix socket", self.path)
            return False
        d = os.path.dirname(self.path) or "."
        os.makedirs(d, mode=0o755, exist_ok=True)
        fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            log.info("CNI service: %s is served by another agent on this machine", self.path)
            return False
        try:
            try:
                os.unlink(self.path)  # a dead service's socket: we hold the lock, so it is not live
            except FileNotFoundError:
                pass
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            old = os.umask(0o177)  # root only: the service acts as root on the host's network
            try:
                sock.bind(self.path)
            finally:
                os.umask(old)
            sock.listen(128)
        except OSError:
            os.close(fd)
            raise
        self._lock_fd, self._sock, self._inode = fd, sock, os.stat(self.path).st_ino
        # Namespaces are per thread and a new thread inherits its creator's: the callers we
        # serve are those in the namespaces of the thread that started us.
        self._netns, self._mntns = _ns_id("/proc/thread-self/ns/net"), _ns_id("/proc/thread-self/ns/mnt")
        self._thread = threading.Thread(target=self._accept_loop, name="corral-vnet-service", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        self._stopping.set()
        try:
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes accept()
        except OSError:
            pass
        sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _accept_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stopping.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            self._slots.acquire()
            threading.Thread(target=self._serve, args=(conn,), name="corral-vnet-call", daemon=True).start()

    def _ours(self, conn: socket.socket) -> bool:
        pid, uid, _ = _UCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        if uid != 0:
            return False
        try:
            return (_ns_id(f"/proc/{pid}/ns/net") == self._netns and _ns_id(f"/proc/{pid}/ns/mnt") == self._mntns)
        except OSError:  # gone already, or not visible from here
            return False

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn:
                if not self._ours(conn):
                    self.declined += 1
                    conn.sendall(client.DECLINE + b"\n")
                    return
                chunks, size = [], 0
                while size <= MAX_REQUEST:
                    b = conn.recv(65536)
                    if not b:
                        break
                    chunks.append(b)
                    size += len(b)
                try:
                    if size > MAX_REQUEST:
                        raise ValueError("request too large")
                    env, stdin = client.decode_request(b"".join(chunks))
                except ValueError:
                    self.declined += 1
                    conn.sendall(client.DECLINE + b"\n")
                    return
                rc, out = self.handler(env, stdin)
                self.served += 1
                conn.sendall(b"%d\n" % rc + out)
        except OSError:  # the caller went away; it will redo the call itself or give up
            pass
        except Exception:
            log.exception("CNI service: a call failed unexpectedly")
        finally:
            self._slots.release()
