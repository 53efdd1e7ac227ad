"""The node-state arrays: one NumPy slot per node for everything a filter or score reads.

Nodes keep their slot for as long as this object lives (a removed node is
marked absent), so an index names the same node across deltas. Capacities and
allocations are updated in place as groups are bound and released; attributes
that only change when a node re-registers (health, zone, labels, osType) bump
``generation``, which is what cached masks are checked against.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from corral.model.records import NodeInfo

Mask = np.ndarray  # bool[n]


class NodeArrays:
    # *_free, slots (groups it may still take) and util (allocated share of CPU + of memory) are
    # derived from the others, kept alongside so the filters and scores are one array operation each.
    _FLOAT = ("cpu_cap", "mem_cap", "cpu_used", "mem_used", "cpu_free", "mem_free", "inv_cpu", "inv_mem", "util")
    _INT = ("count", "max_groups", "slots", "zone")
    _BOOL = ("present", "ready", "cordoned", "linux")

    def __init__(self, capacity: int = 64) -> None:
        self.n = 0
        self.size = capacity
        self.names: list[str] = []
        self.index: dict[str, int] = {}
        self.labels: list[dict[str, str]] = []
        self.zone_names: list[str] = []
        self.zone_index: dict[str, int] = {}
        for f in self._FLOAT:
            setattr(self, f, np.zeros(capacity))
        for f in self._INT:
            setattr(self, f, np.zeros(capacity, dtype=np.int64))
        for f in self._BOOL:
            setattr(self, f, np.zeros(capacity, dtype=bool))
        self.gpu_cap: dict[str, np.ndarray] = {}
        self.gpu_used: dict[str, np.ndarray] = {}
        self.ports: dict[tuple[int, str], np.ndarray] = {}  # host port -> groups holding it, per node
        self.generation = 0
        self._memo: dict[object, tuple[int, Any]] = {}
        self.cpu_cap: np.ndarray
        self.mem_cap: np.ndarray
        self.cpu_used: np.ndarray
        self.mem_used: np.ndarray
        self.cpu_free: np.ndarray
        self.mem_free: np.ndarray
        self.inv_cpu: np.ndarray
        self.inv_mem: np.ndarray
        self.util: np.ndarray
        self.count: np.ndarray
        self.max_groups: np.ndarray
        self.slots: np.ndarray
        self.zone: np.ndarray  # index into zone_names, -1: none
        self.present: np.ndarray
        self.ready: np.ndarray
        self.cordoned: np.ndarray
        self.linux: np.ndarray

    # slots -----------------------------------------------------------------
    def _grow(self) -> None:
        new = self.size * 2
        for f in (*self._FLOAT, *self._INT, *self._BOOL):
            old = getattr(self, f)
            arr = np.zeros(new, dtype=old.dtype)
            arr[: self.size] = old
            setattr(self, f, arr)
        for table in (self.gpu_cap, self.gpu_used, self.ports):
            for k, old in table.items():
                arr = np.zeros(new, dtype=old.dtype)
                arr[: self.size] = old
                table[k] = arr
        self.size = new

    def _slot(self, name: str) -> int:
        idx = self.index.get(name)
        if idx is None:
            if self.n == self.size:
                self._grow()
            idx = self.n
            self.n += 1
            self.index[name] = idx
            self.names.append(name)
            self.labels.append({})
            self.zone[idx] = -1
        return idx

    def zone_id(self, zone: str | None) -> int:
        if zone is None:
            return -1
        zid = self.zone_index.get(zone)
        if zid is None:
            zid = self.zone_index[zone] = len(self.zone_names)
            self.zone_names.append(zone)
        return zid

    def gpu_table(self, sku: str, used: bool) -> np.ndarray:
        table = self.gpu_used if used else self.gpu_cap
        arr = table.get(sku)
        if arr is None:
            arr = table[sku] = np.zeros(self.size, dtype=np.int64)
        return arr

    def port_table(self, port: tuple[int, str]) -> np.ndarray:
        arr = self.ports.get(port)
        if arr is None:
            arr = self.ports[port] = np.zeros(self.size, dtype=np.int64)
        return arr

    # deltas ----------------------------------------------------------------
    def upsert(self, info: NodeInfo) -> tuple[int, bool]:
        """Record a node as it (re-)registered: (its index, whether it may now take groups it could not)."""
        new = info.name not in self.index or not self.present[self.index[info.name]]
        i = self._slot(info.name)
        zid = self.zone_id(info.zone)
        before = (bool(self.present[i]), bool(self.ready[i]), bool(self.cordoned[i]), bool(self.linux[i]),
                  int(self.zone[i]), self.labels[i])
        after = (True, info.ready, info.unschedulable, info.osType == "Linux", zid, info.labels)
        if before != after:
            self.present[i], self.ready[i], self.cordoned[i], self.linux[i], self.zone[i] = after[:5]
            self.labels[i] = dict(info.labels)
            self.generation += 1
        grew = new or (info.ready and not before[1]) or (before[2] and not info.unschedulable)
        grew |= before[4] != zid or before[5] != info.labels
        grew |= info.cpu > self.cpu_cap[i] or info.memoryGB > self.mem_cap[i] or info.maxGroups > self.max_groups[i]
        self.cpu_cap[i], self.mem_cap[i], self.max_groups[i] = info.cpu, info.memoryGB, info.maxGroups
        self.inv_cpu[i] = 1 / info.cpu if info.cpu > 0 else 0.0
        self.inv_mem[i] = 1 / info.memoryGB if info.memoryGB > 0 else 0.0
        self.allocate(i, 0.0, 0.0, 0)
        gpus = {k.upper(): v for k, v in info.gpus.items()}
        for sku in set(self.gpu_cap) | set(gpus):
            arr = self.gpu_table(sku, used=False)
            grew |= gpus.get(sku, 0) > arr[i]
            arr[i] = gpus.get(sku, 0)
        return i, bool(grew)

    def allocate(self, i: int, cpu: float, mem: float, groups: int) -> None:
        """Add (or, negative, return) an allocation on node ``i``."""
        self.cpu_used[i] += cpu
        self.mem_used[i] += mem
        self.count[i] += groups
        self.cpu_free[i] = self.cpu_cap[i] - self.cpu_used[i]
        self.mem_free[i] = self.mem_cap[i] - self.mem_used[i]
        self.slots[i] = self.max_groups[i] - self.count[i]
        self.util[i] = self.cpu_used[i] * self.inv_cpu[i] + self.mem_used[i] * self.inv_mem[i]

    def remove(self, name: str) -> int | None:
        i = self.index.get(name)
        if i is None or not self.present[i]:
            return None
        self.present[i] = False
        self.generation += 1
        return i

    # reads -----------------------------------------------------------------
    def memo(self, key: object, compute: Callable[[], Any]) -> Any:
        """``compute()`` cached until a node attribute changes (masks over health, zones, labels)."""
        hit = self._memo.get(key)
        if hit is not None and hit[0] == self.generation:
            return hit[1]
        value = compute()
        if len(self._memo) > 4096:
            self._memo.clear()
        self._memo[key] = (self.generation, value)
        return value

    def schedulable(self) -> Mask:
        return self.memo("schedulable", lambda: ~self.cordoned[: self.n])

    def label_mask(self, pairs: tuple[tuple[str, str], ...]) -> Mask:
        def compute() -> Mask:
            return np.fromiter((all(lb.get(k) == v for k, v in pairs) for lb in self.labels), dtype=bool,
                               count=self.n)
        return self.memo(("labels", pairs), compute)

    def zone_mask(self, zones: frozenset[str]) -> Mask:
        """Nodes in one of these zones."""
        return self.zone_ids_mask(tuple(sorted(self.zone_index[z] for z in zones if z in self.zone_index)))

    def zone_ids_mask(self, ids: tuple[int, ...]) -> Mask:
        return self.memo(("zone ids", ids), lambda: np.isin(self.zone[: self.n], ids))
