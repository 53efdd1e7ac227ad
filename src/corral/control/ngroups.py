"""NGroups on desired state: what the API routes call, and the status the orchestrator reports.

The control plane only keeps an NGroup's spec, its resolved profile revision and
what the orchestrator last reported (``status``); the orchestrator, an API client,
does the work. An operation (``/ngroupops/<id>``) is done when the reported status
has caught up with the generation the operation wrote.
"""

from __future__ import annotations

import copy
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from corral.control.groups import OperationStatus
from corral.control.profiles import ProfileService
from corral.errors import Conflict, InvalidRequest, NotFound, VersionConflict
from corral.model.armids import (
    LB_TYPE,
    LOAD_BALANCERS,
    NGROUP_OPERATIONS,
    NGROUP_TYPE,
    NGROUPS,
    parse_child_id,
    resource_key,
)
from corral.model.group import check_name
from corral.model.lb import LbRecord
from corral.model.ngroup import NGroupMeta, NGroupRecord, NGroupSpec, NGroupStatus, check_member_prefix
from corral.store.base import ABSENT, Store

# Rendered from what the control plane and the orchestrator keep; never taken from a request.
READ_ONLY = ("provisioningState", "status", "resourceGuid", "generation", "restartGeneration", "desiredState")
NGroupOperationKind = Literal["Create", "Update", "Delete", "Start", "Restart"]


class NGroupOperation(BaseModel):
    id: str
    kind: NGroupOperationKind
    key: str
    uid: str
    generation: int
    restartGeneration: int
    createdAt: datetime


def _not_found(rg: str, name: str) -> NotFound:
    return NotFound(f"The Resource '{NGROUP_TYPE}/{name}' under resource group '{rg}' was not found.")


def merge_patch(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7396): objects merge key by key, null removes, anything else replaces."""
    out = copy.deepcopy(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge_patch(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


class NGroupService:
    def __init__(self, store: Store, profiles: ProfileService, default_location: str = "local") -> None:
        self.store = store
        self.profiles = profiles
        self.default_location = default_location

    # reads -----------------------------------------------------------------
    def get(self, sub: str, rg: str, name: str) -> NGroupRecord:
        rec = self.store.get(resource_key(NGROUPS, sub, rg, name))
        if rec is None:
            raise _not_found(rg, name)
        return NGroupRecord.model_validate(rec.value)

    def list(self, sub: str, rg: str | None = None) -> list[NGroupRecord]:
        prefix = f"{NGROUPS}{sub.lower()}/" + (f"{rg.lower()}/" if rg else "")
        return [NGroupRecord.model_validate(r.value) for r in self.store.list(prefix)]

    # writes ----------------------------------------------------------------
    def _check(self, sub: str, name: str, spec: NGroupSpec) -> int:
        """Validate references; the profile revision the NGroup will run."""
        try:
            check_member_prefix(name, spec)
        except ValueError as exc:
            raise InvalidRequest(str(exc), target="properties.elasticProfile.containerGroupNamingPolicy") from None
        stub = spec.properties.profile
        _, rev = self.profiles.by_id(stub.resource.id, stub.revision, "properties.containerGroupProfiles[0].resource")
        for i, pool_id in enumerate(stub.pool_ids()):
            target = f"properties.containerGroupProfiles[0].networkProfile.loadBalancer.backendAddressPools[{i}]"
            lb_ref, pool = parse_child_id(pool_id, LB_TYPE, "backendAddressPools")
            rec = self.store.get(lb_ref.key(LOAD_BALANCERS))
            if rec is None:
                raise InvalidRequest(f"load balancer '{lb_ref.name}' in resource group '{lb_ref.resource_group}' "
                                     "does not exist", target=target)
            lb = LbRecord.model_validate(rec.value)
            if not any(p.name.lower() == pool.lower() for p in lb.spec.properties.backendAddressPools):
                raise InvalidRequest(f"load balancer '{lb_ref.name}' has no backend address pool '{pool}'",
                                     target=target)
        a = spec.properties.elasticProfile.autoscale
        if a is not None and not (a.minCount <= spec.properties.elasticProfile.desiredCount <= a.maxCount):
            raise InvalidRequest(f"elasticProfile.desiredCount {spec.properties.elasticProfile.desiredCount} is "
                                 f"outside autoscale's minCount..maxCount ({a.minCount}..{a.maxCount})",
                                 target="properties.elasticProfile.desiredCount")
        return rev.revision

    def put(self, sub: str, rg: str, name: str, spec: NGroupSpec) -> tuple[NGroupRecord, bool, NGroupOperation]:
        try:
            check_name(name, "NGroup")
        except ValueError as exc:
            raise InvalidRequest(str(exc), target="name") from None
        spec.location = spec.location or self.default_location
        revision = self._check(sub, name, spec)
        key = resource_key(NGROUPS, sub, rg, name)
        for _ in range(10):
            rec = self.store.get(key)
            if rec is None:
                meta = NGroupMeta(uid=uuid.uuid4().hex[:16], subscription=sub, resourceGroup=rg, name=name,
                                  createdAt=datetime.now(UTC), revision=revision)
                record = NGroupRecord(spec=spec, meta=meta)
                kind: NGroupOperationKind = "Create"
            else:
                old = NGroupRecord.model_validate(rec.value)
                if old.meta.deleting:
                    raise Conflict(f"NGroup '{name}' is being deleted; retry when the delete has finished")
                meta = old.meta.model_copy()
                if old.spec.model_dump(mode="json") != spec.model_dump(mode="json") or meta.revision != revision:
                    meta.generation += 1
                meta.revision = revision
                meta.lastOperation = "Update"
                record = NGroupRecord(spec=spec, meta=meta, status=old.status)
                kind = "Update"
            try:
                self.store.put(key, record.dump(), expect_version=rec.version if rec else ABSENT)
            except VersionConflict:
                continue
            return record, rec is None, self._operation(kind, key, record.meta)
        raise Conflict(f"NGroup '{name}' is changing too often to update; retry")

    def patch(self, sub: str, rg: str, name: str, body: dict[str, Any]) -> tuple[NGroupRecord, NGroupOperation]:
        current = self.get(sub, rg, name)
        base = current.spec.model_dump(mode="json", exclude_none=True)
        allowed = {k: v for k, v in body.items() if k in ("properties", "tags", "zones", "identity")}
        props = allowed.get("properties")
        if isinstance(props, dict):
            props = {k: v for k, v in props.items() if k not in READ_ONLY}
            allowed["properties"] = props
        spec = NGroupSpec.model_validate(merge_patch(base, allowed))
        record, _, op = self.put(sub, rg, name, spec)
        return record, op

    def _mutate(self, sub: str, rg: str, name: str, apply) -> NGroupRecord:  # type: ignore[no-untyped-def]
        key = resource_key(NGROUPS, sub, rg, name)
        for _ in range(10):
            rec = self.store.get(key)
            if rec is None:
                raise _not_found(rg, name)
            record = NGroupRecord.model_validate(rec.value)
            if record.meta.deleting and apply is not _mark_deleting:
                raise Conflict(f"NGroup '{name}' is being deleted")
            apply(record)
            try:
                self.store.put(key, record.dump(), expect_version=rec.version)
            except VersionConflict:
                continue
            return record
        raise Conflict(f"NGroup '{name}' is changing too often; retry")

    def update_tags(self, sub: str, rg: str, name: str, tags: dict[str, str] | None) -> NGroupRecord:
        return self._mutate(sub, rg, name, lambda r: setattr(r.spec, "tags", tags))

    def delete(self, sub: str, rg: str, name: str) -> NGroupOperation | None:
        try:
            record = self._mutate(sub, rg, name, _mark_deleting)
        except NotFound:
            return None
        return self._operation("Delete", resource_key(NGROUPS, sub, rg, name), record.meta)

    def stop(self, sub: str, rg: str, name: str) -> NGroupRecord:
        def apply(r: NGroupRecord) -> None:
            r.meta.desiredState = "Stopped"
        return self._mutate(sub, rg, name, apply)

    def start(self, sub: str, rg: str, name: str) -> NGroupOperation:
        def apply(r: NGroupRecord) -> None:
            r.meta.desiredState = "Running"
            r.meta.restartGeneration += 1
            r.meta.lastOperation = "Start"
        record = self._mutate(sub, rg, name, apply)
        return self._operation("Start", resource_key(NGROUPS, sub, rg, name), record.meta)

    def restart(self, sub: str, rg: str, name: str) -> NGroupOperation:
        def apply(r: NGroupRecord) -> None:
            if r.meta.desiredState == "Stopped":
                raise Conflict(f"NGroup '{name}' is stopped; start it instead of restarting it")
            r.meta.restartGeneration += 1
            r.meta.lastOperation = "Restart"
        record = self._mutate(sub, rg, name, apply)
        return self._operation("Restart", resource_key(NGROUPS, sub, rg, name), record.meta)

    def report_status(self, sub: str, rg: str, name: str, uid: str, status: NGroupStatus) -> NGroupRecord | None:
        """The orchestrator's report; the record goes once it says a deleted NGroup's members are all gone."""
        key = resource_key(NGROUPS, sub, rg, name)
        for _ in range(10):
            rec = self.store.get(key)
            if rec is None or rec.value["meta"]["uid"] != uid:
                raise NotFound(f"NGroup '{name}' (uid {uid}) no longer exists")
            record = NGroupRecord.model_validate(rec.value)
            try:
                if record.meta.deleting and status.released:
                    self.store.delete(key, expect_version=rec.version)
                    return None
                record.status = status
                self.store.put(key, record.dump(), expect_version=rec.version)
            except VersionConflict:
                continue
            return record
        raise Conflict(f"NGroup '{name}' is changing too often; retry the status report")

    # long-running operations ----------------------------------------------
    def _operation(self, kind: NGroupOperationKind, key: str, meta: NGroupMeta) -> NGroupOperation:
        op = NGroupOperation(id=uuid.uuid4().hex, kind=kind, key=key, uid=meta.uid, generation=meta.generation,
                             restartGeneration=meta.restartGeneration, createdAt=datetime.now(UTC))
        self.store.put(NGROUP_OPERATIONS + op.id, op.model_dump(mode="json"))
        return op

    def operation_status(self, op_id: str) -> OperationStatus | None:
        """None when ``op_id`` is not an NGroup operation."""
        rec = self.store.get(NGROUP_OPERATIONS + op_id)
        if rec is None:
            return None
        op = NGroupOperation.model_validate(rec.value)
        current = self.store.get(op.key)
        same = current is not None and current.value["meta"]["uid"] == op.uid
        if op.kind == "Delete":
            return OperationStatus(status="InProgress" if same else "Succeeded")
        if not same:
            return OperationStatus(status="Canceled", error="the NGroup was deleted")
        assert current is not None
        return operation_result(NGroupRecord.model_validate(current.value), op.generation, op.restartGeneration)


def _mark_deleting(r: NGroupRecord) -> None:
    r.meta.deleting = True
    r.meta.lastOperation = "Delete"


def operation_result(record: NGroupRecord, generation: int, restart_generation: int) -> OperationStatus:
    st = record.status
    ro = st.rollout
    if ro is not None and ro.generation >= generation and ro.state in ("RolledBack", "Failed"):
        return OperationStatus(status="Failed", error=ro.message or f"the rolling update {ro.state.lower()}")
    if st.observedGeneration < generation or st.observedRestartGeneration < restart_generation:
        return OperationStatus(status="InProgress")
    if st.error:
        return OperationStatus(status="Failed", error=st.error)
    if st.phase in ("Steady", "Stopped"):
        return OperationStatus(status="Succeeded")
    return OperationStatus(status="InProgress")


def provisioning_state(record: NGroupRecord) -> str:
    if record.meta.deleting:
        return "Deleting"
    result = operation_result(record, record.meta.generation, record.meta.restartGeneration)
    if result.status in ("Succeeded", "Failed"):
        return result.status
    return {"Create": "Creating", "Update": "Updating", "Start": "Starting", "Restart": "Restarting"}.get(
        record.meta.lastOperation, "Updating")
