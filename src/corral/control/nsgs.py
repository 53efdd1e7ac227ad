"""Network security groups and their rules on desired state.

An NSG and its rules are one store record (one CAS per change). Nodes read the
rules of a subnet's NSG through ``vnet_config_for`` and can watch ``/nsgs/`` to
apply changes live.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from corral.control import netkeys as K
from corral.control.netgroups import groups_using_nsg
from corral.control.vnets import VnetService
from corral.errors import Conflict, InUseNetworkSecurityGroupCannotBeDeleted, InvalidRequest, NotFound
from corral.model.network import NetMeta, NetworkSecurityGroup, NsgRecord, RuleRecord, SecurityRule, check_net_name
from corral.store.base import Store
from corral.store.update import update_record


class NsgService:
    def __init__(self, store: Store, vnets: VnetService, default_location: str = "local") -> None:
        self.store = store
        self.vnets = vnets
        self.default_location = default_location

    def get(self, sub: str, rg: str, name: str) -> tuple[NsgRecord, int]:
        rec = self.store.get(K.nsg_key(sub, rg, name))
        if rec is None:
            raise NotFound(f"The Resource '{K.NSG_TYPE}/{name}' under resource group '{rg}' was not found.")
        return NsgRecord.model_validate(rec.value), rec.version

    def list(self, sub: str, rg: str | None = None) -> list[tuple[NsgRecord, int]]:
        prefix = f"{K.NSGS}{sub.lower()}/" + (f"{rg.lower()}/" if rg else "")
        return [(NsgRecord.model_validate(r.value), r.version) for r in self.store.list(prefix)]

    def put(self, sub: str, rg: str, name: str, body: NetworkSecurityGroup) -> tuple[NsgRecord, int, bool]:
        try:
            check_net_name(name, "network security group")
        except ValueError as exc:
            raise InvalidRequest(str(exc), target="name") from None
        rules = _rules(body.properties.securityRules)

        def apply(old: NsgRecord | None) -> NsgRecord:
            if old is None:
                meta = NetMeta(uid=uuid.uuid4().hex[:16], subscription=sub, resourceGroup=rg, name=name,
                               createdAt=datetime.now(UTC))
                return NsgRecord(meta=meta, location=body.location or self.default_location, tags=body.tags,
                                 rules=rules or {})
            if body.location and body.location.lower() != old.location.lower():
                raise Conflict(f"location cannot change on an existing network security group ({old.location} -> "
                               f"{body.location})")
            new = old.model_copy(deep=True)
            new.tags = body.tags
            if rules is not None:  # absent securityRules keeps the rules (they have their own routes)
                new.rules = rules
            return new

        return self._cas(K.nsg_key(sub, rg, name), apply, create_ok=True, what=name)

    def delete(self, sub: str, rg: str, name: str) -> bool:
        key = K.nsg_key(sub, rg, name)
        rec = self.store.get(key)
        if rec is None:
            return False
        users = self.vnets.subnets_using_nsg(sub, rg, name)
        if users:
            raise InUseNetworkSecurityGroupCannotBeDeleted(
                f"network security group '{name}' is attached to subnet(s) {', '.join(users)}; detach it first")
        groups = groups_using_nsg(self.store, sub, rg, name)
        if groups:
            raise InUseNetworkSecurityGroupCannotBeDeleted(
                f"network security group '{name}' is the security group of container group(s) {', '.join(groups)}; "
                "delete them or update them without it first")
        return self.store.delete(key)

    def put_rule(self, sub: str, rg: str, nsg: str, name: str, body: SecurityRule) -> tuple[NsgRecord, int, bool]:
        try:
            check_net_name(name, "security rule")
        except ValueError as exc:
            raise InvalidRequest(str(exc), target="name") from None
        created = False

        def apply(old: NsgRecord | None) -> NsgRecord:
            nonlocal created
            assert old is not None
            new = old.model_copy(deep=True)
            prev = new.rules.get(name.lower())
            created = prev is None
            new.rules[name.lower()] = RuleRecord(name=prev.name if prev else name, properties=body.properties)
            _check_priorities(new.rules)
            return new

        record, version, _ = self._cas(K.nsg_key(sub, rg, nsg), apply, create_ok=False, what=nsg)
        return record, version, created

    def delete_rule(self, sub: str, rg: str, nsg: str, name: str) -> bool:
        existed = False

        def apply(old: NsgRecord | None) -> NsgRecord:
            nonlocal existed
            assert old is not None
            new = old.model_copy(deep=True)
            existed = new.rules.pop(name.lower(), None) is not None
            return new

        try:
            self._cas(K.nsg_key(sub, rg, nsg), apply, create_ok=False, what=nsg)
        except NotFound:
            return False
        return existed

    def _cas(self, key: str, apply: Callable[[NsgRecord | None], NsgRecord], create_ok: bool,
             what: str) -> tuple[NsgRecord, int, bool]:
        def missing() -> NotFound:
            rg = key.split("/")[3]
            return NotFound(f"The Resource '{K.NSG_TYPE}/{what}' under resource group '{rg}' was not found.")

        return update_record(self.store, key, NsgRecord, apply, missing=None if create_ok else missing,
                             busy="the network security group is changing too often; retry")


def _rules(items: list[SecurityRule] | None) -> dict[str, RuleRecord] | None:
    if items is None:
        return None
    out: dict[str, RuleRecord] = {}
    for i, r in enumerate(items):
        if not r.name:
            raise InvalidRequest("every security rule needs a name", target=f"properties.securityRules[{i}].name")
        try:
            check_net_name(r.name, "security rule")
        except ValueError as exc:
            raise InvalidRequest(str(exc), target=f"properties.securityRules[{i}].name") from None
        if r.name.lower() in out:
            raise InvalidRequest(f"security rule '{r.name}' appears twice", target=f"properties.securityRules[{i}]")
        out[r.name.lower()] = RuleRecord(name=r.name, properties=r.properties)
    _check_priorities(out)
    return out


def _check_priorities(rules: dict[str, RuleRecord]) -> None:
    # Azure: priority is unique per direction inside one NSG (the first match decides).
    seen: dict[tuple[str, int], str] = {}
    for r in rules.values():
        k = (r.properties.direction, r.properties.priority)
        if k in seen:
            raise InvalidRequest(
                f"security rules '{seen[k]}' and '{r.name}' have the same priority {k[1]} and direction {k[0]}; "
                "priorities must be unique per direction", target="properties.priority")
        seen[k] = r.name
