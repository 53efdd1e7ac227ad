"""Virtual networks and their subnets on desired state: what the network API routes call.

A virtual network and its subnets are one store record, so the checks that
span subnets (overlap, inside the address space) and the write are a single
compare-and-swap: two concurrent subnet PUTs cannot both pass the overlap check.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from corral.config import DEFAULT_SUBSCRIPTION
from corral.control import netkeys as K
from corral.errors import (
    Conflict,
    InUseSubnetCannotBeDeleted,
    InvalidAddressPrefix,
    InvalidRequest,
    NotFound,
    VersionConflict,
)
from corral.model.network import (
    NetMeta,
    NetworkSettings,
    NsgRecord,
    Ref,
    Subnet,
    SubnetProperties,
    SubnetRecord,
    VirtualNetwork,
    VnetRecord,
    check_net_name,
)
from corral.model.records import GROUPS
from corral.store.base import Store
from corral.store.update import update_record


class VnetService:
    def __init__(self, store: Store, settings: NetworkSettings | None = None, default_location: str = "local",
                 default_subscription: str = DEFAULT_SUBSCRIPTION) -> None:
        self.store = store
        self.settings = settings or NetworkSettings()
        self.default_location = default_location
        self.default_subscription = default_subscription

    # reads -----------------------------------------------------------------
    def get(self, sub: str, rg: str, name: str) -> tuple[VnetRecord, int]:
        rec = self.store.get(K.vnet_key(sub, rg, name))
        if rec is None:
            raise NotFound(f"The Resource '{K.VNET_TYPE}/{name}' under resource group '{rg}' was not found.")
        return VnetRecord.model_validate(rec.value), rec.version

    def list(self, sub: str, rg: str | None = None) -> list[tuple[VnetRecord, int]]:
        prefix = f"{K.VNETS}{sub.lower()}/" + (f"{rg.lower()}/" if rg else "")
        return [(VnetRecord.model_validate(r.value), r.version) for r in self.store.list(prefix)]

    def get_subnet(self, sub: str, rg: str, vnet: str, name: str) -> tuple[VnetRecord, SubnetRecord, int]:
        record, version = self.get(sub, rg, vnet)
        sn = record.subnets.get(name.lower())
        if sn is None:
            raise NotFound(f"The Resource '{K.SUBNET_TYPE}/{vnet}/{name}' under resource group '{rg}' was not found.")
        return record, sn, version

    def subnet_users(self, sub: str, rg: str, vnet: str, subnet: str | None = None) -> list[str]:
        """Keys of the container groups deployed into the subnet (or any subnet of the vnet).

        Groups that name no subnet join the default subnet, so they count as its users.
        """
        want = (sub.lower(), rg.lower(), vnet.lower())
        st = self.settings
        default = K.parse_subnet_id(self.default_subnet_id())
        holds_default = (want == (default.subscription.lower(), default.resource_group.lower(), default.vnet.lower())
                         and (subnet is None or subnet.lower() == st.default_subnet.lower()))
        out = []
        for rec in self.store.list(GROUPS):
            refs = rec.value.get("spec", {}).get("properties", {}).get("subnetIds") or []
            if not refs and holds_default:
                out.append(rec.key)
            for ref in refs:
                try:
                    r = K.parse_subnet_id(ref.get("id", ""))
                except ValueError:
                    continue
                same = (r.subscription.lower(), r.resource_group.lower(), r.vnet.lower()) == want
                if same and (subnet is None or r.subnet.lower() == subnet.lower()):
                    out.append(rec.key)
        return out

    # virtual networks --------------------------------------------------------
    def put(self, sub: str, rg: str, name: str, body: VirtualNetwork) -> tuple[VnetRecord, int, bool]:
        try:
            check_net_name(name, "virtual network")
        except ValueError as exc:
            raise InvalidRequest(str(exc), target="name") from None
        key = K.vnet_key(sub, rg, name)
        # Peerings have their own routes (a GET-then-PUT client sends them back: they are kept as they are).
        extra = {k: v for k, v in (body.properties.model_extra or {}).items()
                 if k not in ("provisioningState", "virtualNetworkPeerings")}

        def apply(old: VnetRecord | None) -> VnetRecord:
            if old is None:
                meta = NetMeta(uid=uuid.uuid4().hex[:16], subscription=sub, resourceGroup=rg, name=name,
                               createdAt=datetime.now(UTC))
                rec = VnetRecord(meta=meta, location=body.location or self.default_location, tags=body.tags,
                                 addressSpace=body.properties.addressSpace, extra=extra)
            else:
                if body.location and body.location.lower() != old.location.lower():
                    raise Conflict(f"location cannot change on an existing virtual network ({old.location} -> "
                                   f"{body.location})")
                rec = old.model_copy(deep=True)
                rec.tags, rec.addressSpace, rec.extra = body.tags, body.properties.addressSpace, extra
            if body.properties.subnets is not None:
                wanted: dict[str, Subnet] = {}
                for i, s in enumerate(body.properties.subnets):
                    if not s.name:
                        raise InvalidRequest("every subnet needs a name", target=f"properties.subnets[{i}].name")
                    wanted[s.name.lower()] = s
                for gone in set(rec.subnets) - set(wanted):
                    self._check_unused(sub, rg, name, rec.subnets[gone].name)
                    del rec.subnets[gone]
                for lname, s in wanted.items():
                    old_sn = rec.subnets.get(lname)
                    rec.subnets[lname] = self._subnet(sub, rg, name, s.name or lname, s.properties, old_sn,
                                                      rec.location)
            self._validate(sub, rg, name, rec)
            return rec

        return self._cas(key, apply, create_ok=True)

    def delete(self, sub: str, rg: str, name: str) -> bool:
        key = K.vnet_key(sub, rg, name)
        for _ in range(10):
            rec = self.store.get(key)
            if rec is None:
                return False
            record = VnetRecord.model_validate(rec.value)
            users = self.subnet_users(sub, rg, name)
            if users:
                raise InUseSubnetCannotBeDeleted(
                    f"virtual network '{name}' cannot be deleted: its subnets are in use by container group(s) "
                    f"{_group_names(users)}; delete those first")
            try:
                self.store.delete(key, expect_version=rec.version)
            except VersionConflict:
                continue
            self.store.delete(K.blocks_key(record.meta.uid))
            return True
        raise Conflict(f"virtual network '{name}' is changing too often; retry")

    # subnets ---------------------------------------------------------------
    def put_subnet(self, sub: str, rg: str, vnet: str, name: str, body: Subnet) -> tuple[VnetRecord, int, bool]:
        try:
            check_net_name(name, "subnet")
        except ValueError as exc:
            raise InvalidRequest(str(exc), target="name") from None
        created = False

        def apply(old: VnetRecord | None) -> VnetRecord:
            nonlocal created
            assert old is not None
            rec = old.model_copy(deep=True)
            prev = rec.subnets.get(name.lower())
            created = prev is None
            rec.subnets[name.lower()] = self._subnet(sub, rg, vnet, name, body.properties, prev, rec.location)
            self._validate(sub, rg, vnet, rec)
            return rec

        record, version, _ = self._cas(K.vnet_key(sub, rg, vnet), apply, create_ok=False, what=vnet)
        return record, version, created

    def delete_subnet(self, sub: str, rg: str, vnet: str, name: str) -> bool:
        existed = False

        def apply(old: VnetRecord | None) -> VnetRecord:
            nonlocal existed
            assert old is not None
            rec = old.model_copy(deep=True)
            sn = rec.subnets.pop(name.lower(), None)
            existed = sn is not None
            if sn is not None:
                self._check_unused(sub, rg, vnet, sn.name)
            return rec

        try:
            record, _, _ = self._cas(K.vnet_key(sub, rg, vnet), apply, create_ok=False, what=vnet)
        except NotFound:
            return False
        if existed:
            self._drop_blocks(record.meta.uid, name)
        return existed

    def _subnet(self, sub: str, rg: str, vnet: str, name: str, props: SubnetProperties,
                old: SubnetRecord | None, location: str) -> SubnetRecord:
        try:
            check_net_name(name, "subnet")
        except ValueError as exc:
            raise InvalidRequest(str(exc), target="name") from None
        props = props.model_copy(deep=True)
        if props.model_extra:
            props.model_extra.pop("provisioningState", None)
        if props.networkSecurityGroup is not None:
            try:
                ref = K.parse_nsg_id(props.networkSecurityGroup.id)
            except ValueError as exc:
                raise InvalidRequest(str(exc), target="properties.networkSecurityGroup.id") from None
            if ref.subscription.lower() != sub.lower():
                raise InvalidRequest("the network security group must be in the subscription of the subnet",
                                     target="properties.networkSecurityGroup.id")
            if self.store.get(K.nsg_key(*ref)) is None:
                raise InvalidRequest(f"network security group '{ref.nsg}' in resource group '{ref.resource_group}' "
                                     "does not exist; create it first", target="properties.networkSecurityGroup.id")
        if props.routeTable is not None:
            from corral.control.routetables import check_association

            check_association(self.store, sub, location, props.routeTable)
            props.routeTable = Ref(id=props.routeTable.id)  # the id only, whatever else a client echoed
        if old is not None and old.properties.addressPrefix != props.addressPrefix:
            users = self.subnet_users(sub, rg, vnet, name)
            if users:
                raise Conflict(f"the address prefix of subnet '{name}' cannot change while container group(s) "
                               f"{_group_names(users)} use it")
        return SubnetRecord(name=old.name if old else name, uid=old.uid if old else uuid.uuid4().hex[:16],
                            properties=props)

    def _validate(self, sub: str, rg: str, vnet: str, rec: VnetRecord) -> None:
        spaces = [ipaddress.IPv4Network(p) for p in rec.addressSpace.addressPrefixes]
        nets = [(s.name, s.properties.prefix) for s in rec.subnets.values()]
        for sname, net in nets:
            if not any(net.subnet_of(space) for space in spaces):
                raise InvalidAddressPrefix(
                    f"subnet '{sname}' address prefix {net} is not inside the address space of virtual network "
                    f"'{vnet}' ({', '.join(map(str, spaces))})", target="properties.addressPrefix")
            if net.prefixlen > 29:
                raise InvalidAddressPrefix(f"subnet '{sname}' address prefix {net} is too small: the smallest "
                                           "subnet is a /29", target="properties.addressPrefix")
        for i, (a_name, a) in enumerate(nets):
            for b_name, b in nets[i + 1:]:
                if a.overlaps(b):
                    raise InvalidAddressPrefix(
                        f"subnet '{a_name}' ({a}) overlaps subnet '{b_name}' ({b}) in virtual network '{vnet}'",
                        target="properties.addressPrefix")
        if rec.peerings:
            from corral.control.peerings import check_space

            check_space(self.store, rec)

    def _check_unused(self, sub: str, rg: str, vnet: str, subnet: str) -> None:
        users = self.subnet_users(sub, rg, vnet, subnet)
        if users:
            raise InUseSubnetCannotBeDeleted(
                f"subnet '{subnet}' is in use by container group(s) {_group_names(users)} and cannot be deleted; "
                "delete those groups first")

    def _drop_blocks(self, vnet_uid: str, subnet: str) -> None:
        from corral.control.nodeblocks import drop_subnet

        drop_subnet(self.store, vnet_uid, subnet)

    def _cas(self, key: str, apply: Callable[[VnetRecord | None], VnetRecord], create_ok: bool,
             what: str | None = None) -> tuple[VnetRecord, int, bool]:
        def missing() -> NotFound:
            rg = key.split("/")[3]
            return NotFound(f"The Resource '{K.VNET_TYPE}/{what}' under resource group '{rg}' was not found.")

        return update_record(self.store, key, VnetRecord, apply, missing=None if create_ok else missing,
                             busy="the virtual network is changing too often; retry")

    # the default network -----------------------------------------------------
    def default_subnet_id(self) -> str:
        s = self.settings
        return K.subnet_id(self.default_subscription, s.default_resource_group, s.default_vnet, s.default_subnet)

    def ensure_default(self) -> str:
        """Create the default virtual network (once; an existing one is left as the operator changed it)."""
        s = self.settings
        sub, rg = self.default_subscription, s.default_resource_group
        if self.store.get(K.vnet_key(sub, rg, s.default_vnet)) is None:
            body = VirtualNetwork.model_validate({
                "location": self.default_location,
                "tags": {"corral": "default"},
                "properties": {
                    "addressSpace": {"addressPrefixes": [s.default_prefix]},
                    "subnets": [{"name": s.default_subnet, "properties": {"addressPrefix": s.default_prefix}}],
                },
            })
            try:
                self.put(sub, rg, s.default_vnet, body)
            except VersionConflict:
                pass  # another control plane created it first
        return self.default_subnet_id()

    # NSG references ----------------------------------------------------------
    def subnets_using_nsg(self, sub: str, rg: str, nsg: str) -> list[str]:
        want = (sub.lower(), rg.lower(), nsg.lower())
        out = []
        for rec in self.store.list(K.VNETS):
            v = VnetRecord.model_validate(rec.value)
            for sn in v.subnets.values():
                ref = sn.properties.networkSecurityGroup
                if ref is None:
                    continue
                try:
                    r = K.parse_nsg_id(ref.id)
                except ValueError:
                    continue
                if (r.subscription.lower(), r.resource_group.lower(), r.nsg.lower()) == want:
                    out.append(K.subnet_id(v.meta.subscription, v.meta.resourceGroup, v.meta.name, sn.name))
        return out

    def nsg_of(self, record: VnetRecord, subnet: SubnetRecord) -> NsgRecord | None:
        ref = subnet.properties.networkSecurityGroup
        if ref is None:
            return None
        try:
            rec = self.store.get(K.nsg_key(*K.parse_nsg_id(ref.id)))
        except ValueError:
            return None
        return NsgRecord.model_validate(rec.value) if rec else None


def _group_names(keys: list[str]) -> str:
    # group keys are /groups/<sub>/<rg>/<name>
    names = [f"'{k.split('/')[-2]}/{k.split('/')[-1]}'" for k in keys[:5]]
    return ", ".join(names) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")

