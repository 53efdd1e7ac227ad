"""Corral's DNS server against a real store: answers follow group writes through the watch."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from corral.link.local import LocalLink
from corral.model.records import NODES, status_key
from corral.net.dns.server import DnsServer
from corral.store.sqlite import SqliteStore

ZONE = "corral.test"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "store.db")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def dns(store: SqliteStore) -> Iterator[DnsServer]:
    server = DnsServer(LocalLink(store), ZONE, "127.0.0.1:0")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def ask(dns: DnsServer, name: str, qtype: str = "A", tcp: bool = False) -> DNSRecord:
    host, port = dns.address
    raw = DNSRecord.question(name, qtype).send(host, port, tcp=tcp, timeout=2)
    return DNSRecord.parse(raw)


def addrs(reply: DNSRecord) -> list[str]:
    return sorted(str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A)


def eventually(fn: Callable[[], Any], want: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got == want:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"got {got!r}, want {want!r}")
        time.sleep(0.05)


def put_group(store: SqliteStore, rg: str, name: str, uid: str, ip_type: str = "Public", label: str | None = None,
              node: str = "n1", deleting: bool = False) -> None:
    ip: dict[str, Any] = {"type": ip_type, "ports": []}
    if label:
        ip["dnsNameLabel"] = label
    store.put(f"/groups/sub/{rg}/{name}", {
        "spec": {"location": "westus", "properties": {"containers": [], "ipAddress": ip}},
        "meta": {"uid": uid, "subscription": "sub", "resourceGroup": rg, "name": name, "node": node,
                 "deleting": deleting},
    })


def test_label_and_service_names(store: SqliteStore, dns: DnsServer) -> None:
    store.put(NODES + "n1", {"name": "n1", "address": "192.0.2.10"})
    put_group(store, "shop", "web", "u1", label="myweb")
    store.put(status_key("u1"), {"uid": "u1", "node": "n1", "ip": "192.0.2.10", "privateIp": "10.240.0.5"})
    put_group(store, "shop", "db", "u2", ip_type="Private")
    store.put(status_key("u2"), {"uid": "u2", "node": "n1", "ip": "10.240.0.6", "privateIp": "10.240.0.6"})

    eventually(lambda: addrs(ask(dns, f"myweb.westus.{ZONE}")), ["192.0.2.10"])
    assert addrs(ask(dns, f"WEB.Shop.{ZONE}.")) == ["10.240.0.5"]  # case-insensitive
    assert addrs(ask(dns, f"db.shop.{ZONE}")) == ["10.240.0.6"]
    assert addrs(ask(dns, f"db.shop.{ZONE}", tcp=True)) == ["10.240.0.6"]
    reply = ask(dns, f"db.shop.{ZONE}", "AAAA")  # the name exists, no IPv6: NOERROR, no answer
    assert reply.header.rcode == RCODE.NOERROR and not reply.rr

    unknown = ask(dns, f"nope.shop.{ZONE}")
    assert unknown.header.rcode == RCODE.NXDOMAIN and not unknown.rr
    assert any(rr.rtype == QTYPE.SOA for rr in unknown.auth)
    assert ask(dns, f"a.b.c.{ZONE}").header.rcode == RCODE.NXDOMAIN
    # outside the zone: refused, never forwarded
    assert ask(dns, "example.com").header.rcode == RCODE.REFUSED


def test_answers_follow_creates_and_deletes(store: SqliteStore, dns: DnsServer) -> None:
    name = f"api.prod.{ZONE}"
    assert ask(dns, name).header.rcode == RCODE.NXDOMAIN
    put_group(store, "prod", "api", "u9", ip_type="Private")
    store.put(status_key("u9"), {"uid": "u9", "node": "n1", "ip": "10.1.0.9", "privateIp": "10.1.0.9"})
    eventually(lambda: addrs(ask(dns, name)), ["10.1.0.9"])
    store.put(status_key("u9"), {"uid": "u9", "node": "n1", "ip": "10.1.0.10", "privateIp": "10.1.0.10"})
    eventually(lambda: addrs(ask(dns, name)), ["10.1.0.10"])
    put_group(store, "prod", "api", "u9", ip_type="Private", deleting=True)  # delete requested: gone at once
    eventually(lambda: ask(dns, name).header.rcode, RCODE.NXDOMAIN)
    put_group(store, "prod", "api", "u9", ip_type="Private")
    eventually(lambda: addrs(ask(dns, name)), ["10.1.0.10"])
    store.delete("/groups/sub/prod/api")
    eventually(lambda: ask(dns, name).header.rcode, RCODE.NXDOMAIN)


def test_public_label_falls_back_to_node_address(store: SqliteStore, dns: DnsServer) -> None:
    store.put(NODES + "n2", {"name": "n2", "address": "192.0.2.20"})
    put_group(store, "rg", "g", "u3", label="early", node="n2")  # no status reported yet
    eventually(lambda: addrs(ask(dns, f"early.westus.{ZONE}")), ["192.0.2.20"])


def test_dig_queries(store: SqliteStore, dns: DnsServer) -> None:
    put_group(store, "rg", "svc", "u4", ip_type="Private")
    store.put(status_key("u4"), {"uid": "u4", "node": "n1", "ip": "10.2.0.4", "privateIp": "10.2.0.4"})
    host, port = dns.address
    dig = ["dig", f"@{host}", "-p", str(port), "+short", "+tries=1", "+time=2"]
    eventually(lambda: subprocess.run([*dig, f"svc.rg.{ZONE}"], capture_output=True, text=True).stdout.strip(),
               "10.2.0.4")
    out = subprocess.run(["dig", f"@{host}", "-p", str(port), "+tries=1", "+time=2", f"missing.rg.{ZONE}"],
                         capture_output=True, text=True).stdout
    assert "status: NXDOMAIN" in out


def test_restart_sees_existing_records(store: SqliteStore) -> None:
    put_group(store, "rg", "old", "u5", ip_type="Private")
    store.put(status_key("u5"), {"uid": "u5", "node": "n1", "ip": "10.3.0.5", "privateIp": "10.3.0.5"})
    server = DnsServer(LocalLink(store), ZONE, "127.0.0.1:0")
    server.start()
    try:
        assert addrs(ask(server, f"old.rg.{ZONE}")) == ["10.3.0.5"]
    finally:
        server.stop()
