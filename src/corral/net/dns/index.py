"""The names the DNS server answers, kept in memory and fed from store records and watch events.

Two kinds of names, both under the zone:
- ``<dnsNameLabel>.<location>.<zone>``: a group's public address (Public groups with a label);
- ``<group>.<resource group>.<zone>``: a group's virtual-network address (service discovery);
- ``<ngroup>.<resource group>.<zone>``: the addresses of an NGroup's members in service (ready, not
  draining), as the orchestrator last reported them.
All have the same shape, so a name may match several; the answer holds every match.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

GROUPS = "/groups/"
STATUS = "/status/"
NODES = "/nodes/"
NGROUPS = "/ngroups/"


@dataclass(frozen=True)
class _Group:
    uid: str
    name: str
    rg: str
    location: str
    label: str | None
    public: bool
    node: str | None


class DnsIndex:
    def __init__(self, zone: str) -> None:
        self.zone = zone.strip(".").lower()
        self._lock = threading.Lock()
        self._groups: dict[str, _Group] = {}
        self._status: dict[str, tuple[str | None, str | None]] = {}  # uid -> (ip, privateIp)
        self._nodes: dict[str, str] = {}  # node -> address
        self._by_label: dict[tuple[str, str], set[str]] = {}
        self._by_name: dict[tuple[str, str], set[str]] = {}
        self._ngroups: dict[str, tuple[tuple[str, str], list[str]]] = {}  # key -> ((name, rg), member addresses)

    # feeding ---------------------------------------------------------------
    def apply(self, key: str, value: dict[str, Any] | None) -> None:
        """A put (value) or delete (None) of a store key; keys of other kinds are ignored."""
        with self._lock:
            if key.startswith(GROUPS):
                self._drop_group(key)
                if value is not None:
                    self._add_group(key, value)
            elif key.startswith(STATUS):
                uid = key[len(STATUS):]
                if value is None:
                    self._status.pop(uid, None)
                else:
                    self._status[uid] = (value.get("ip"), value.get("privateIp"))
            elif key.startswith(NGROUPS):
                self._ngroups.pop(key, None)
                if value is not None:
                    meta, status = value.get("meta") or {}, value.get("status") or {}
                    ips = [m["ip"] for m in status.get("members") or [] if m.get("inService") and m.get("ip")]
                    if not meta.get("deleting"):
                        name = (str(meta.get("name", "")).lower(), str(meta.get("resourceGroup", "")).lower())
                        self._ngroups[key] = (name, ips)
            elif key.startswith(NODES):
                name = key[len(NODES):]
                if value is None or not value.get("address"):
                    self._nodes.pop(name, None)
                else:
                    self._nodes[name] = value["address"]

    def reset(self) -> None:
        with self._lock:
            for d in (self._groups, self._status, self._nodes, self._by_label, self._by_name, self._ngroups):
                d.clear()

    def _add_group(self, key: str, value: dict[str, Any]) -> None:
        meta, spec = value.get("meta") or {}, value.get("spec") or {}
        if meta.get("deleting"):
            return  # a group being deleted stops resolving at once
        ip = (spec.get("properties") or {}).get("ipAddress") or {}
        g = _Group(uid=meta.get("uid", ""), name=str(meta.get("name", "")).lower(),
                   rg=str(meta.get("resourceGroup", "")).lower(), location=str(spec.get("location") or "").lower(),
                   label=str(ip["dnsNameLabel"]).lower() if ip.get("dnsNameLabel") else None,
                   public=ip.get("type", "Public") == "Public" and bool(ip), node=meta.get("node"))
        self._groups[key] = g
        if g.label:
            self._by_label.setdefault((g.label, g.location), set()).add(key)
        self._by_name.setdefault((g.name, g.rg), set()).add(key)

    def _drop_group(self, key: str) -> None:
        g = self._groups.pop(key, None)
        if g is None:
            return
        for idx, k in ((self._by_label, (g.label or "", g.location)), (self._by_name, (g.name, g.rg))):
            keys = idx.get(k)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del idx[k]

    # answering -------------------------------------------------------------
    def in_zone(self, qname: str) -> bool:
        q = qname.rstrip(".").lower()
        return q == self.zone or q.endswith("." + self.zone)

    def lookup(self, qname: str) -> list[str]:
        """IPv4 addresses of a name in the zone (empty: no such name)."""
        q = qname.rstrip(".").lower()
        if not q.endswith("." + self.zone):
            return []
        parts = q[: -len(self.zone) - 1].split(".")
        if len(parts) != 2:
            return []
        a, b = parts
        out: list[str] = []
        with self._lock:
            for key in sorted(self._by_label.get((a, b), ())):
                addr = self._public_address(self._groups[key])
                if addr:
                    out.append(addr)
            for key in sorted(self._by_name.get((a, b), ())):
                addr = self._private_address(self._groups[key])
                if addr:
                    out.append(addr)
            for name, ips in self._ngroups.values():
                if name == (a, b):
                    out.extend(ips)
        return list(dict.fromkeys(out))

    def _public_address(self, g: _Group) -> str | None:
        ip, private = self._status.get(g.uid, (None, None))
        if not g.public:
            return private or ip  # a label on a private group: its vnet address
        return ip or (self._nodes.get(g.node) if g.node else None)

    def _private_address(self, g: _Group) -> str | None:
        ip, private = self._status.get(g.uid, (None, None))
        return private or (None if g.public else ip)
