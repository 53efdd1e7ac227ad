"""What the node host needs of its network, whichever backend provides it.

Two backends: ``NetworkSet`` (virtual networks through corral-vnet, the default)
and ``NetworkManager`` (one plain CNI bridge network).
"""

from __future__ import annotations

import builtins
from typing import Protocol

from corral.net.vnet.nsg import SecurityRule
from corral.node.network.etcfiles import DnsSettings
from corral.node.network.records import PortMapping, Sandbox


class NodeNetwork(Protocol):
    def create(self, sandbox_id: str, hostname: str, port_mappings: builtins.list[PortMapping] | None = None,
               dns: DnsSettings | None = None, subnet_id: str | None = None) -> Sandbox: ...

    def get(self, sandbox_id: str) -> Sandbox | None: ...

    def list(self) -> builtins.list[Sandbox]: ...

    def delete(self, sandbox_id: str) -> None: ...

    def recover(self) -> object: ...

    def teardown(self) -> None: ...

    def set_group_rules(self, sandbox_id: str, rules: builtins.list[SecurityRule]) -> None:
        """One sandbox's own security rules, live; NetworkFeatureUnsupported where the mode has none."""
        ...

    def gateway_for(self, subnet_id: str | None) -> str | None:
        """The node's address on the network of ``subnet_id``, where Corral's DNS answers (None: nowhere)."""
        ...

    def gateways(self) -> dict[str, str]:
        """Network name -> the node's gateway address on it, for every network on the node."""
        ...

    def refresh(self) -> None:
        """Re-read the networks' configuration (peers, rules) and apply changes live."""
        ...

    def stop(self) -> None:
        """Stop background work (standby pools); sandboxes stay."""
        ...
