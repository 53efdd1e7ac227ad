"""The /etc files a sandbox's containers get bind-mounted: resolv.conf, hosts, hostname."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from pydantic import BaseModel, Field


class DnsSettings(BaseModel):
    """What goes into a sandbox's resolv.conf (ACI's dnsConfig)."""

    nameservers: list[str] = Field(default_factory=list)
    search: list[str] = Field(default_factory=list)
    options: list[str] = Field(default_factory=list)


def host_nameservers(path: Path = Path("/etc/resolv.conf")) -> list[str]:
    """The host's non-loopback resolvers: a loopback stub is unreachable from a sandbox."""
    out: list[str] = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                if not ipaddress.ip_address(parts[1]).is_loopback:
                    out.append(parts[1])
            except ValueError:
                continue
    return out


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def resolv_conf(dns: DnsSettings) -> str:
    lines = [f"nameserver {ns}" for ns in dns.nameservers]
    if dns.search:
        lines.append("search " + " ".join(dns.search))
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "\n".join(lines) + "\n"


def hosts(ip: str, hostname: str) -> str:
    return (
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        f"{ip}\t{hostname}\n"
    )


def write_all(directory: Path, ip: str, hostname: str, dns: DnsSettings) -> tuple[Path, Path, Path]:
    """Write (resolv.conf, hosts, hostname) under ``directory``; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    r, h, n = directory / "resolv.conf", directory / "hosts", directory / "hostname"
    write_atomic(r, resolv_conf(dns))
    write_atomic(h, hosts(ip, hostname))
    write_atomic(n, hostname + "\n")
    return r, h, n
