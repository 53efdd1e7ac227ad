"""What a node's network sandboxes hold while they are made: a lock per sandbox id, and host ports.

Both network backends (the CNI bridge and the virtual networks) use these, and all
the virtual networks of a node share one ``HostPortClaims``: a host port is the
node's, whichever network the group that maps it is in.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable

from corral.errors import Conflict, InvalidRequest

_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,62}$")

PortKey = tuple[int, str]  # (host port, protocol)
# The sandboxes on disk of one backend and the host ports each holds.
Holdings = Callable[[], Iterable[tuple[str, list[PortKey]]]]


def check_sandbox_id(sandbox_id: str) -> None:
    if not _ID_RE.match(sandbox_id):
        raise InvalidRequest(
            f"sandbox id {sandbox_id!r} must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or "
            "digit", target="id")


class SandboxLocks:
    """One lock per sandbox id: create, delete and recovery of one sandbox never interleave."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def __call__(self, sandbox_id: str) -> threading.Lock:
        with self._lock:
            return self._locks.setdefault(sandbox_id, threading.Lock())


class HostPortClaims:
    """Host ports held by the node's sandboxes (as their records on disk say) and by creates in
    flight, whose claim is held here until their record holds the ports."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: dict[PortKey, str] = {}
        self._holdings: dict[str, Holdings] = {}

    def add_holdings(self, name: str, holdings: Holdings) -> None:
        """Where one backend's sandboxes are listed; a later call under the same name replaces it
        (a network's manager made again after its configuration changed)."""
        with self._lock:
            self._holdings[name] = holdings

    def drop_holdings(self, name: str) -> None:
        """The backend under ``name`` is gone (its network torn down)."""
        with self._lock:
            self._holdings.pop(name, None)

    def claim(self, sandbox_id: str, ports: list[PortKey]) -> None:
        """Claim ``ports`` for ``sandbox_id``; 400 for a port mapped twice, 409 for one held by another."""
        if not ports:
            return
        if len(set(ports)) != len(ports):
            raise InvalidRequest(f"sandbox {sandbox_id!r} maps the same host port twice", target="ports")
        with self._lock:
            taken = dict(self._inflight)
            for holdings in self._holdings.values():
                for owner, held in holdings():
                    if owner != sandbox_id:
                        taken.update(dict.fromkeys(held, owner))
            for key in ports:
                owner = taken.get(key)
                if owner is not None and owner != sandbox_id:
                    raise Conflict(f"host port {key[0]}/{key[1]} is already used by sandbox {owner!r}",
                                   target=str(key[0]))
            self._inflight.update(dict.fromkeys(ports, sandbox_id))

    def release(self, sandbox_id: str) -> None:
        """Drop the in-flight claim (the sandbox's record holds its ports from now on, or it failed)."""
        with self._lock:
            for key in [k for k, v in self._inflight.items() if v == sandbox_id]:
                del self._inflight[key]
