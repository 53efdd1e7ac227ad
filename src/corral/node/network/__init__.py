"""Node networking: network sandboxes for container groups (CNI)."""

from corral.node.network.etcfiles import DnsSettings
from corral.node.network.records import PortMapping, Sandbox
from corral.node.network.sandbox import NetworkConfig, NetworkManager

__all__ = ["DnsSettings", "NetworkConfig", "NetworkManager", "PortMapping", "Sandbox"]
