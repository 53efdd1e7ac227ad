"""Elements added to nftables sets over netlink, in the calling thread's network namespace.

The hot path (a sandbox's ADD) only adds set elements: one batch on a raw NETLINK_NETFILTER socket takes
~20 us, where running ``nft`` would cost milliseconds. Tables, chains and rules are written with ``nft -f``
where nothing is in a hurry (``guard.rebuild``). Nothing here deletes an element: a deletion makes the
kernel wait for an RCU grace period (~16 ms), so the guard is built not to need one.

A key is the element's bytes as the kernel compares them: the fields of a concatenation each padded to a
multiple of 4 bytes (``iface_index`` 4 in host order, ``ether`` 6+2, ``ipv4`` 4).
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct

from corral.errors import NetworkError

NETLINK_NETFILTER = 12
NFPROTO_BRIDGE = 7
_SUBSYS = 10  # NFNL_SUBSYS_NFTABLES
_BATCH_BEGIN, _BATCH_END = 0x10, 0x11
_NEWSETELEM = 12
_REQUEST, _ACK, _CREATE = 0x1, 0x4, 0x400
_NLMSG_ERROR = 2
_NESTED = 0x8000
# NFTA_SET_ELEM_LIST_{TABLE,SET,ELEMENTS}, NFTA_LIST_ELEM, NFTA_SET_ELEM_KEY, NFTA_DATA_VALUE
_TABLE, _SET, _ELEMENTS, _LIST_ELEM, _KEY, _VALUE = 1, 2, 3, 1, 1, 1
_seq = itertools.count((os.getpid() & 0xFFFF) << 15)


def iface_index(index: int) -> bytes:
    return struct.pack("=I", index)


def ether(mac: str) -> bytes:
    return bytes.fromhex(mac.replace(":", "")) + b"\0\0"


def ipv4(addr: str) -> bytes:
    return socket.inet_aton(addr)


def _attr(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n % 4)


def _msg(kind: int, flags: int, seq: int, family: int, res_id: int, body: bytes = b"") -> bytes:
    head = struct.pack("=BBH", family, 0, socket.htons(res_id))
    return struct.pack("=IHHII", 16 + len(head) + len(body), kind, flags, seq, 0) + head + body


def add(table: str, elements: dict[str, list[bytes]], family: int = NFPROTO_BRIDGE) -> None:
    """Add ``elements`` (set name -> keys) in one transaction; an element already there is fine."""
    sets = [(name, keys) for name, keys in elements.items() if keys]
    if not sets:
        return
    first = next(_seq) & 0x7FFFFFFF
    parts = [_msg(_BATCH_BEGIN, _REQUEST, first, 0, _SUBSYS)]
    for i, (name, keys) in enumerate(sets, 1):
        items = b"".join(_attr(_LIST_ELEM | _NESTED, _attr(_KEY | _NESTED, _attr(_VALUE, k))) for k in keys)
        body = _attr(_TABLE, table.encode() + b"\0") + _attr(_SET, name.encode() + b"\0") + \
            _attr(_ELEMENTS | _NESTED, items)
        parts.append(_msg((_SUBSYS << 8) | _NEWSETELEM, _REQUEST | _ACK | _CREATE, first + i, family, 0, body))
    parts.append(_msg(_BATCH_END, _REQUEST, first + len(sets) + 1, 0, _SUBSYS))
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as s:
        s.settimeout(5.0)
        s.bind((0, 0))
        s.send(b"".join(parts))
        codes: list[int] = []
        while len(codes) < len(sets) and not any(codes):
            try:
                data = s.recv(65536)
            except TimeoutError:
                raise NetworkError(f"nftables: no answer changing set elements of table {table}",
                                   target=table) from None
            off = 0
            while off + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, off)
                if kind == _NLMSG_ERROR:
                    codes.append(-struct.unpack_from("=i", data, off + 16)[0])
                off += max(16, (length + 3) & ~3)
    bad = next((c for c in codes if c), 0)
    if bad == errno.ENOENT:
        raise FileNotFoundError(bad, f"nftables set of table {table} not found")
    if bad:
        raise NetworkError(f"nftables: changing set elements of table {table} failed: {os.strerror(bad)}",
                           target=table)
