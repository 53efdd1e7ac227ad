"""The network side of the control plane in one object: vnets, peerings, NSGs, route tables, node
blocks, group checks."""

from __future__ import annotations

from corral.config import DEFAULT_SUBSCRIPTION
from corral.control import netkeys as K
from corral.control.netgroups import GroupNetworkCheck
from corral.control.nodeblocks import NodeBlockService, node_rules
from corral.control.nsgs import NsgService
from corral.control.peerings import PeeringService, linked
from corral.control.routetables import RouteTableService
from corral.control.vnets import VnetService
from corral.model.group import ContainerGroup
from corral.model.network import NetworkSettings, NsgRecord
from corral.net.vnet.config import VnetConf
from corral.net.vnet.nsg import SecurityRule as NodeRule
from corral.store.base import Store


class NetworkControl:
    def __init__(self, store: Store, settings: NetworkSettings | None = None, location: str = "local",
                 default_subscription: str = DEFAULT_SUBSCRIPTION) -> None:
        self.store = store
        self.settings = settings or NetworkSettings()
        self.vnets = VnetService(store, self.settings, location, default_subscription)
        self.nsgs = NsgService(store, self.vnets, location)
        self.peerings = PeeringService(store, self.vnets)
        self.route_tables = RouteTableService(store, self.vnets, location)
        self.blocks = NodeBlockService(store, self.vnets)
        self._groups = GroupNetworkCheck(store, self.vnets)

    def start(self) -> None:
        self.vnets.ensure_default()

    def check_group(self, sub: str, rg: str, name: str, body: ContainerGroup) -> None:
        self._groups.check(sub, rg, name, body)

    def vnet_config_for(self, node: str, subnet_id: str | None = None) -> VnetConf:
        """The node's corral-vnet configuration for a subnet (None: the default network's subnet)."""
        return self.blocks.vnet_config_for(node, subnet_id or self.vnets.ensure_default())

    def group_rules(self, nsg_id: str, subnet_id: str | None = None) -> list[NodeRule]:
        """A group's own NSG in the plugin's form (``VirtualNetwork`` means its subnet's vnet).

        An NSG can only be deleted while no group names it, but a create racing the delete can
        still leave a group naming one that is gone: such a group gets deny-all rules, never none.
        """
        record, _ = self.blocks._subnet(subnet_id or self.vnets.ensure_default())
        try:
            rec = self.store.get(K.nsg_key(*K.parse_nsg_id(nsg_id)))
        except ValueError:
            rec = None
        if rec is None:
            return [NodeRule(name=f"security-group-gone-{d.lower()}", priority=100, direction=d, access="Deny")
                    for d in ("Inbound", "Outbound")]
        peered = [p for r in linked(self.store, record) for p in r.addressSpace.addressPrefixes]
        return node_rules(NsgRecord.model_validate(rec.value), record, peered)

    def release_node(self, node: str) -> int:
        return self.blocks.release_node(node)
