"""The node's warm containers: a few per recently started image, each in a reserved network slot.

A group whose first container can start warm (see ``NodeHost``) takes one whole: the
slot becomes its sandbox, the container's rootfs moves to the group, and the warm init
execs the container's command (``node/runtime/warm.py``). The pool then builds another
when starts have been quiet for a moment, so refills do not compete with a burst.

Warm containers are opt-in (``warm_containers`` in the node settings): each holds a
conmon, an overlay mount, a cgroup and a network slot while it waits.
"""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from corral.errors import ImageError
from corral.node.images.store import Image, ImageStore
from corral.node.network.records import Sandbox
from corral.node.runtime import warm
from corral.node.runtime.runtime import Runtime, WarmContainer

log = logging.getLogger(__name__)

IMAGES = 2  # distinct images kept warm: the most recently started ones
REFILL_QUIET = 0.2  # seconds without a take before the pool builds again (as the network pool)


@dataclass
class WarmEntry:
    """One warm container: its slot, its sandbox, its runtime handle and its rootfs directory."""

    image: Image
    slot: str | None  # None once the slot is a group's sandbox (no longer the pool's to free)
    sandbox: Sandbox
    container: WarmContainer
    rootfs_dir: Path


class WarmPool:
    """Thread-safe. Warm containers' cgroups are ``<cgroup parent>/warm/<id>``, and stay there once bound.
    ``spec_for(image, sandbox, rootfs, cgroup_path)`` builds a warm container's spec
    (the host's, so it is the spec a cold start would build, but for the command and the limits)."""

    def __init__(self, root: Path, size: int, runtime: Runtime, images: ImageStore, network: Any,
                 cgroup_parent: str, spec_for: Callable[[Image, Sandbox, Path, str], dict[str, Any]]) -> None:
        self.root = root
        self.size = size
        self._runtime = runtime
        self._images = images
        self._network = network
        self._cgroup_parent = cgroup_parent
        self._spec_for = spec_for
        self._lock = threading.Lock()
        self._ready: dict[str, list[WarmEntry]] = {}  # image digest -> entries
        self._wanted: OrderedDict[str, Image] = OrderedDict()  # digest -> image, most recent last
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._last_take = 0.0
        self._thread: threading.Thread | None = None
        self.errors: list[BaseException] = []
        self.enabled = size > 0 and runtime.warm_capable() and hasattr(network, "reserve")

    # ---- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Undo what a previous agent left, then fill in the background."""
        self.recover()
        if not self.enabled:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._fill_loop, name="warm-pool", daemon=True)
        self._thread.start()

    def recover(self) -> None:
        self._runtime.recover_warm()
        if self.root.is_dir():
            for leftover in sorted(self.root.iterdir()):
                self._images.unmount_rootfs(leftover)
                shutil.rmtree(leftover, ignore_errors=True)

    def stop(self) -> None:
        """Stop filling and discard every warm container (nothing of a user's runs in them)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._lock:
            entries = [e for es in self._ready.values() for e in es]
            self._ready.clear()
        for e in entries:
            self.discard(e)

    def wait_full(self, timeout: float = 30.0) -> bool:
        """Block until every wanted image has its warm containers (tests and benchmarks)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if self._wanted and all(len(self._ready.get(d, [])) >= self.size for d in self._wanted):
                    return True
            time.sleep(0.01)
        return False

    def count(self) -> int:
        with self._lock:
            return sum(len(es) for es in self._ready.values())

    # ---- use --------------------------------------------------------------------------

    def want(self, image: Image) -> None:
        """``image`` was just started: keep it warm (it becomes the most recent)."""
        if not self.enabled:
            return
        with self._lock:
            if image.digest in self._wanted:
                self._wanted.move_to_end(image.digest)
                return
            self._wanted[image.digest] = image
            dropped = []
            while len(self._wanted) > IMAGES:
                old, _ = self._wanted.popitem(last=False)
                dropped += self._ready.pop(old, [])
        for e in dropped:
            self.discard(e)
        self._wake.set()

    def claim(self, image: Image) -> WarmEntry | None:
        """A warm container of ``image`` whose init still waits, taken out of the pool; None: none ready."""
        if not self.enabled:
            return None
        while True:
            with self._lock:
                entries = self._ready.get(image.digest)
                entry = entries.pop(0) if entries else None
                if entry is not None:
                    self._last_take = time.monotonic()
            if entry is None:
                return None
            self._wake.set()
            if self._runtime.warm_waiting(entry.container):
                return entry
            self.discard(entry)  # its init died (a fence kills the node's containers): try the next

    def discard(self, entry: WarmEntry) -> None:
        """Remove a warm container and its slot and rootfs (idempotent)."""
        try:
            entry.container.fifos.close()
            self._runtime.discard_warm(entry.container.wid)
            self._images.unmount_rootfs(entry.rootfs_dir)
            shutil.rmtree(entry.rootfs_dir, ignore_errors=True)
        finally:
            if entry.slot is not None:
                self._network.release(entry.slot)
                entry.slot = None

    # ---- filling ----------------------------------------------------------------------

    def _fill_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                short = [img for d, img in reversed(self._wanted.items())
                         if len(self._ready.get(d, [])) < self.size]
            if not short:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            quiet = self._last_take + REFILL_QUIET - time.monotonic()
            if quiet > 0:
                self._stop.wait(quiet)
                continue
            image = short[0]
            try:
                entry = self._build(image)
            except Exception as exc:  # keep the agent alive; _build leaves nothing behind
                self.errors.append(exc)
                log.warning("could not build a warm container of %s: %s", image.reference, exc)
                if isinstance(exc, ImageError):  # removed from the node, say: no longer kept warm
                    with self._lock:
                        self._wanted.pop(image.digest, None)
                self._stop.wait(1.0)
                continue
            if entry is None:  # no network slot ready yet: the network's own pool is refilling
                self._stop.wait(0.1)
                continue
            with self._lock:
                if image.digest in self._wanted and not self._stop.is_set():
                    self._ready.setdefault(image.digest, []).append(entry)
                    entry = None
            if entry is not None:
                self.discard(entry)

    def _build(self, image: Image) -> WarmEntry | None:
        reserved = self._network.reserve()
        if reserved is None:
            return None
        slot, sandbox = reserved
        wid = warm.PREFIX + secrets.token_hex(6)
        rootfs_dir = self.root / wid
        try:
            rootfs = self._images.mount_rootfs(image, rootfs_dir)
            spec = self._spec_for(image, sandbox, rootfs, f"{self._cgroup_parent}/warm/{wid}")
            container = self._runtime.start_warm(wid, spec)
        except BaseException:
            self._images.unmount_rootfs(rootfs_dir)
            shutil.rmtree(rootfs_dir, ignore_errors=True)
            self._network.release(slot)
            raise
        return WarmEntry(image, slot, sandbox, container, rootfs_dir)
