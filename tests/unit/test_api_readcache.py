"""Rendered groups are cached by the versions of their records: a change of either shows at once."""

from __future__ import annotations

import json
from pathlib import Path

from corral.api.readcache import RenderedGroups
from corral.control.groups import GroupService
from corral.model.group import ContainerGroup
from corral.model.records import status_key
from corral.model.status import GroupStatus
from corral.store.sqlite import SqliteStore

SUB = "00000000-0000-0000-0000-000000000001"


def body(secret: str = "s3cret") -> ContainerGroup:
    return ContainerGroup.model_validate({"location": "local", "properties": {"containers": [{
        "name": "app", "properties": {
            "image": "corral/busybox:latest",
            "environmentVariables": [{"name": "TOKEN", "secureValue": secret}],
            "resources": {"requests": {"cpu": 0.1, "memoryInGB": 0.1}}}}]}})


def test_cached_body_follows_group_and_status_versions(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.db")
    svc, cache = GroupService(store), RenderedGroups()
    svc.create_or_update(SUB, "rg", "g1", body())

    def get() -> dict:
        return json.loads(cache.body(svc, svc.record(SUB, "rg", "g1"), "corral.local"))

    first = get()
    assert first["properties"]["instanceView"]["state"] == "Pending"
    assert "s3cret" not in json.dumps(first)  # secrets stay out of the cache too
    assert get() == first and cache.hits == 1

    uid = svc.record(SUB, "rg", "g1").value["meta"]["uid"]
    store.put(status_key(uid), GroupStatus(uid=uid, node="n1", state="Running").model_dump(mode="json"))
    assert get()["properties"]["instanceView"]["state"] == "Running"  # a new status version

    svc.update_tags(SUB, "rg", "g1", {"team": "a"})
    assert get()["tags"] == {"team": "a"}  # a new group version
    listing = json.loads(cache.listing(svc, svc.records(SUB, "rg"), "corral.local"))
    assert [g["name"] for g in listing["value"]] == ["g1"] and listing["value"][0]["tags"] == {"team": "a"}
    store.close()
