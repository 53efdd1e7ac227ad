"""Placement input: the extension fields' validation (400s naming the field), the create-time checks
against the nodes, and the CLI's placement flags."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic import ValidationError

from corral.api.errors import validation_response
from corral.cli.placement import apply_flags, spread, term
from corral.control.groups import GroupService
from corral.control.placementcheck import GroupPlacementCheck
from corral.errors import InvalidRequest
from corral.link.local import LocalLink
from corral.model.group import ContainerGroup
from corral.model.records import NodeInfo
from corral.store.sqlite import SqliteStore


def body(placement: dict[str, Any] | None = None, gpu: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    req: dict[str, Any] = {"cpu": 1, "memoryInGB": 1}
    if gpu is not None:
        req["gpu"] = gpu
    props: dict[str, Any] = {"containers": [{"name": "app", "properties": {"image": "x", "resources": {
        "requests": req}}}]}
    if placement is not None:
        props["placement"] = placement
    return {"location": "local", "properties": props, **top}


def messages(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ValidationError) as exc:
        ContainerGroup.model_validate(doc)
    resp = validation_response(list(exc.value.errors()))
    assert resp.status_code == 400
    return [d["message"] for d in json.loads(resp.body)["error"]["details"]]


@pytest.mark.parametrize(("doc", "field", "reason"), [
    (body({"affinity": [{"tags": {"app": "db"}, "topologyKey": "rack"}]}),
     "properties.placement.affinity[0].topologyKey", "'node' or 'zone'"),
    (body({"antiAffinity": [{"tags": {}}]}), "properties.placement.antiAffinity[0].tags", "at least 1"),
    (body({"affinity": [{"tags": {"app": "db"}, "weight": 5}]}), "properties.placement.affinity[0]",
     "weight applies to preferred terms"),
    (body({"affinity": [{"tags": {"app": "db"}, "required": False, "weight": 500}]}),
     "properties.placement.affinity[0].weight", "less than or equal to 100"),
    (body({"spread": [{"tag": "f", "maxSkew": 0}]}), "properties.placement.spread[0].maxSkew", "greater than"),
    (body({"spread": [{"tag": "f", "topologyKey": "rack"}]}), "properties.placement.spread[0].topologyKey", "zone"),
    (body({"nodeSelector": {"bad key!": "x"}}), "properties.placement.nodeSelector", "not a valid label"),
    (body(gpu={"count": 0, "sku": "V100"}), "requests.gpu.count", "greater than or equal to 1"),
    (body(gpu={"count": -2, "sku": "V100"}), "requests.gpu.count", "greater than or equal to 1"),
    (body(gpu={"count": 1000, "sku": "V100"}), "requests.gpu.count", "less than or equal to 16"),
    (body(gpu={"count": 1, "sku": "no such sku!"}), "requests.gpu.sku", "not a GPU SKU"),
    (body(zones=[""]), "zones[0]", "at least 1 character"),
])
def test_bad_placement_input_names_the_field(doc: dict[str, Any], field: str, reason: str) -> None:
    found = messages(doc)
    assert any(field in m and reason in m for m in found), found


def test_placement_fields_round_trip_through_the_model() -> None:
    placement = {
        "nodeSelector": {"disk": "ssd"},
        "affinity": [{"tags": {"app": "db"}, "topologyKey": "zone", "required": True}],
        "antiAffinity": [{"tags": {"app": "web"}, "topologyKey": "node", "required": False, "weight": 30}],
        "spread": [{"tag": "ngroup", "topologyKey": "zone", "maxSkew": 1, "whenUnsatisfiable": "DoNotSchedule"}],
    }
    g = ContainerGroup.model_validate(body(placement, gpu={"count": 2, "sku": "V100"}, zones=["1"],
                                           tags={"ngroup": "web"}))
    out = g.model_dump(mode="json", exclude_none=True)
    assert out["properties"]["placement"] == placement and out["zones"] == ["1"]
    assert out["properties"]["containers"][0]["properties"]["resources"]["requests"]["gpu"] == {
        "count": 2, "sku": "V100"}


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(tmp_path / "db")
    for name, zone in (("a", "1"), ("b", "2"), ("c", None)):
        LocalLink(s).register(NodeInfo(name=name, address="10.0.0.1", cpu=1, memoryGB=1,
                                       lastHeartbeat=datetime.now(UTC), zone=zone))
    return s


def test_zones_no_node_is_in_are_refused(store: SqliteStore) -> None:
    check = GroupPlacementCheck(store)
    check.check(ContainerGroup.model_validate(body(zones=["2"])))
    with pytest.raises(InvalidRequest) as exc:
        check.check(ContainerGroup.model_validate(body(zones=["1", "3"])))
    assert exc.value.target == "zones" and "no node is in zone '3'" in exc.value.message
    assert "zones of the nodes: 1, 2" in exc.value.message
    # A node of zone 3 joins: the next create sees it at once (a refusal re-reads the nodes).
    LocalLink(store).register(NodeInfo(name="d", address="10.0.0.1", cpu=1, memoryGB=1,
                                       lastHeartbeat=datetime.now(UTC), zone="3"))
    check.check(ContainerGroup.model_validate(body(zones=["3"])))


def test_a_spread_needs_its_family_tag_on_the_group_also_after_a_tag_change(store: SqliteStore) -> None:
    svc = GroupService(store)
    svc.placement_check = GroupPlacementCheck(store).check
    fam = {"spread": [{"tag": "ngroup", "topologyKey": "node"}]}
    with pytest.raises(InvalidRequest) as exc:
        svc.create_or_update("s", "rg", "g", ContainerGroup.model_validate(body(fam)))
    assert exc.value.target == "properties.placement.spread[0].tag" and "no tag 'ngroup'" in exc.value.message
    svc.create_or_update("s", "rg", "g", ContainerGroup.model_validate(body(fam, tags={"ngroup": "web"})))
    with pytest.raises(InvalidRequest):
        svc.update_tags("s", "rg", "g", {"other": "x"})
    assert svc.get("s", "rg", "g").record.spec.tags == {"ngroup": "web"}  # nothing stored was lost


def test_cli_placement_flags() -> None:
    assert term("app=db,tier=a@zone", "--affinity") == {"tags": {"app": "db", "tier": "a"}, "topologyKey": "zone"}
    assert term("app=cache:50", "--affinity") == {"tags": {"app": "cache"}, "topologyKey": "node",
                                                  "required": False, "weight": 50}
    assert spread("ngroup@node:2", False) == {"tag": "ngroup", "topologyKey": "node", "maxSkew": 2}
    assert spread("ngroup", True) == {"tag": "ngroup", "topologyKey": "zone", "maxSkew": 1,
                                      "whenUnsatisfiable": "ScheduleAnyway"}
    for bad in ("app=db@rack", "app@node", "app=db:x"):
        with pytest.raises(typer.BadParameter):
            term(bad, "--affinity")
    doc = body({"nodeSelector": {"disk": "hdd"}}, tags={"team": "a"})
    apply_flags(doc, ["1"], ["ngroup=web"], ["disk=ssd"], None, ["app=web@node"], ["ngroup"], False)
    assert doc["zones"] == ["1"] and doc["tags"] == {"team": "a", "ngroup": "web"}
    assert doc["properties"]["placement"] == {
        "nodeSelector": {"disk": "ssd"}, "antiAffinity": [{"tags": {"app": "web"}, "topologyKey": "node"}],
        "spread": [{"tag": "ngroup", "topologyKey": "zone", "maxSkew": 1}]}
    ContainerGroup.model_validate(doc)
