"""Free addresses per (node, subnet): each node serves a subnet from its own address block.

A node's block in a subnet is granted by ``control/nodeblocks.py`` (the first
time the node needs one); its size is the subnet's prefix or the cluster's
block size, whichever is smaller, and the node hands out at most
``max_groups_per_node`` sandboxes from it. A node without a block yet has room
if the subnet can still grant one; placing a group there reserves that block
until the real grant is seen.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import numpy as np

from corral.scheduler.nodes import Mask, NodeArrays

RESERVED_ADDRESSES = 3  # network, gateway, broadcast: as the corral-vnet IPAM counts them


def usable(block_prefixlen: int, max_groups_per_node: int) -> int:
    return max(1, min(max_groups_per_node, 2 ** (32 - block_prefixlen) - RESERVED_ADDRESSES))


@dataclass
class Subnet:
    key: str
    total_blocks: int
    new_block_capacity: int
    granted: dict[str, int] = field(default_factory=dict)  # node -> capacity of its block
    reserved: set[int] = field(default_factory=set)  # nodes placed on before their block was granted
    cap: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # 0: no block
    used: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    version: int = 0  # bumped when grants or reservations change
    _free: tuple[int, int, int] = (-1, -1, 0)  # (node generation, version, free blocks)

    def fit(self, size: int) -> None:
        if len(self.cap) < size:
            for name in ("cap", "used"):
                old = getattr(self, name)
                arr = np.zeros(size, dtype=np.int64)
                arr[: len(old)] = old
                setattr(self, name, arr)


class SubnetTable:
    def __init__(self, nodes: NodeArrays, block_prefixlen: int = 24, max_groups_per_node: int = 250) -> None:
        self.nodes = nodes
        self.block_prefixlen = block_prefixlen
        self.max_groups_per_node = max_groups_per_node
        self.subnets: dict[str, Subnet] = {}
        # Groups bound per (subnet, node) before the subnet was known (the binder reads subnets first,
        # but a subnet can also be deleted and re-created under live groups).
        self._pending: dict[str, dict[int, int]] = {}

    def _subnet(self, key: str) -> Subnet | None:
        sn = self.subnets.get(key)
        if sn is not None:
            sn.fit(self.nodes.size)
        return sn

    def define(self, key: str, prefix: str) -> None:
        """A subnet exists with this prefix (a vnet record was written)."""
        net = ipaddress.ip_network(prefix, strict=False)
        size = max(net.prefixlen, self.block_prefixlen)
        old = self.subnets.get(key)
        sn = Subnet(key=key, total_blocks=2 ** (size - net.prefixlen),
                    new_block_capacity=usable(size, self.max_groups_per_node))
        sn.fit(self.nodes.size)
        if old is not None:
            old.fit(self.nodes.size)
            sn.used[:] = old.used[: len(sn.used)]
            sn.granted, sn.reserved = old.granted, old.reserved
            sn.cap[:] = old.cap[: len(sn.cap)]
        for idx, n in self._pending.pop(key, {}).items():
            sn.used[idx] += n
        self.subnets[key] = sn

    def undefine(self, key: str) -> None:
        sn = self.subnets.pop(key, None)
        if sn is not None:
            self._pending[key] = {int(i): int(u) for i, u in enumerate(sn.used) if u}

    def set_grants(self, key: str, grants: dict[str, str]) -> bool:
        """The blocks granted in the subnet (node -> CIDR); whether room appeared (a block was returned)."""
        sn = self._subnet(key)
        if sn is None:
            return False
        caps = {node: usable(ipaddress.ip_network(b).prefixlen, self.max_groups_per_node)
                for node, b in grants.items()}
        returned = bool(set(sn.granted) - set(caps))
        for node in set(sn.granted) | set(caps):
            i = self.nodes.index.get(node)
            if i is None:
                continue
            sn.cap[i] = caps.get(node, sn.new_block_capacity if i in sn.reserved else 0)
        sn.granted = caps
        sn.reserved = {i for i in sn.reserved if self.nodes.names[i] not in caps}
        sn.version += 1
        return returned

    def node_added(self, idx: int) -> None:
        """A node registered: the blocks it already holds count again."""
        name = self.nodes.names[idx]
        for sn in self.subnets.values():
            sn.fit(self.nodes.size)
            if name in sn.granted:
                sn.cap[idx] = sn.granted[name]

    def free_blocks(self, sn: Subnet) -> int:
        gen, version, free = sn._free
        if (gen, version) != (self.nodes.generation, sn.version):
            present = self.nodes.present
            # Blocks of nodes no longer registered are reclaimed by the next grant (nodeblocks.py).
            held = sum(1 for node in sn.granted if (i := self.nodes.index.get(node)) is not None and present[i])
            free = sn.total_blocks - held - len(sn.reserved)
            sn._free = (self.nodes.generation, sn.version, free)
        return free

    # accounting ------------------------------------------------------------
    def add(self, key: str, idx: int, delta: int) -> None:
        sn = self._subnet(key)
        if sn is None:
            pending = self._pending.setdefault(key, {})
            pending[idx] = pending.get(idx, 0) + delta
            return
        sn.used[idx] += delta
        if delta > 0 and sn.cap[idx] == 0:
            sn.reserved.add(idx)  # the node will be granted a block for it
            sn.cap[idx] = sn.new_block_capacity
            sn.version += 1
        elif delta < 0 and sn.used[idx] <= 0 and idx in sn.reserved:
            sn.reserved.discard(idx)
            sn.cap[idx] = 0
            sn.version += 1

    # the filter --------------------------------------------------------------
    def room(self, key: str) -> Mask | None:
        """Nodes with a free address for one more group in the subnet (None: the subnet is not known)."""
        sn = self._subnet(key)
        if sn is None:
            return None
        n = self.nodes.n
        cap, used = sn.cap[:n], sn.used[:n]
        if self.free_blocks(sn) > 0:
            return (cap == 0) | (used < cap)
        return used < cap
