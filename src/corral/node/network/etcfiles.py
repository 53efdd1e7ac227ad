"""The /etc files a sandbox's containers get bind-mounted: resolv.conf, hosts, hostname."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, Field

from corral.fileio import write_in_place


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


def default_nameservers() -> list[str]:
    """Nameservers for sandboxes when none are given: the host's, else a public resolver."""
    return host_nameservers() or ["1.1.1.1"]


def resolv_conf(dns: DnsSettings) -> str:
    lines = [f"nameserver {ns}" for ns in dns.nameservers]
    if dns.search:
        lines.append("search " + " ".join(dns.search))
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "\n".join(lines) + "\n"


def hosts(ip: str, hostname: str, aliases: list[tuple[str, list[str]]] | None = None) -> str:
    extra = "".join(f"{a_ip}\t{' '.join(names)}\n" for a_ip, names in aliases or [])
    return (
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        f"{ip}\t{hostname}\n"
    ) + ("# hostAliases\n" + extra if extra else "")


def write_hosts(path: Path, ip: str, hostname: str, aliases: list[tuple[str, list[str]]]) -> None:
    """Rewrite a sandbox's hosts file in place (not by rename: containers bind-mount this very inode)."""
    text = hosts(ip, hostname, aliases)
    try:
        if path.read_text() == text:
            return
    except OSError:
        pass
    with open(path, "w") as f:
        f.write(text)


def write_all(directory: Path, ip: str, hostname: str, dns: DnsSettings) -> tuple[Path, Path, Path]:
    """Write (resolv.conf, hosts, hostname) under ``directory``; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    r, h, n = directory / "resolv.conf", directory / "hosts", directory / "hostname"
    # Written in place, no temp file, no fsync: no container reads them before the sandbox's
    # record says it is finished, which is saved after them (a crash before that undoes the
    # sandbox; a sandbox whose files a machine crash lost is rebuilt, not reused).
    write_in_place(r, resolv_conf(dns))
    write_in_place(h, hosts(ip, hostname))
    write_in_place(n, hostname + "\n")
    return r, h, n
