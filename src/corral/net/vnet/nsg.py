"""Network security rules (an NSG-like model) and their translation to iptables rules."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SecurityRule(BaseModel):
    """One allow/deny rule. Lower priority numbers win; the first matching rule decides."""

    model_config = ConfigDict(populate_by_name=True)

    name: str
    priority: int = Field(ge=100, le=4096)
    direction: Literal["Inbound", "Outbound"]
    access: Literal["Allow", "Deny"]
    protocol: Literal["Tcp", "Udp", "Icmp", "Esp", "Ah", "*"] = "*"
    source_prefix: str = Field("*", alias="sourceAddressPrefix")
    destination_prefix: str = Field("*", alias="destinationAddressPrefix")
    source_port_range: str = Field("*", alias="sourcePortRange")
    destination_port_range: str = Field("*", alias="destinationPortRange")

    @field_validator("source_prefix", "destination_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if v in ("*", "Any", "Internet", ""):
            return "*"
        return str(ipaddress.ip_network(v, strict=False))

    @field_validator("source_port_range", "destination_port_range")
    @classmethod
    def _ports(cls, v: str) -> str:
        if v in ("*", ""):
            return "*"
        lo, _, hi = v.partition("-")
        a, b = int(lo), int(hi or lo)
        if not (0 < a <= b <= 65535):
            raise ValueError(f"bad port range {v!r}")
        return f"{a}-{b}" if a != b else str(a)


def rule_lines(chain: str, rules: list[SecurityRule], match: str = "") -> list[str]:
    """``-A`` lines (iptables-restore syntax) for ``rules`` in priority order."""
    out: list[str] = []
    for r in sorted(rules, key=lambda r: r.priority):
        target = "ACCEPT" if r.access == "Allow" else "DROP"
        base = f"-A {chain}{match}"
        if r.source_prefix != "*":
            base += f" -s {r.source_prefix}"
        if r.destination_prefix != "*":
            base += f" -d {r.destination_prefix}"
        comment = f' -m comment --comment "nsg {r.name}"'
        sports, dports = r.source_port_range, r.destination_port_range
        if r.protocol in ("Icmp", "Esp", "Ah"):  # no ports for these
            out.append(f"{base} -p {r.protocol.lower()}{comment} -j {target}")
        elif r.protocol in ("Tcp", "Udp") or sports != "*" or dports != "*":
            protos = [r.protocol.lower()] if r.protocol != "*" else ["tcp", "udp"]
            sport = f" --sport {sports.replace('-', ':')}" if sports != "*" else ""
            dport = f" --dport {dports.replace('-', ':')}" if dports != "*" else ""
            for proto in protos:
                out.append(f"{base} -p {proto} -m {proto}{sport}{dport}{comment} -j {target}")
        else:
            out.append(f"{base}{comment} -j {target}")
    return out
