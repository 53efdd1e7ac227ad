"""Test helper: groups of one resource group on a real store, written through the GroupService as the API would,
and released through the link as their node would. A subclass drives the controllers (``pump``)."""

from __future__ import annotations

from typing import Any

from corral.control.groups import GroupService
from corral.link.local import LocalLink
from corral.model.group import ContainerGroup
from corral.model.records import GroupRecord, group_key, status_key
from corral.model.status import GroupStatus
from corral.store.sqlite import SqliteStore

SUB, RG = "sub", "rg"


class GroupsOnStore:
    store: SqliteStore
    groups: GroupService
    link: LocalLink

    def pump(self) -> None:
        raise NotImplementedError

    def create(self, name: str, cpu: float = 1, mem: float = 1, tags: dict[str, str] | None = None,
               **props: Any) -> None:
        body = ContainerGroup.model_validate({"tags": tags, "properties": {"containers": [{"name": "c", "properties": {
            "image": "x", "resources": {"requests": {"cpu": cpu, "memoryInGB": mem}}}}],
            **{k: v for k, v in props.items() if v is not None}}})
        self.groups.create_or_update(SUB, RG, name, body)
        self.pump()

    def record(self, name: str) -> GroupRecord:
        rec = self.store.get(group_key(SUB, RG, name))
        assert rec is not None
        return GroupRecord.model_validate(rec.value)

    def node_of(self, name: str) -> str | None:
        return self.record(name).meta.node

    def status(self, name: str) -> GroupStatus:
        rec = self.store.get(status_key(self.record(name).meta.uid))
        assert rec is not None
        return GroupStatus.model_validate(rec.value)

    def gone(self, name: str) -> None:
        """The group is deleted and its node has released it (what the agent does)."""
        rec = self.record(name)
        self.groups.delete(SUB, RG, name)
        self.link.release(group_key(SUB, RG, name), rec.meta.uid)
        self.pump()
