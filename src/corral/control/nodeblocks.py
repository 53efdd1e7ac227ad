"""Node address blocks and the per-node plugin configuration of a subnet.

Each node gets a block of a subnet's addresses (a /24 by default), the way Azure
gives a VM's NIC secondary IPs: the corral-vnet plugin on that node hands out
addresses from its block, and the other nodes route the block to that node.
All blocks of one virtual network live in one record (``/nodeblocks/<vnet uid>``)
so a grant is one compare-and-swap: no block is ever granted twice, a node
asking again gets the same block (stable across restarts), and blocks are
returned when a node is released.
"""

from __future__ import annotations

import ipaddress
import itertools

from corral.control import netkeys as K
from corral.control.peerings import back_peering, linked
from corral.control.routetables import appliance_routes, subnet_routes
from corral.control.vnets import VnetService
from corral.errors import Conflict, InvalidRequest, NetworkCapacityExceeded, VersionConflict
from corral.model.network import NodeBlocks, NsgRecord, SubnetRecord, VnetRecord
from corral.model.records import NODES
from corral.net.vnet.config import IpamConf, Peer, VnetConf
from corral.net.vnet.nsg import SecurityRule as NodeRule
from corral.store.base import ABSENT, Store


def _load(store: Store, vnet_uid: str) -> tuple[NodeBlocks, int]:
    rec = store.get(K.blocks_key(vnet_uid))
    if rec is None:
        return NodeBlocks(vnetUid=vnet_uid), ABSENT
    return NodeBlocks.model_validate(rec.value), rec.version


def _save(store: Store, blocks: NodeBlocks, version: int) -> None:
    store.put(K.blocks_key(blocks.vnetUid), blocks.model_dump(mode="json"), expect_version=version)


def drop_subnet(store: Store, vnet_uid: str, subnet: str) -> None:
    for _ in range(10):
        blocks, version = _load(store, vnet_uid)
        if subnet.lower() not in blocks.blocks:
            return
        del blocks.blocks[subnet.lower()]
        try:
            _save(store, blocks, version)
            return
        except VersionConflict:
            continue


class NodeBlockService:
    def __init__(self, store: Store, vnets: VnetService) -> None:
        self.store = store
        self.vnets = vnets

    def _subnet(self, subnet_id: str) -> tuple[VnetRecord, SubnetRecord]:
        try:
            ref = K.parse_subnet_id(subnet_id)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        record, sn, _ = self.vnets.get_subnet(*ref)
        return record, sn

    def block_for(self, node: str, subnet_id: str) -> str:
        """The block granted to ``node`` in the subnet, granting one if it has none."""
        record, sn = self._subnet(subnet_id)
        return self._grant(node, record, sn)

    def _grant(self, node: str, record: VnetRecord, sn: SubnetRecord) -> str:
        prefix = sn.properties.prefix
        size = max(prefix.prefixlen, self.vnets.settings.block_prefixlen)
        for _ in range(20):
            blocks, version = _load(self.store, record.meta.uid)
            # Subnets deleted (or re-created with another prefix) since: their grants are void.
            live = {k: v for k, v in blocks.blocks.items()
                    if k in record.subnets and all(ipaddress.ip_network(b).subnet_of(  # type: ignore[arg-type]
                        record.subnets[k].properties.prefix) for b in v.values())}
            mine = live.get(sn.name.lower(), {})
            if node in mine:
                if live != blocks.blocks:
                    blocks.blocks = live
                    try:
                        _save(self.store, blocks, version)
                    except VersionConflict:
                        continue
                return mine[node]
            taken = set(mine.values())
            free = next((str(b) for b in prefix.subnets(new_prefix=size) if str(b) not in taken), None)
            if free is None:
                # Reclaim the blocks of nodes that are gone (no longer registered).
                gone = [n for n in mine if self.store.get(NODES + n) is None]
                if not gone:
                    raise NetworkCapacityExceeded(
                        f"subnet '{sn.name}' ({prefix}) has no free /{size} block for node '{node}': every block is "
                        f"granted to another node ({len(mine)} nodes); use a larger subnet or a smaller block size")
                for n in gone:
                    mine.pop(n)
                free = next(str(b) for b in prefix.subnets(new_prefix=size) if str(b) not in set(mine.values()))
            mine[node] = free
            live[sn.name.lower()] = mine
            blocks.blocks = live
            try:
                _save(self.store, blocks, version)
            except VersionConflict:
                continue
            return free
        raise Conflict(f"the address blocks of virtual network '{record.meta.name}' are changing too often; retry")

    def release_node(self, node: str) -> int:
        """Return every block granted to ``node`` (the node left the cluster); the count returned."""
        released = 0
        for rec in self.store.list(K.NODE_BLOCKS):
            for _ in range(10):
                cur = self.store.get(rec.key)
                if cur is None:
                    break
                blocks = NodeBlocks.model_validate(cur.value)
                n = sum(1 for m in blocks.blocks.values() if node in m)
                if n == 0:
                    break
                for m in blocks.blocks.values():
                    m.pop(node, None)
                try:
                    _save(self.store, blocks, cur.version)
                except VersionConflict:
                    continue
                released += n
                break
        return released

    def blocks(self, subnet_id: str) -> dict[str, str]:
        """node -> block of a subnet (read only)."""
        record, sn = self._subnet(subnet_id)
        blocks, _ = _load(self.store, record.meta.uid)
        return dict(blocks.blocks.get(sn.name.lower(), {}))

    def vnet_config_for(self, node: str, subnet_id: str) -> VnetConf:
        """The corral-vnet configuration of ``node`` for the subnet: its block, the routes to the
        other nodes' blocks of the same virtual network, the networks it is peered with, the
        subnet's security rules and route table, and the appliance routes this node serves."""
        record, sn = self._subnet(subnet_id)
        block = self._grant(node, record, sn)
        spaces = record.addressSpace.addressPrefixes
        space = next(p for p in spaces if sn.properties.prefix.subnet_of(ipaddress.IPv4Network(p)))
        peers = self._remote_blocks(record, node)
        links = linked(self.store, record)
        peerings = [{"name": r.meta.name, "addressPrefixes": r.addressSpace.addressPrefixes,
                     "peers": [p.model_dump() for p in self._remote_blocks(r, node)],
                     "allowForwardedTraffic": _allows_forwarded(record, r)} for r in links]
        settings = self.vnets.settings
        usable = ipaddress.ip_network(block).num_addresses - 3  # network, gateway, broadcast
        nsg = self.vnets.nsg_of(record, sn)
        rules = node_rules(nsg, record, [p for r in links for p in r.addressSpace.addressPrefixes])
        return VnetConf.model_validate({
            "name": network_name(record, sn),
            "maxSandboxes": max(1, min(settings.max_groups_per_node, usable)),
            "ipam": IpamConf(subnet=space, addressPrefixes=spaces if len(spaces) > 1 else [], nodeBlock=block,
                             peers=peers).model_dump(by_alias=True),
            "securityRules": [r.model_dump(by_alias=True) for r in rules],
            "peerings": peerings,
            "routes": subnet_routes(self.store, sn),
            "applianceRoutes": appliance_routes(self.store, block),
        })

    def _remote_blocks(self, record: VnetRecord, node: str) -> list[Peer]:
        """The blocks of the virtual network granted to other nodes, each with the address of the node it
        is routed to."""
        blocks, _ = _load(self.store, record.meta.uid)
        nets = [ipaddress.IPv4Network(p) for p in record.addressSpace.addressPrefixes]
        peers: list[Peer] = []
        for other_node, other_block in sorted(
                (n, b) for m in blocks.blocks.values() for n, b in m.items() if n != node):
            addr = self._node_address(other_node)
            if addr is not None and any(ipaddress.IPv4Network(other_block).subnet_of(n) for n in nets):
                peers.append(Peer(block=other_block, via=addr))
        return peers

    def _node_address(self, node: str) -> str | None:
        """Where another node routes this node's blocks; a loopback address routes nowhere."""
        rec = self.store.get(NODES + node)
        addr = rec.value.get("address") if rec else None
        try:
            return addr if addr and not ipaddress.ip_address(addr).is_loopback else None
        except ValueError:
            return None


def _allows_forwarded(record: VnetRecord, remote: VnetRecord) -> bool:
    """Whether ``record``'s own side of its peering with ``remote`` admits what the remote's appliances forward."""
    side = back_peering(record, remote)  # the peering of ``record`` that names ``remote``
    return bool(side and side.allowForwardedTraffic)


def network_name(record: VnetRecord, sn: SubnetRecord) -> str:
    """The CNI network name of a subnet: stable, unique, safe in paths (the bridge is named after it)."""
    return f"{record.meta.uid[:10]}.{sn.name.lower()}"


def node_rules(nsg: NsgRecord | None, record: VnetRecord, peered: list[str] | None = None) -> list[NodeRule]:
    """An NSG's rules in the plugin's form: one rule per (source, destination, source ports,
    destination ports) combination.

    Tags: ``*``/``Internet`` match anything, ``VirtualNetwork`` is the vnet's address space and the
    ``peered`` address spaces (as in Azure), ``AzureLoadBalancer`` matches nothing here (there is none).
    """
    if nsg is None:
        return []
    out: list[NodeRule] = []
    for r in sorted(nsg.rules.values(), key=lambda r: r.properties.priority):
        p = r.properties

        def expand(prefixes: list[str]) -> list[str]:
            res: list[str] = []
            for x in prefixes:
                if x == "VirtualNetwork":
                    res.extend([*record.addressSpace.addressPrefixes, *(peered or [])])
                elif x in ("*", "Internet"):
                    res.append("*")
                elif x != "AzureLoadBalancer":
                    res.append(x)
            return res

        combos = list(itertools.product(expand(p.sources()), expand(p.destinations()), p.source_ports(),
                                        p.destination_ports()))
        for i, (src, dst, sport, port) in enumerate(combos):
            out.append(NodeRule.model_validate({
                "name": r.name if len(combos) == 1 else f"{r.name}-{i}",
                "priority": p.priority, "direction": p.direction, "access": p.access, "protocol": p.protocol,
                "sourceAddressPrefix": src, "destinationAddressPrefix": dst,
                "sourcePortRange": _node_ports(sport), "destinationPortRange": _node_ports(port),
            }))
    return out


def _node_ports(port: str) -> str:
    # Port 0 is never a real destination; the plugin's ranges start at 1.
    if port in ("0", "0-65535", "*"):
        return "*"
    return "1-" + port[2:] if port.startswith("0-") else port
