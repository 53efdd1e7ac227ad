"""Network checks of a container group before it is written: subnets, private addresses, DNS labels.

``GroupService.create_or_update`` calls ``check`` before writing the group.
A dnsNameLabel is claimed with a compare-and-swap on ``/dnslabels/<location>/<label>``
so two concurrent creates cannot both get it; a claim whose group is gone (or
now carries another label) is stale and taken over, so nothing has to release it.
"""

from __future__ import annotations

import time

from corral.control import netkeys as K
from corral.control.vnets import VnetService
from corral.errors import (
    DnsNameLabelNotAvailable,
    InvalidRequest,
    NetworkCapacityExceeded,
    NotFound,
    VersionConflict,
)
from corral.model.group import ContainerGroup
from corral.model.network import ACI_DELEGATION
from corral.model.records import GROUPS, group_key
from corral.store.base import ABSENT, Compacted, Store

# Seconds a claim holds before its group record exists (a create between claim and write).
CLAIM_GRACE = 10.0


class GroupNetworkCheck:
    def __init__(self, store: Store, vnets: VnetService) -> None:
        self.store = store
        self.vnets = vnets

    def check(self, sub: str, rg: str, name: str, body: ContainerGroup) -> None:
        props = body.properties
        ip = props.ipAddress
        subnets = props.subnetIds or []
        if ip is not None and ip.type == "Private" and not subnets:
            raise InvalidRequest(
                "ipAddress.type 'Private' needs subnetIds: name the virtual network subnet the group joins "
                "(or use type 'Public')", target="properties.ipAddress.type")
        if len(subnets) > 1:
            raise InvalidRequest("a container group can join one subnet only", target="properties.subnetIds")
        key = group_key(sub, rg, name)
        for i, s in enumerate(subnets):
            self._check_subnet(sub, key, s.id, f"properties.subnetIds[{i}].id")
        if not subnets:  # the group joins the default virtual network
            ref = K.parse_subnet_id(self.vnets.default_subnet_id())
            self._check_capacity(key, ref.subscription, ref.resource_group, ref.vnet)
        if props.networkSecurityGroup is not None:
            self._check_nsg(sub, props.networkSecurityGroup.id)
        if ip is not None and ip.dnsNameLabel:
            self._claim_label(body.location or self.vnets.default_location, ip.dnsNameLabel, key)

    def _check_nsg(self, sub: str, nsg_id: str) -> None:
        target = "properties.networkSecurityGroup.id"
        try:
            ref = K.parse_nsg_id(nsg_id)
        except ValueError as exc:
            raise InvalidRequest(str(exc), target=target) from None
        if ref.subscription.lower() != sub.lower():
            raise InvalidRequest("the network security group must be in the group's subscription", target=target)
        if self.store.get(K.nsg_key(*ref)) is None:
            raise InvalidRequest(f"network security group '{ref.nsg}' does not exist in resource group "
                                 f"'{ref.resource_group}'", target=target)

    def _check_subnet(self, sub: str, key: str, subnet_id: str, target: str) -> None:
        try:
            ref = K.parse_subnet_id(subnet_id)
        except ValueError as exc:
            raise InvalidRequest(str(exc), target=target) from None
        if ref.subscription.lower() != sub.lower():
            raise InvalidRequest(
                f"subnet '{subnet_id}' is in subscription '{ref.subscription}'; a container group can only join "
                f"subnets of its own subscription '{sub}'", target=target)
        try:
            record, sn, _ = self.vnets.get_subnet(*ref)
        except NotFound:
            raise InvalidRequest(
                f"subnet '{ref.subnet}' of virtual network '{ref.vnet}' in resource group '{ref.resource_group}' "
                "does not exist; create it first (corral network subnet create)", target=target) from None
        for d in sn.properties.delegations or []:
            if d.properties.serviceName.lower() != ACI_DELEGATION.lower():
                raise InvalidRequest(f"subnet '{sn.name}' is delegated to {d.properties.serviceName}, not to "
                                     f"{ACI_DELEGATION}", target=target)
        self._check_capacity(key, ref.subscription, ref.resource_group, record.meta.name)

    def _check_capacity(self, key: str, sub: str, rg: str, vnet: str) -> None:
        limit = self.vnets.settings.max_groups_per_vnet
        if self.store.count(GROUPS) < limit:
            return  # fewer groups in all than one network may hold: no need to read them
        users = [k for k in self.vnets.subnet_users(sub, rg, vnet) if k != key]
        if len(users) >= limit:
            raise NetworkCapacityExceeded(
                f"virtual network '{vnet}' already holds {len(users)} container groups, its limit "
                f"({limit}); delete some or use another virtual network")

    def _claim_label(self, location: str, label: str, key: str) -> None:
        lk = K.label_key(location, label)
        for _ in range(10):
            rec = self.store.get(lk)
            if rec is not None:
                holder = rec.value.get("group")
                if holder == key or not self._holds(holder, location, label, rec.value.get("at", 0.0), rec.version):
                    expect = rec.version  # ours already, or stale: take it over
                else:
                    raise DnsNameLabelNotAvailable(
                        f"the DNS name label '{label}' is already used by another container group in location "
                        f"'{location}'; choose another dnsNameLabel")
            else:
                expect = ABSENT
            if rec is not None and rec.value.get("group") == key:
                return
            try:
                self.store.put(lk, {"group": key, "location": location, "label": label, "at": time.time()},
                               expect_version=expect)
                return
            except VersionConflict:
                continue
        raise DnsNameLabelNotAvailable(f"the DNS name label '{label}' is being claimed concurrently; retry")

    def _holds(self, group: str | None, location: str, label: str, at: float, claimed: int) -> bool:
        """Whether the group still exists and still carries the label in the location."""
        if not group:
            return False
        rec = self.store.get(group)
        if rec is None:
            # Written and deleted since the claim: stale. Never written yet: its create is in flight
            # (between claim and write), so the claim holds for a short grace.
            try:
                events = self.store.watch(group, claimed, 0)
            except Compacted:
                return False
            mine = [e for e in events if e.key == group]
            if mine and mine[-1].type == "delete":
                return False
            if mine:  # written between our read and the watch: judge what it is now
                rec = self.store.get(group)
                if rec is None:
                    return False
            else:
                return time.time() - float(at) < CLAIM_GRACE
        spec = rec.value.get("spec", {})
        ip = spec.get("properties", {}).get("ipAddress") or {}
        return (str(ip.get("dnsNameLabel") or "").lower() == label.lower()
                and str(spec.get("location") or "").lower() == location.lower())


def groups_using_nsg(store: Store, sub: str, rg: str, name: str) -> list[str]:
    """``rg/name`` of the live container groups whose own security group is this NSG."""
    want = (sub.lower(), rg.lower(), name.lower())
    users = []
    for rec in store.list(f"{GROUPS}{sub.lower()}/"):
        meta = rec.value.get("meta", {})
        nsg = ((rec.value.get("spec") or {}).get("properties") or {}).get("networkSecurityGroup")
        if meta.get("deleting") or not isinstance(nsg, dict):
            continue
        try:
            ref = K.parse_nsg_id(str(nsg.get("id", "")))
        except ValueError:
            continue
        if (ref.subscription.lower(), ref.resource_group.lower(), ref.nsg.lower()) == want:
            users.append(f"{meta.get('resourceGroup')}/{meta.get('name')}")
    return sorted(users)
