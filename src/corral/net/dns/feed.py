"""What feeds a DNS server: the records its names come from, as a snapshot then changes.

Every node serves DNS, and a node must not read the store (nor see other groups' secrets):
the control plane projects each group, status and node record down to the few fields a
name needs (``dns_view``) and hands them out through the link (``DnsFeed``), in process for
`corral up` and over HTTPS for remote agents.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from pydantic import BaseModel, Field

from corral.net.dns.index import GROUPS, NGROUPS, NODES, STATUS
from corral.store.base import Compacted, Store

DNS_PREFIXES = (GROUPS, STATUS, NODES, NGROUPS)


class DnsEntry(BaseModel):
    key: str
    value: dict[str, Any] | None = None  # None: the record is gone


class DnsUpdate(BaseModel):
    revision: int
    reset: bool = False  # True: ``entries`` is the whole picture (a snapshot), drop what you had
    entries: list[DnsEntry] = Field(default_factory=list)


class DnsFeed(Protocol):
    def dns_changes(self, after: int, timeout: float) -> DnsUpdate:
        """Changes since revision ``after`` (blocking up to ``timeout`` for the first); a snapshot
        (``reset``) when ``after`` is 0 or older than the history kept."""
        ...


def dns_view(key: str, value: dict[str, Any] | None) -> dict[str, Any] | None:
    """The part of a record the DNS index reads (``DnsIndex.apply`` takes either form)."""
    if value is None:
        return None
    if key.startswith(GROUPS):
        meta, spec = value.get("meta") or {}, value.get("spec") or {}
        props = spec.get("properties") or {}
        out: dict[str, Any] = {
            "meta": {k: meta.get(k) for k in ("uid", "name", "resourceGroup", "node", "deleting")},
            "spec": {"location": spec.get("location"), "properties": {}},
        }
        ip = props.get("ipAddress")
        if ip:
            out["spec"]["properties"]["ipAddress"] = {"type": ip.get("type", "Public"),
                                                      "dnsNameLabel": ip.get("dnsNameLabel")}
        return out
    if key.startswith(STATUS):
        return {"ip": value.get("ip"), "privateIp": value.get("privateIp")}
    if key.startswith(NODES):
        return {"address": value.get("address")}
    if key.startswith(NGROUPS):  # an NGroup's name answers with its members in service
        meta, status = value.get("meta") or {}, value.get("status") or {}
        return {"meta": {k: meta.get(k) for k in ("name", "resourceGroup", "deleting")},
                "status": {"members": [{"ip": m.get("ip"), "inService": m.get("inService")}
                                       for m in status.get("members") or []]}}
    return None


def store_changes(store: Store, after: int, timeout: float) -> DnsUpdate:
    """``DnsFeed.dns_changes`` answered from the store (the control plane's side of the feed)."""
    if after > 0:
        deadline = time.monotonic() + timeout
        try:
            while True:
                events = store.watch("/", after, max(0.0, deadline - time.monotonic()))
                if not events:
                    return DnsUpdate(revision=after)
                after = events[-1].revision
                entries = [DnsEntry(key=e.key, value=dns_view(e.key, e.value))
                           for e in events if e.key.startswith(DNS_PREFIXES)]
                if entries or time.monotonic() >= deadline:
                    return DnsUpdate(revision=after, entries=entries)
        except Compacted:
            pass
    rev = store.revision()
    entries = [DnsEntry(key=r.key, value=dns_view(r.key, r.value)) for p in DNS_PREFIXES for r in store.list(p)]
    return DnsUpdate(revision=rev, reset=True, entries=entries)
