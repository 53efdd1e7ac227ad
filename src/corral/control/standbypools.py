"""Standby container group pools on desired state, and the take-over of a pooled group by a create.

The orchestrator keeps a pool's groups created (ordinary groups tagged
``corral-standby-pool: <pool id>``). A create naming ``standbyPoolProfile {id}``
takes one over in ``claim``: the pooled group's record moves to the new name in
one store transaction (delete the old key at the version read, create the new
key), keeping its uid, node and status. Agents key their work by uid, so the
running containers are kept, never rebuilt, and two creates can never take the
same group: the second transaction fails on the deleted key and tries the next.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from corral.control.groups import GroupService, GroupView, in_place_blocker
from corral.control.ngroups import merge_patch
from corral.control.profiles import ProfileService
from corral.errors import Conflict, InvalidRequest, NotFound, StandbyPoolEmpty, VersionConflict
from corral.model.armids import (
    POOL_TAG,
    POOL_TYPE,
    STANDBY_POOLS,
    parse_resource_id,
    resource_id,
    resource_key,
    same_id,
)
from corral.model.group import ContainerGroup, check_name
from corral.model.profile import REFERENCE_FIELDS
from corral.model.records import GroupRecord, group_key
from corral.model.standbypool import PoolMeta, PoolRecord, StandbyPool
from corral.store.base import ABSENT, Delete, Put, Record, Store


def _not_found(rg: str, name: str) -> NotFound:
    return NotFound(f"The Resource '{POOL_TYPE}/{name}' under resource group '{rg}' was not found.")


def pool_id(sub: str, rg: str, name: str) -> str:
    return resource_id(sub, rg, POOL_TYPE, name)


def _template(props: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in props.items() if k not in REFERENCE_FIELDS}


def ready(view: GroupView) -> bool:
    st, meta = view.status, view.record.meta
    if st is None or meta.deleting or meta.desiredState != "Running" or st.state != "Running":
        return False
    if st.observedGeneration < meta.generation or st.provisioningError:
        return False
    names = [c.name for c in view.record.spec.properties.containers]
    return all(n in st.containers and st.containers[n].ready is True for n in names)


class StandbyPoolService:
    def __init__(self, store: Store, groups: GroupService, profiles: ProfileService,
                 default_location: str = "local") -> None:
        self.store = store
        self.groups = groups
        self.profiles = profiles
        self.default_location = default_location

    # reads -----------------------------------------------------------------
    def get(self, sub: str, rg: str, name: str) -> PoolRecord:
        rec = self.store.get(resource_key(STANDBY_POOLS, sub, rg, name))
        if rec is None:
            raise _not_found(rg, name)
        return PoolRecord.model_validate(rec.value)

    def list(self, sub: str, rg: str | None = None) -> list[PoolRecord]:
        prefix = f"{STANDBY_POOLS}{sub.lower()}/" + (f"{rg.lower()}/" if rg else "")
        return [PoolRecord.model_validate(r.value) for r in self.store.list(prefix)]

    def members(self, pool: PoolRecord) -> list[GroupView]:
        m = pool.meta
        pid = pool_id(m.subscription, m.resourceGroup, m.name)
        return [v for v in self.groups.list(m.subscription, m.resourceGroup)
                if same_id((v.record.spec.tags or {}).get(POOL_TAG), pid)]

    def runtime_view(self, sub: str, rg: str, name: str) -> dict[str, int]:
        """How many of the pool's groups are Running (ready to hand over), Creating and Deleting."""
        counts = {"Running": 0, "Creating": 0, "Deleting": 0}
        for v in self.members(self.get(sub, rg, name)):
            state = "Deleting" if v.record.meta.deleting else "Running" if ready(v) else "Creating"
            counts[state] += 1
        return counts

    # writes ----------------------------------------------------------------
    def put(self, sub: str, rg: str, name: str, spec: StandbyPool) -> tuple[PoolRecord, bool]:
        try:
            check_name(name, "standby pool")
        except ValueError as exc:
            raise InvalidRequest(str(exc), target="name") from None
        spec.location = spec.location or self.default_location
        ref = spec.properties.containerGroupProperties.containerGroupProfile
        _, rev = self.profiles.by_id(ref.id, ref.revision, "properties.containerGroupProperties.containerGroupProfile")
        key = resource_key(STANDBY_POOLS, sub, rg, name)
        for _ in range(10):
            rec = self.store.get(key)
            if rec is None:
                meta = PoolMeta(uid=uuid.uuid4().hex[:16], subscription=sub, resourceGroup=rg, name=name,
                                createdAt=datetime.now(UTC), revision=rev.revision)
            else:
                meta = PoolRecord.model_validate(rec.value).meta
                meta.revision = rev.revision
            record = PoolRecord(spec=spec, meta=meta)
            try:
                self.store.put(key, record.dump(), expect_version=rec.version if rec else ABSENT)
            except VersionConflict:
                continue
            return record, rec is None
        raise Conflict(f"standby pool '{name}' is changing too often to update; retry")

    def patch(self, sub: str, rg: str, name: str, body: dict[str, Any]) -> PoolRecord:
        current = self.get(sub, rg, name)
        allowed = {k: v for k, v in body.items() if k in ("properties", "tags")}
        if isinstance(allowed.get("properties"), dict):
            allowed["properties"] = {k: v for k, v in allowed["properties"].items() if k != "provisioningState"}
        merged = merge_patch(current.spec.model_dump(mode="json", exclude_none=True), allowed)
        record, _ = self.put(sub, rg, name, StandbyPool.model_validate(merged))
        return record

    def delete(self, sub: str, rg: str, name: str) -> bool:
        """The pool goes at once; the orchestrator removes its groups (their pool is gone)."""
        return self.store.delete(resource_key(STANDBY_POOLS, sub, rg, name))

    # the take-over ---------------------------------------------------------
    def claim(self, sub: str, rg: str, name: str, body: ContainerGroup) -> Record | None:
        """Move a ready pooled group to ``sub/rg/name`` with ``body`` as its spec; None: none to take (create cold)."""
        ref = getattr(body.properties, "standbyPoolProfile", None)
        if not isinstance(ref, dict) or not ref.get("id"):
            return None
        target = "properties.standbyPoolProfile.id"
        try:
            pref = parse_resource_id(str(ref["id"]), POOL_TYPE)
        except ValueError as exc:
            raise InvalidRequest(str(exc), target=target) from None
        try:
            pool = self.get(*pref)
        except NotFound:
            raise InvalidRequest(f"standby pool '{pref.name}' in resource group '{pref.resource_group}' does not "
                                 "exist", target=target) from None
        strict = bool(ref.get("failContainerGroupCreateOnReuseFailure"))
        if hasattr(body.properties, "isCreatedFromStandbyPool"):
            delattr(body.properties, "isCreatedFromStandbyPool")
        want = body.properties.model_dump(mode="json", exclude_none=True)
        for view in sorted(self.members(pool), key=lambda v: v.record.meta.createdAt):
            if not ready(view) or in_place_blocker(view.record.spec, body) is not None:
                continue
            record = self._moved(view.record, sub, rg, name, body,
                                 changed=_template(view.record.spec.properties.model_dump(
                                     mode="json", exclude_none=True)) != _template(want))
            try:
                new = self.store.txn([Delete(key=view.key, expect_version=view.version),
                                      Put(key=group_key(sub, rg, name), value=record.dump(), expect_version=ABSENT)])
            except VersionConflict:
                continue  # taken (or changed) under us: the next one
            return new[1]
        if strict:
            raise StandbyPoolEmpty(f"standby pool '{pool.meta.name}' has no ready container group to hand over "
                                   "(failContainerGroupCreateOnReuseFailure is set)")
        return None

    @staticmethod
    def _moved(old: GroupRecord, sub: str, rg: str, name: str, body: ContainerGroup, changed: bool) -> GroupRecord:
        meta = old.meta.model_copy(deep=True)
        meta.subscription, meta.resourceGroup, meta.name = sub, rg, name
        meta.createdAt = datetime.now(UTC)
        meta.lastOperation = "Create"
        meta.fromStandbyPool = True
        if changed:
            meta.generation += 1
        return GroupRecord(spec=body, meta=meta)
