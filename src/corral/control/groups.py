"""Container group operations on desired state: what the API routes call.

Each operation validates, then writes the store with compare-and-swap; the
scheduler and the node agents converge on what was written. Nothing here
touches a host.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel

from corral.errors import Conflict, InvalidRequest, NotFound, VersionConflict
from corral.model.group import ContainerGroup, GroupProperties, check_name, gpu_requests, total_requests
from corral.model.records import GROUPS, NODES, OPERATIONS, GroupMeta, GroupRecord, group_key, status_key
from corral.model.status import GroupStatus
from corral.store.base import ABSENT, Record, Store
from corral.store.update import update_record

OperationKind = Literal["Create", "Update", "Delete", "Start", "Restart"]


class Operation(BaseModel):
    id: str
    kind: OperationKind
    key: str
    uid: str
    generation: int
    restartGeneration: int
    createdAt: datetime


class GroupView(BaseModel):
    """A group's desired state with what its node last reported."""

    key: str
    version: int
    record: GroupRecord
    status: GroupStatus | None


class OperationStatus(BaseModel):
    status: Literal["InProgress", "Succeeded", "Failed", "Canceled"]
    error: str | None = None


# Fields that cannot change in place: the group would need a new sandbox (network, volumes, runtime).
IMMUTABLE = ("osType", "subnetIds", "isolation", "sku", "sysctls")


def volume_shape(group: ContainerGroup) -> list[object]:
    """What of the volumes cannot change in place: all but the files of secret volumes (and their
    permissions), which the node rewrites in the running group (a Kubernetes configMap or secret volume
    kept up to date)."""
    out: list[object] = []
    for v in group.properties.volumes or []:
        dump = v.model_dump(mode="json", exclude_none=True)
        if v.secret is not None:
            dump["secret"] = None
            dump.pop("secretPermissions", None)
        out.append(dump)
    return out


def claims_more(old: GroupProperties, new: GroupProperties) -> bool:
    """Whether ``new`` asks a node for more CPU, memory or GPUs (of any SKU) than ``old`` did."""
    (old_cpu, old_mem), (new_cpu, new_mem) = total_requests(old), total_requests(new)
    old_gpus = gpu_requests(old)
    return (new_cpu > old_cpu + 1e-9 or new_mem > old_mem + 1e-9
            or any(n > old_gpus.get(sku, 0) for sku, n in gpu_requests(new).items()))


# How long stop and restart wait for the node to have done them (a container ignoring SIGTERM gets 10 s).
CARRY_OUT_WAIT = 15.0


class GroupService:
    # Network checks (subnets, Private, dnsNameLabel claims); set by the ControlPlane.
    network_check: Callable[[str, str, str, ContainerGroup], None] | None = None
    # Placement checks (spread tags, zones of the nodes); set by the ControlPlane.
    placement_check: Callable[[ContainerGroup], None] | None = None
    # Takes a ready group over from a standby pool (body names standbyPoolProfile); set by the ControlPlane.
    standby_claim: Callable[[str, str, str, ContainerGroup], Record | None] | None = None

    def __init__(self, store: Store, default_location: str = "local") -> None:
        self.store = store
        self.default_location = default_location

    # reads -----------------------------------------------------------------
    def get(self, sub: str, rg: str, name: str) -> GroupView:
        return self._view(self.record(sub, rg, name))

    def _view(self, rec: Record) -> GroupView:
        return self.view_of(rec, self.status_record(rec))

    def list(self, sub: str, rg: str | None = None) -> list[GroupView]:
        return [self._view(r) for r in self.records(sub, rg)]

    # The stored records themselves, for readers that cache by version (api/readcache.py).
    def record(self, sub: str, rg: str, name: str) -> Record:
        rec = self.store.get(group_key(sub, rg, name))
        if rec is None:
            raise _not_found(rg, name)
        return rec

    def records(self, sub: str, rg: str | None = None) -> list[Record]:
        return self.store.list(f"{GROUPS}{sub.lower()}/" + (f"{rg.lower()}/" if rg else ""))

    def status_record(self, rec: Record) -> Record | None:
        return self.store.get(status_key(rec.value["meta"]["uid"]))

    @staticmethod
    def view_of(rec: Record, st: Record | None) -> GroupView:
        record = GroupRecord.model_validate(rec.value)
        status = GroupStatus.model_validate(st.value) if st else None
        return GroupView(key=rec.key, version=rec.version, record=record, status=status)

    # writes ----------------------------------------------------------------
    def create_or_update(self, sub: str, rg: str, name: str, body: ContainerGroup) -> tuple[GroupView, bool, Operation]:
        try:
            check_name(name, "container group")
        except ValueError as exc:
            raise InvalidRequest(str(exc), target="name") from None
        body.location = body.location or self.default_location
        if self.placement_check is not None:
            self.placement_check(body)
        if self.network_check is not None:
            self.network_check(sub, rg, name, body)
        key = group_key(sub, rg, name)
        for _ in range(5):
            rec = self.store.get(key)
            if rec is None and self.standby_claim is not None:
                claimed = self.standby_claim(sub, rg, name, body)
                if claimed is not None:
                    view = self._view(claimed)
                    return view, True, self._operation("Create", key, view.record.meta)
            if rec is None:
                meta = GroupMeta(
                    uid=uuid.uuid4().hex[:16], subscription=sub, resourceGroup=rg, name=name,
                    createdAt=datetime.now(UTC), lastOperation="Create",
                )
                record = GroupRecord(spec=body, meta=meta)
                expect = ABSENT
                kind: OperationKind = "Create"
            else:
                old = GroupRecord.model_validate(rec.value)
                if old.meta.deleting:
                    raise Conflict(f"container group '{name}' is being deleted; retry when the delete has finished")
                self._check_update(old.spec, body)
                meta = old.meta.model_copy()
                if old.spec.model_dump(mode="json") != body.model_dump(mode="json"):
                    meta.generation += 1
                if (meta.node is not None and meta.desiredState == "Running"
                        and claims_more(old.spec.properties, body.properties)):
                    meta.refit = True  # its node applies it once the scheduler says it still fits there
                meta.lastOperation = "Update"
                record = GroupRecord(spec=body, meta=meta)
                expect = rec.version
                kind = "Update"
            value = record.dump()
            if rec is not None and value == rec.value:
                new = rec  # nothing changed (a re-sent PUT): no write, so no node has anything to do
            else:
                try:
                    new = self.store.put(key, value, expect_version=expect)
                except VersionConflict:
                    continue  # raced with another writer: re-read and re-apply
            op = self._operation(kind, key, record.meta)
            return self._view(new), rec is None, op
        raise Conflict(f"container group '{name}' is changing too often to update; retry")

    @staticmethod
    def _check_update(old: ContainerGroup, new: ContainerGroup) -> None:
        blocker = in_place_blocker(old, new)
        if blocker:
            raise Conflict(blocker)

    def update_tags(self, sub: str, rg: str, name: str, tags: dict[str, str] | None) -> GroupView:
        def apply(r: GroupRecord) -> None:
            r.spec.tags = tags
            if self.placement_check is not None:
                self.placement_check(r.spec)  # a spread constraint names one of the tags
        return self._mutate(sub, rg, name, apply)

    def delete(self, sub: str, rg: str, name: str) -> Operation | None:
        try:
            view = self._mutate(sub, rg, name, self._mark_deleting)
        except NotFound:
            return None
        return self._operation("Delete", view.key, view.record.meta)

    @staticmethod
    def _mark_deleting(r: GroupRecord) -> None:
        r.meta.deleting = True
        r.meta.lastOperation = "Delete"

    def stop(self, sub: str, rg: str, name: str) -> GroupView:
        def apply(r: GroupRecord) -> None:
            r.meta.desiredState = "Stopped"
            r.meta.refit = False  # a stopped group claims nothing: its node need not wait for the scheduler
        return self._mutate(sub, rg, name, apply)

    def wait_carried_out(self, view: GroupView, done: Callable[[GroupStatus], bool],
                         timeout: float = CARRY_OUT_WAIT) -> None:
        """Return once the group's node reports ``done`` (ACI answers stop and restart once they happened),
        at once if no node can (unplaced, NotReady), or after ``timeout`` (the desired state stays written)."""
        key, uid = view.key, view.record.meta.uid
        deadline = time.monotonic() + timeout
        while True:
            rev = self.store.revision()
            rec = self.store.get(key)
            if rec is None or rec.value["meta"]["uid"] != uid:
                return
            record = GroupRecord.model_validate(rec.value)
            node = self.store.get(NODES + record.meta.node) if record.meta.node else None
            if node is None or not node.value.get("ready", True):
                return
            st = self.store.get(status_key(uid))
            status = GroupStatus.model_validate(st.value) if st else None
            if status is not None and status.epoch == record.meta.epoch and done(status):
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            # Woken by the status write; the cap notices rebinding or a node going NotReady.
            self.store.watch(status_key(uid), rev, min(left, 0.5))

    def start(self, sub: str, rg: str, name: str) -> Operation:
        def apply(r: GroupRecord) -> None:
            if r.meta.desiredState == "Stopped" and r.meta.node is not None:
                # A stopped group holds nothing on its node: the scheduler decides whether it fits there again.
                r.meta.refit = True
            r.meta.desiredState = "Running"
            r.meta.restartGeneration += 1
            r.meta.lastOperation = "Start"
        view = self._mutate(sub, rg, name, apply)
        return self._operation("Start", view.key, view.record.meta)

    def restart(self, sub: str, rg: str, name: str) -> Operation:
        def apply(r: GroupRecord) -> None:
            if r.meta.desiredState == "Stopped":
                raise Conflict(f"container group '{name}' is stopped; start it instead of restarting it")
            r.meta.restartGeneration += 1
        view = self._mutate(sub, rg, name, apply)
        return self._operation("Restart", view.key, view.record.meta)

    def restart_container(self, sub: str, rg: str, name: str, container: str) -> GroupView:
        """Corral extension: restart one container; the agent sees the bumped count and restarts only it."""
        def apply(r: GroupRecord) -> None:
            if container not in {c.name for c in r.spec.properties.containers}:
                raise NotFound(f"container '{container}' is not part of container group '{name}'")
            if r.meta.desiredState == "Stopped":
                raise Conflict(f"container group '{name}' is stopped; start it instead of restarting a container")
            r.meta.containerRestarts[container] = r.meta.containerRestarts.get(container, 0) + 1
        return self._mutate(sub, rg, name, apply)

    def _mutate(self, sub: str, rg: str, name: str, apply) -> GroupView:  # type: ignore[no-untyped-def]
        def change(record: GroupRecord | None) -> GroupRecord:
            assert record is not None  # update_record raises `missing` first
            if record.meta.deleting and apply is not self._mark_deleting:
                raise Conflict(f"container group '{name}' is being deleted")
            apply(record)
            return record

        key = group_key(sub, rg, name)
        record, version, _ = update_record(self.store, key, GroupRecord, change, missing=lambda: _not_found(rg, name),
                                           busy=f"container group '{name}' is changing too often; retry")
        return self._view(Record(key=key, value=record.dump(), version=version))

    # long-running operations ----------------------------------------------
    def _operation(self, kind: OperationKind, key: str, meta: GroupMeta) -> Operation:
        op = Operation(
            id=uuid.uuid4().hex, kind=kind, key=key, uid=meta.uid, generation=meta.generation,
            restartGeneration=meta.restartGeneration, createdAt=datetime.now(UTC),
        )
        self.store.put(OPERATIONS + op.id, op.model_dump(mode="json"))
        return op

    def operation_status(self, op_id: str) -> OperationStatus:
        rec = self.store.get(OPERATIONS + op_id)
        if rec is None:
            raise NotFound(f"operation '{op_id}' was not found")
        op = Operation.model_validate(rec.value)
        group = self.store.get(op.key)
        same = group is not None and group.value["meta"]["uid"] == op.uid
        if op.kind == "Delete":
            return OperationStatus(status="InProgress" if same else "Succeeded")
        if not same:
            return OperationStatus(status="Canceled", error="the container group was deleted")
        view = self._view(group)  # type: ignore[arg-type]
        return provisioning_result(view, op)


def in_place_blocker(old: ContainerGroup, new: ContainerGroup) -> str | None:
    """Why ``new`` cannot replace ``old`` on the same group (None: it can, in place)."""
    for field in IMMUTABLE:
        if getattr(old.properties, field) != getattr(new.properties, field):
            return (f"properties.{field} cannot change on an existing container group "
                    f"({getattr(old.properties, field)} -> {getattr(new.properties, field)}); "
                    "delete the group and create it again")
    if volume_shape(old) != volume_shape(new):
        return (f"properties.volumes cannot change on an existing container group ({old.properties.volumes} -> "
                f"{new.properties.volumes}), except the files of secret volumes; delete the group and create it "
                "again")

    def addr(g: ContainerGroup) -> object:
        ip = g.properties.ipAddress
        return None if ip is None else (ip.type, sorted((p.port, p.protocol, p.publicPort) for p in ip.ports))
    if addr(old) != addr(new):
        return ("properties.ipAddress type and ports cannot change on an existing container group (the network "
                "sandbox is built with them); delete the group and create it again")
    if old.location and new.location and old.location.lower() != new.location.lower():
        return f"location cannot change on an existing container group ({old.location} -> {new.location})"
    return None


def _not_found(rg: str, name: str) -> NotFound:
    return NotFound(f"The Resource 'Microsoft.ContainerInstance/containerGroups/{name}' under resource group "
                    f"'{rg}' was not found.")


def provisioning_result(view: GroupView, op: Operation | None = None) -> OperationStatus:
    """Whether the node has carried out the last change of the group."""
    meta, st = view.record.meta, view.status
    if st is None:
        return OperationStatus(status="InProgress")
    if st.provisioningError:
        return OperationStatus(status="Failed", error=st.provisioningError)
    generation = op.generation if op else meta.generation
    restart = op.restartGeneration if op else meta.restartGeneration
    if st.observedGeneration < generation or st.observedRestartGeneration < restart:
        return OperationStatus(status="InProgress")
    if meta.desiredState == "Stopped":
        return OperationStatus(status="Succeeded")
    if st.state in ("Running", "Succeeded", "Failed"):
        return OperationStatus(status="Succeeded")
    names = [c.name for c in view.record.spec.properties.containers]
    if names and all(n in st.containers and (st.containers[n].currentState.state != "Waiting"
                                              or st.containers[n].restartCount > 0) for n in names):
        return OperationStatus(status="Succeeded")  # every container started once (some crash-loop)
    return OperationStatus(status="InProgress")


def provisioning_state(view: GroupView) -> str:
    meta = view.record.meta
    if meta.deleting:
        return "Deleting"
    result = provisioning_result(view)
    if result.status == "Succeeded":
        return "Succeeded"
    if result.status == "Failed":
        return "Failed"
    if view.status is None or meta.node is None:
        return "Pending"
    return {"Create": "Creating", "Update": "Updating", "Start": "Starting"}.get(meta.lastOperation, "Creating")
