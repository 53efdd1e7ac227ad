"""Container group profiles on desired state: revisions, and groups made from a profile.

A profile lives at ``/profiles/<sub>/<rg>/<name>``; each revision whole at
``/profilerevs/<sub>/<rg>/<name>/<revision>``. A PUT that changes the template
writes the profile and its new revision in one transaction, so a revision a
profile names always exists.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from corral.errors import Conflict, InvalidRequest, NotFound, VersionConflict
from corral.model.armids import (
    NGROUPS,
    PROFILE_REVISIONS,
    PROFILE_TYPE,
    PROFILES,
    STANDBY_POOLS,
    ResourceRef,
    parse_resource_id,
    resource_key,
    same_id,
)
from corral.model.group import check_name
from corral.model.profile import (
    REFERENCE_FIELDS,
    ProfileMeta,
    ProfileRecord,
    ProfileSpec,
    RevisionRecord,
    merge_properties,
    template_properties,
)
from corral.store.base import ABSENT, Delete, Op, Put, Store


def revision_key(sub: str, rg: str, name: str, revision: int) -> str:
    return f"{resource_key(PROFILE_REVISIONS, sub, rg, name)}/{revision:08d}"


def _not_found(rg: str, name: str) -> NotFound:
    return NotFound(f"The Resource '{PROFILE_TYPE}/{name}' under resource group '{rg}' was not found.")


def _template(spec: ProfileSpec) -> dict[str, Any]:
    return template_properties(spec.properties.model_dump(mode="json", exclude_none=True))


class ProfileService:
    def __init__(self, store: Store, default_location: str = "local") -> None:
        self.store = store
        self.default_location = default_location

    # reads -----------------------------------------------------------------
    def get(self, sub: str, rg: str, name: str) -> ProfileRecord:
        rec = self.store.get(resource_key(PROFILES, sub, rg, name))
        if rec is None:
            raise _not_found(rg, name)
        return ProfileRecord.model_validate(rec.value)

    def list(self, sub: str, rg: str | None = None) -> list[ProfileRecord]:
        prefix = f"{PROFILES}{sub.lower()}/" + (f"{rg.lower()}/" if rg else "")
        return [ProfileRecord.model_validate(r.value) for r in self.store.list(prefix)]

    def revision(self, sub: str, rg: str, name: str, revision: int) -> RevisionRecord:
        rec = self.store.get(revision_key(sub, rg, name, revision))
        if rec is None:
            self.get(sub, rg, name)  # 404 for the profile itself first
            raise NotFound(f"container group profile '{name}' has no revision {revision}")
        return RevisionRecord.model_validate(rec.value)

    def revisions(self, sub: str, rg: str, name: str) -> list[RevisionRecord]:
        self.get(sub, rg, name)
        prefix = resource_key(PROFILE_REVISIONS, sub, rg, name) + "/"
        return [RevisionRecord.model_validate(r.value) for r in self.store.list(prefix)]

    def by_id(self, profile_id: str, revision: int | None, target: str) -> tuple[ResourceRef, RevisionRecord]:
        """The revision a reference names (None: the latest); 400 naming ``target`` when it does not exist."""
        try:
            ref = parse_resource_id(profile_id, PROFILE_TYPE)
        except ValueError as exc:
            raise InvalidRequest(str(exc), target=f"{target}.id") from None
        try:
            record = self.get(*ref)
            rev = self.revision(*ref, revision or record.meta.revision)
        except NotFound as exc:
            raise InvalidRequest(f"{target}: {exc.message}", target=target) from None
        return ref, rev

    # writes ----------------------------------------------------------------
    def put(self, sub: str, rg: str, name: str, spec: ProfileSpec) -> tuple[ProfileRecord, bool]:
        try:
            check_name(name, "container group profile")
        except ValueError as exc:
            raise InvalidRequest(str(exc), target="name") from None
        spec.location = spec.location or self.default_location
        key = resource_key(PROFILES, sub, rg, name)
        for _ in range(10):
            rec = self.store.get(key)
            now = datetime.now(UTC)
            if rec is None:
                meta = ProfileMeta(uid=uuid.uuid4().hex[:16], subscription=sub, resourceGroup=rg, name=name,
                                   createdAt=now)
                new_revision = True
            else:
                old = ProfileRecord.model_validate(rec.value)
                meta = old.meta.model_copy(deep=True)
                new_revision = _template(old.spec) != _template(spec) or old.spec.zones != spec.zones
                if new_revision:
                    meta.revision = max(meta.revisions, default=0) + 1
                    meta.revisions.append(meta.revision)
            record = ProfileRecord(spec=spec, meta=meta)
            ops: list[Op] = [Put(key=key, value=record.dump(), expect_version=rec.version if rec else ABSENT)]
            if new_revision:
                ops.append(Put(key=revision_key(sub, rg, name, meta.revision),
                               value=RevisionRecord(revision=meta.revision, createdAt=now, spec=spec).dump()))
            try:
                self.store.txn(ops)
            except VersionConflict:
                continue
            return record, rec is None
        raise Conflict(f"container group profile '{name}' is changing too often to update; retry")

    def update_tags(self, sub: str, rg: str, name: str, tags: dict[str, str] | None) -> ProfileRecord:
        key = resource_key(PROFILES, sub, rg, name)
        for _ in range(10):
            rec = self.store.get(key)
            if rec is None:
                raise _not_found(rg, name)
            record = ProfileRecord.model_validate(rec.value)
            record.spec.tags = tags
            try:
                self.store.put(key, record.dump(), expect_version=rec.version)
            except VersionConflict:
                continue
            return record
        raise Conflict(f"container group profile '{name}' is changing too often to update; retry")

    def delete(self, sub: str, rg: str, name: str) -> bool:
        key = resource_key(PROFILES, sub, rg, name)
        rec = self.store.get(key)
        if rec is None:
            return False
        pid = f"/subscriptions/{sub}/resourceGroups/{rg}/providers/{PROFILE_TYPE}/{name}"
        users = self._users(pid)
        if users:
            raise Conflict(f"container group profile '{name}' is used by {', '.join(users)}; delete or change "
                           "them first")
        ops: list[Op] = [Delete(key=key, expect_version=rec.version)]
        ops += [Delete(key=r.key) for r in self.store.list(resource_key(PROFILE_REVISIONS, sub, rg, name) + "/")]
        try:
            self.store.txn(ops)
        except VersionConflict:
            raise Conflict(f"container group profile '{name}' changed while it was being deleted; retry") from None
        return True

    def _users(self, profile_id: str) -> list[str]:
        out = []
        for rec in self.store.list(NGROUPS):
            for stub in rec.value.get("spec", {}).get("properties", {}).get("containerGroupProfiles", []):
                if same_id((stub.get("resource") or {}).get("id"), profile_id) and not rec.value["meta"].get(
                        "deleting"):
                    out.append(f"NGroup '{rec.value['meta']['name']}'")
        for rec in self.store.list(STANDBY_POOLS):
            ref = rec.value.get("spec", {}).get("properties", {}).get("containerGroupProperties", {})
            if same_id((ref.get("containerGroupProfile") or {}).get("id"), profile_id):
                out.append(f"standby pool '{rec.value['meta']['name']}'")
        return out

    # container groups made from a profile --------------------------------------
    def expand_group_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """A container group PUT body naming ``properties.containerGroupProfile {id, revision}``, with the
        revision's properties filled in under what the body sets itself; other bodies unchanged."""
        props = body.get("properties")
        if not isinstance(props, dict) or not props.get("containerGroupProfile"):
            return body
        ref_body = props["containerGroupProfile"]
        if not isinstance(ref_body, dict) or not ref_body.get("id"):
            raise InvalidRequest("properties.containerGroupProfile needs an id",
                                 target="properties.containerGroupProfile.id")
        revision = ref_body.get("revision")
        if revision is not None and (not isinstance(revision, int) or revision < 1):
            raise InvalidRequest("properties.containerGroupProfile.revision must be a positive integer",
                                 target="properties.containerGroupProfile.revision")
        _, rev = self.by_id(str(ref_body["id"]), revision, "properties.containerGroupProfile")
        template = rev.spec.properties.model_dump(mode="json", exclude_none=True)
        overrides = {k: v for k, v in props.items() if k not in REFERENCE_FIELDS}
        try:
            merged = merge_properties(template, overrides)
        except ValueError as exc:
            raise InvalidRequest(str(exc), target="properties.containers") from None
        for k in REFERENCE_FIELDS:
            if k in props and k != "isCreatedFromStandbyPool":
                merged[k] = props[k]
        merged["containerGroupProfile"] = {"id": ref_body["id"], "revision": rev.revision}
        out = dict(body)
        out["properties"] = merged
        out.setdefault("location", rev.spec.location)
        if out.get("zones") is None and rev.spec.zones:
            out["zones"] = rev.spec.zones
        return out

