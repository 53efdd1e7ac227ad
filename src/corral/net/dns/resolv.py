"""What a group's /etc/resolv.conf should hold: its dnsConfig, else Corral's DNS server and search domains."""

from __future__ import annotations

from corral.model.group import GroupProperties
from corral.node.network.etcfiles import DnsSettings


def dns_settings(props: GroupProperties, resource_group: str, zone: str, nameserver: str | None) -> DnsSettings:
    """ACI's dnsConfig wins when it names servers; otherwise Corral's server, searching the group's
    resource group first so ``<group>`` alone resolves to a sibling group."""
    cfg = props.dnsConfig
    search = cfg.searchDomains.split() if cfg and cfg.searchDomains else [f"{resource_group.lower()}.{zone}"]
    options = cfg.options.split() if cfg and cfg.options else []
    servers = list(cfg.nameServers) if cfg and cfg.nameServers else ([nameserver] if nameserver else [])
    return DnsSettings(nameservers=servers, search=search, options=options)
