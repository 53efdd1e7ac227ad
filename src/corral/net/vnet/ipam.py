"""On-disk, crash-safe address allocation for one node block.

Layout under ``<dir>``:
  ``ids/<container>__<ifname>``  the intent: which address this attachment was given
  ``addr/<ip>``                  the claim: created with O_EXCL, names its owner
  ``last``                       where the round-robin search resumes
  ``lock``                       flock held while allocating or releasing

Allocation writes the intent first, then claims the address. A crash between the
two leaves an intent without a claim, which the retried ADD re-uses (or replaces);
the claim file is the single truth for "in use", so an address is never handed out
twice. DEL removes the claim, then the intent. GC drops claims and intents whose
attachment is no longer valid.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from corral.errors import NetworkCapacityExceeded


def attachment_key(container_id: str, ifname: str) -> str:
    return f"{container_id}__{ifname}"


def _write_durable(path: Path, data: bytes, *, exclusive: bool = False) -> bool:
    """Write ``data`` to ``path`` (atomically unless exclusive); False if exclusive and it exists."""
    if exclusive:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return True
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return True


class AddressStore:
    def __init__(
        self,
        directory: Path,
        block: ipaddress.IPv4Network,
        reserved: Iterable[ipaddress.IPv4Address] = (),
        limit: int = 250,
    ) -> None:
        self.dir = directory
        self.block = block
        self.limit = limit
        self._reserved = {block.network_address, block.broadcast_address, *reserved}
        self._addr = directory / "addr"
        self._ids = directory / "ids"
        self._addr.mkdir(parents=True, exist_ok=True)
        self._ids.mkdir(parents=True, exist_ok=True)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _owner(self, ip: str) -> str | None:
        try:
            return json.loads((self._addr / ip).read_bytes())["owner"]
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def _claim(self, ip: str, key: str) -> bool:
        body = json.dumps({"owner": key, "at": time.time()}).encode()
        return _write_durable(self._addr / ip, body, exclusive=True)

    def lookup(self, container_id: str, ifname: str) -> str | None:
        """The address held by an attachment, if it holds one (intent and claim agree)."""
        key = attachment_key(container_id, ifname)
        try:
            ip = (self._ids / key).read_text().strip()
        except FileNotFoundError:
            return None
        return ip if self._owner(ip) == key else None

    def allocate(self, container_id: str, ifname: str) -> ipaddress.IPv4Address:
        """The attachment's address: its existing one, or a fresh one. Raises when the node is full."""
        key = attachment_key(container_id, ifname)
        with self._locked():
            intent = self._ids / key
            if intent.exists():
                ip = intent.read_text().strip()
                owner = self._owner(ip)
                if owner == key:
                    return ipaddress.IPv4Address(ip)
                if owner is None and ipaddress.IPv4Address(ip) in self.block and self._claim(ip, key):
                    return ipaddress.IPv4Address(ip)  # crash between intent and claim: finish it
            used = len(os.listdir(self._addr))
            if used >= self.limit:
                raise NetworkCapacityExceeded(
                    f"node block {self.block} has {used} sandboxes, the limit is {self.limit}; "
                    "delete some or raise maxSandboxes",
                    target=str(self.block),
                )
            for cand in self._candidates():
                s = str(cand)
                if (self._addr / s).exists():
                    continue
                _write_durable(intent, s.encode())  # intent first
                if self._claim(s, key):
                    # Only a search hint: losing it in a crash is harmless, so no fsync.
                    (self.dir / "last").write_text(s)
                    return cand
            raise NetworkCapacityExceeded(
                f"no free address left in node block {self.block}", target=str(self.block)
            )

    def _candidates(self) -> Iterator[ipaddress.IPv4Address]:
        try:
            last = ipaddress.IPv4Address((self.dir / "last").read_text().strip())
        except (FileNotFoundError, ValueError):
            last = self.block.network_address
        first, end = int(self.block.network_address), int(self.block.broadcast_address)
        start = int(last) + 1 if first <= int(last) < end else first
        # Round robin from the last one handed out, so a freed address is not re-used at once.
        for n in (*range(start, end + 1), *range(first, start)):
            ip = ipaddress.IPv4Address(n)
            if ip not in self._reserved:
                yield ip

    def release(self, container_id: str, ifname: str) -> str | None:
        """Free the attachment's address; returns it (None when it held none)."""
        key = attachment_key(container_id, ifname)
        with self._locked():
            intent = self._ids / key
            try:
                ip = intent.read_text().strip()
            except FileNotFoundError:
                return None
            if self._owner(ip) == key:
                (self._addr / ip).unlink(missing_ok=True)
            intent.unlink(missing_ok=True)
            return ip

    def rename(self, old_id: str, new_id: str, ifname: str) -> str:
        """Hand an address over to another attachment (a standby sandbox taken by a group)."""
        old, new = attachment_key(old_id, ifname), attachment_key(new_id, ifname)
        with self._locked():
            ip = (self._ids / old).read_text().strip()
            _write_durable(self._ids / new, ip.encode())
            body = json.dumps({"owner": new, "at": time.time()}).encode()
            _write_durable(self._addr / ip, body)
            (self._ids / old).unlink(missing_ok=True)
            return ip

    def usage(self) -> tuple[int, int]:
        """(claimed addresses, addresses this block can hand out at most)."""
        usable = self.block.num_addresses - len({a for a in self._reserved if a in self.block})
        return len(os.listdir(self._addr)), min(usable, self.limit)

    def allocations(self) -> dict[str, str]:
        """ip -> owner attachment key, for every claimed address."""
        out: dict[str, str] = {}
        for name in os.listdir(self._addr):
            owner = self._owner(name)
            if owner is not None:
                out[name] = owner
        return out

    def gc(self, valid_keys: set[str], grace_s: float = 0.0, known: set[str] | None = None) -> list[str]:
        """Release every claim and intent whose attachment is not in ``valid_keys``; returns freed ips.

        Claims younger than ``grace_s`` whose owner is not in ``known`` (attachments with a
        record) are kept: they may belong to an ADD still in flight.
        """
        freed: list[str] = []
        now = time.time()
        with self._locked():
            for name in os.listdir(self._addr):
                owner = self._owner(name)
                if owner not in valid_keys:
                    young = grace_s and now - os.stat(self._addr / name).st_mtime < grace_s
                    if young and owner not in (known or set()):
                        valid_keys = valid_keys | {owner or ""}  # and keep its intent too
                        continue
                    (self._addr / name).unlink(missing_ok=True)
                    freed.append(name)
            for key in os.listdir(self._ids):
                if key not in valid_keys and not key.startswith("."):
                    (self._ids / key).unlink(missing_ok=True)
        return freed
