"""Corral's DNS server: name labels and service discovery, answered from the store."""

from corral.net.dns.index import DnsIndex
from corral.net.dns.server import DnsServer

__all__ = ["DnsIndex", "DnsServer"]
