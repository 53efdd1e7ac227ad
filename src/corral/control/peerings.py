"""Virtual network peerings on desired state: each side kept in its network's record, the state
computed from both sides, as Azure shows it.

A peering is ``Initiated`` until the remote network peers back, then ``Connected`` on both
sides; deleting one side (or the remote network) leaves the other ``Disconnected`` until it is
updated or re-created. Only a Connected pair whose two sides both allow virtual network access
carries traffic (``linked``), and it is not transitive: a network's nodes admit and route the
address spaces of its own links only.
"""

from __future__ import annotations

import ipaddress
import uuid
from typing import Literal

from corral.control import netkeys as K
from corral.control.vnets import VnetService
from corral.errors import (
    InvalidRequest,
    NotFound,
    RemotePeeringIsDisconnected,
    VersionConflict,
    VnetAddressSpacesOverlap,
)
from corral.model.network import PeeringRecord, VirtualNetworkPeering, VnetRecord, check_net_name
from corral.store.base import Store
from corral.store.update import update_record

PeeringState = Literal["Initiated", "Connected", "Disconnected"]


def load_vnet(store: Store, vnet_id: str) -> VnetRecord | None:
    try:
        rec = store.get(K.vnet_key(*K.parse_vnet_id(vnet_id)))
    except ValueError:
        return None
    return VnetRecord.model_validate(rec.value) if rec else None


def _points_at(p: PeeringRecord, target: VnetRecord) -> bool:
    m = target.meta
    try:
        ref = K.parse_vnet_id(p.remoteId)
    except ValueError:
        return False
    return (ref.subscription.lower(), ref.resource_group.lower(), ref.vnet.lower()) == (
        m.subscription.lower(), m.resourceGroup.lower(), m.name.lower())


def back_peering(remote: VnetRecord, local: VnetRecord) -> PeeringRecord | None:
    """The remote network's peering that names ``local`` (by id, whatever its state)."""
    return next((p for p in remote.peerings.values() if _points_at(p, local)), None)


def remote_of(store: Store, p: PeeringRecord) -> VnetRecord | None:
    """The network the peering was made with, or None when it is gone (or was re-created since)."""
    remote = load_vnet(store, p.remoteId)
    return remote if remote is not None and remote.meta.uid == p.remoteUid else None


def state(store: Store, local: VnetRecord, p: PeeringRecord) -> PeeringState:
    remote = remote_of(store, p)
    if remote is None or p.disconnected:
        return "Disconnected"
    back = back_peering(remote, local)
    if back is None or back.disconnected or back.remoteUid != local.meta.uid:
        return "Initiated"
    return "Connected"


def _overlap(a: list[str], b: list[str]) -> tuple[str, str] | None:
    for x in a:
        for y in b:
            if ipaddress.IPv4Network(x).overlaps(ipaddress.IPv4Network(y)):
                return x, y
    return None


def linked(store: Store, local: VnetRecord) -> list[VnetRecord]:
    """The networks ``local`` exchanges traffic with: Connected, access allowed on both sides."""
    out: list[VnetRecord] = []
    for p in sorted(local.peerings.values(), key=lambda p: p.name.lower()):
        if not p.allowVirtualNetworkAccess:
            continue
        remote = remote_of(store, p)
        if remote is None or p.disconnected:
            continue
        back = back_peering(remote, local)
        if back is None or back.disconnected or back.remoteUid != local.meta.uid or not back.allowVirtualNetworkAccess:
            continue
        taken = [q for r in out for q in r.addressSpace.addressPrefixes] + local.addressSpace.addressPrefixes
        if _overlap(remote.addressSpace.addressPrefixes, taken):  # an address space changed under a peering
            continue
        out.append(remote)
    return out


def check_space(store: Store, local: VnetRecord) -> None:
    """A virtual network's address space may not grow into a network it is peered with."""
    for p in local.peerings.values():
        remote = remote_of(store, p)
        if remote is None:
            continue
        both = _overlap(local.addressSpace.addressPrefixes, remote.addressSpace.addressPrefixes)
        if both:
            raise VnetAddressSpacesOverlap(
                f"the address space of virtual network '{local.meta.name}' cannot include {both[0]}: it overlaps "
                f"{both[1]} of '{remote.meta.name}', peered through '{p.name}'",
                target="properties.addressSpace.addressPrefixes")


class PeeringService:
    def __init__(self, store: Store, vnets: VnetService) -> None:
        self.store = store
        self.vnets = vnets

    def get(self, sub: str, rg: str, vnet: str, name: str) -> tuple[VnetRecord, PeeringRecord, int]:
        record, version = self.vnets.get(sub, rg, vnet)
        p = record.peerings.get(name.lower())
        if p is None:
            raise NotFound(f"The Resource '{K.PEERING_TYPE}/{vnet}/{name}' under resource group '{rg}' "
                           "was not found.")
        return record, p, version

    def state(self, local: VnetRecord, p: PeeringRecord) -> PeeringState:
        return state(self.store, local, p)

    def remote(self, p: PeeringRecord) -> VnetRecord | None:
        return remote_of(self.store, p)

    def put(self, sub: str, rg: str, vnet: str, name: str,
            body: VirtualNetworkPeering) -> tuple[VnetRecord, int, bool]:
        try:
            check_net_name(name, "virtual network peering")
        except ValueError as exc:
            raise InvalidRequest(str(exc), target="name") from None
        props = body.properties
        target = "properties.remoteVirtualNetwork.id"
        try:
            ref = K.parse_vnet_id(props.remoteVirtualNetwork.id)
        except ValueError as exc:
            raise InvalidRequest(str(exc), target=target) from None
        remote_id = K.vnet_id(*ref)
        created = False

        def apply(old: VnetRecord | None) -> VnetRecord:
            nonlocal created
            assert old is not None
            rec = old.model_copy(deep=True)
            remote = load_vnet(self.store, remote_id)
            if remote is None:
                raise InvalidRequest(f"the remote virtual network '{ref.vnet}' in resource group "
                                     f"'{ref.resource_group}' does not exist", target=target)
            if remote.meta.uid == rec.meta.uid:
                raise InvalidRequest(f"virtual network '{vnet}' cannot be peered with itself", target=target)
            prev = rec.peerings.get(name.lower())
            if prev is not None and K.vnet_key(*K.parse_vnet_id(prev.remoteId)) != K.vnet_key(*ref):
                raise InvalidRequest(f"peering '{prev.name}' connects to '{prev.remoteId}'; its remote virtual "
                                     "network cannot change: delete the peering and create a new one", target=target)
            both = _overlap(rec.addressSpace.addressPrefixes, remote.addressSpace.addressPrefixes)
            if both:
                raise VnetAddressSpacesOverlap(
                    f"virtual networks '{vnet}' and '{remote.meta.name}' cannot be peered: their address spaces "
                    f"overlap ({both[0]} and {both[1]})", target=target)
            for other in rec.peerings.values():
                if other.name.lower() == name.lower():
                    continue
                if _points_at(other, remote):
                    raise InvalidRequest(f"virtual network '{vnet}' is already peered with '{remote.meta.name}' "
                                         f"through peering '{other.name}'", target=target)
                peer = remote_of(self.store, other)
                clash = peer and _overlap(peer.addressSpace.addressPrefixes, remote.addressSpace.addressPrefixes)
                if peer and clash:
                    raise VnetAddressSpacesOverlap(
                        f"virtual network '{remote.meta.name}' cannot be peered with '{vnet}': its address space "
                        f"{clash[1]} overlaps {clash[0]} of '{peer.meta.name}', already peered through "
                        f"'{other.name}'", target=target)
            back = back_peering(remote, rec)
            if back is not None and (back.disconnected or back.remoteUid != rec.meta.uid):
                raise RemotePeeringIsDisconnected(
                    f"peering '{back.name}' of virtual network '{remote.meta.name}', which names '{vnet}', is "
                    "Disconnected: update or re-create it first, then this one", target=target)
            created = prev is None
            rec.peerings[name.lower()] = PeeringRecord(
                name=prev.name if prev else name, uid=prev.uid if prev else uuid.uuid4().hex[:16],
                remoteId=remote_id, remoteUid=remote.meta.uid,
                allowVirtualNetworkAccess=props.allowVirtualNetworkAccess,
                allowForwardedTraffic=props.allowForwardedTraffic, allowGatewayTransit=props.allowGatewayTransit)
            return rec

        def missing() -> NotFound:
            return NotFound(f"The Resource '{K.VNET_TYPE}/{vnet}' under resource group '{rg}' was not found.")

        record, version, _ = update_record(self.store, K.vnet_key(sub, rg, vnet), VnetRecord, apply,
                                           missing=missing, busy="the virtual network is changing too often; retry")
        return record, version, created

    def delete(self, sub: str, rg: str, vnet: str, name: str) -> bool:
        gone: PeeringRecord | None = None

        def apply(old: VnetRecord | None) -> VnetRecord:
            nonlocal gone
            assert old is not None
            rec = old.model_copy(deep=True)
            gone = rec.peerings.pop(name.lower(), None)
            return rec

        def missing() -> NotFound:
            return NotFound(vnet)

        try:
            record, _, _ = update_record(self.store, K.vnet_key(sub, rg, vnet), VnetRecord, apply,
                                         missing=missing, busy="the virtual network is changing too often; retry")
        except NotFound:
            return False
        if gone is None:
            return False
        remote = remote_of(self.store, gone)
        if remote is not None:
            self._disconnect(remote, record)
        return True

    def _disconnect(self, remote: VnetRecord, local: VnetRecord) -> None:
        """The remote side of a peering just deleted becomes Disconnected (if it was Connected)."""
        key = K.vnet_key(remote.meta.subscription, remote.meta.resourceGroup, remote.meta.name)
        for _ in range(10):
            cur = self.store.get(key)
            if cur is None:
                return
            rec = VnetRecord.model_validate(cur.value)
            back = back_peering(rec, local)
            if rec.meta.uid != remote.meta.uid or back is None or back.disconnected or \
                    back.remoteUid != local.meta.uid:
                return
            back.disconnected = True
            try:
                self.store.put(key, rec.model_dump(mode="json", exclude_none=True), expect_version=cur.version)
                return
            except VersionConflict:
                continue
