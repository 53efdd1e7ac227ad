"""Warm containers: started ahead of any request, each waiting to become one container.

A warm container is a real crun container (namespaces, mounts, cgroup, capabilities,
seccomp: everything but the command) whose first process is ``corral-warm-init``
(``warm_init.c``), run from the node's copy through an inherited fd, so nothing of it
is in the container's file system. Binding it to a container writes the container's
working directory, command and environment to its command FIFO; the init execs that in
its own place, and its status FIFO closes (success) or carries the reason it could not.
What crun would take ~10 ms for then takes well under one.

The agent holds the command FIFO's writer and the status FIFO's reader, in memory only:
if the agent dies, the writer closes, and a warm container that never got a command exits
without running anything. One that got its command is the container's (``Runtime.recover_warm``).
"""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

from corral import native
from corral.errors import RuntimeFailure

INIT = "corral-warm-init"
PREFIX = "warm-"  # warm containers' ids (their bundles, exit files and runtime ids)
ARGS = ["/proc/self/fd/3"]  # the init, as the crun shim passes it (see crun_shim.c)
START_TIMEOUT = 10.0


def init_path() -> Path | None:
    """The warm init, when ``make venv`` built it (it needs a static libc); None: no warm containers here."""
    return native.installed(INIT)


def encode(cwd: str, args: list[str], env: list[str]) -> bytes:
    """The command as the init reads it: cwd, args, an empty item, env; each NUL-terminated."""
    items = [cwd, *args, "", *env]
    if not args or any("\0" in i for i in items) or any(a == "" for a in args[:1]):
        raise RuntimeFailure("a warm container's command needs a non-empty first argument and no NUL bytes")
    return b"".join(i.encode() + b"\0" for i in items)


class WarmFifos:
    """A warm container's two FIFOs, from the agent's side."""

    def __init__(self, bundle: Path) -> None:
        self.command_path = bundle / "command"
        self.status_path = bundle / "status"
        os.mkfifo(self.command_path, 0o600)
        os.mkfifo(self.status_path, 0o600)
        # Read-write so opening never blocks; the only writer: closing it (or dying) ends the init.
        self._command = os.open(self.command_path, os.O_RDWR | os.O_CLOEXEC)
        # The reader, so the shim's non-blocking open for writing finds one.
        self._status = os.open(self.status_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)

    def env(self) -> dict[str, str]:
        """What the crun shim needs to hand the init its fds."""
        path = init_path()
        if path is None:
            raise RuntimeFailure(f"{INIT} is not built on this node")
        return {"CORRAL_WARM_INIT": str(path), "CORRAL_WARM_COMMAND": str(self.command_path),
                "CORRAL_WARM_STATUS": str(self.status_path)}

    def deliver(self, command: bytes, timeout: float = START_TIMEOUT) -> None:
        """Give the init its command and wait until it has exec'd it; RuntimeFailure with its reason if not."""
        if self._command < 0:
            raise RuntimeFailure("this warm container was already bound or discarded")
        try:
            view = memoryview(command)
            while view:  # the FIFO holds 64 KiB: the init reads while we write
                view = view[os.write(self._command, view):]
        except OSError as e:
            raise RuntimeFailure(f"the warm container is gone: {e}") from e
        finally:
            os.close(self._command)
            self._command = -1
        deadline = time.monotonic() + timeout
        said = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeFailure(f"the warm container did not start its command within {timeout:.0f}s")
            ready, _, _ = select.select([self._status], [], [], left)
            if not ready:
                continue
            try:
                chunk = os.read(self._status, 4096)
            except BlockingIOError:
                continue
            if not chunk:
                break
            said += chunk
        self.close()
        if said:
            raise RuntimeFailure(said.decode(errors="replace"))

    def close(self) -> None:
        """Drop the agent's ends; an init still waiting for its command then exits. Idempotent."""
        for fd in (self._command, self._status):
            if fd >= 0:
                os.close(fd)
        self._command = self._status = -1
