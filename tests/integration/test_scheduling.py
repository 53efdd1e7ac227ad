"""Placement on the single-node `corral up`: affinity, anti-affinity and GPU requests are accepted, and a
group they cannot be met for stays Pending with the reason (and is placed once they can); bad placement
input is a 400 naming the field; the CLI flags round-trip through export and create --file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from corral_server import CorralServer
from groups import container, delete, get, group, put, wait_for

from corral.cli.client import ApiError, Client

RG = "it-sched"


def pending_with(client: Client, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """Create a group that cannot be placed: the operation fails with the reason, the group stays Pending."""
    resp = client.request("PUT", client.group_path(RG, name), json=body)
    result = client.wait_operation(resp, timeout=30)
    assert result["status"] == "Failed", result
    g = get(client, RG, name)
    assert g["properties"]["instanceView"]["state"] == "Pending"
    events = [e for e in g["properties"]["instanceView"]["events"] if e["name"] == "FailedScheduling"]
    assert len(events) == 1 and events[0]["message"] == result["error"]["message"]
    return g


def test_gpu_and_affinity_requests_are_reported_and_placed_when_they_can_be(corral: CorralServer) -> None:
    client = corral.client()
    gpu = group(container("cuda", ["sleep", "3600"], resources={"requests": {
        "cpu": 0.1, "memoryInGB": 0.1, "gpu": {"count": 1, "sku": "V100"}}}))
    near_db = group(container("web", ["sleep", "3600"]),
                    placement={"affinity": [{"tags": {"app": "db"}, "topologyKey": "node"}]})
    away_db = group(container("batch", ["sleep", "3600"]),
                    placement={"antiAffinity": [{"tags": {"app": "db"}, "topologyKey": "node"}]})
    try:
        g = pending_with(client, "cuda", gpu)
        assert g["properties"]["containers"][0]["properties"]["resources"]["requests"]["gpu"] == {
            "count": 1, "sku": "V100"}
        assert g["properties"]["instanceView"]["events"][-1]["message"] == (
            "0/1 nodes are available: 1 insufficient gpu V100")
        g = pending_with(client, "near-db", near_db)
        assert g["properties"]["placement"] == {"affinity": [{"tags": {"app": "db"}, "topologyKey": "node",
                                                               "required": True}]}
        assert "1 affinity not satisfied" in g["properties"]["instanceView"]["events"][-1]["message"]
        # The group it wants to be near arrives: it is placed beside it and runs.
        db = group(container("db", ["sleep", "3600"]))
        db["tags"] = {"app": "db"}
        put(client, RG, "db", db)
        wait_for(client, RG, "near-db", lambda g: g["properties"]["instanceView"]["state"] == "Running")
        # Anti-affinity: the only node holds a db group.
        g = pending_with(client, "away-db", away_db)
        assert "1 anti-affinity conflict" in g["properties"]["instanceView"]["events"][-1]["message"]
    finally:
        for name in ("cuda", "near-db", "away-db", "db"):
            delete(client, RG, name)


@pytest.mark.parametrize(("mutate", "target", "reason"), [
    (lambda b: b["properties"].update(placement={"affinity": [{"tags": {"app": "x"}, "topologyKey": "rack"}]}),
     "properties.placement.affinity[0].topologyKey", "'node' or 'zone'"),
    (lambda b: b["properties"].update(placement={"antiAffinity": [{"tags": {}}]}),
     "properties.placement.antiAffinity[0].tags", "at least 1"),
    (lambda b: b.update(zones=["1"]), "zones", "no registered node has a zone"),
    (lambda b: b["properties"]["containers"][0]["properties"]["resources"]["requests"].update(
        gpu={"count": 100, "sku": "V100"}), "requests.gpu.count", "less than or equal to 16"),
    (lambda b: b["properties"].update(placement={"spread": [{"tag": "ngroup"}]}),
     "properties.placement.spread[0].tag", "no tag 'ngroup'"),
])
def test_bad_placement_input_is_a_400_naming_the_field(corral: CorralServer, mutate, target: str,  # type: ignore[no-untyped-def]
                                                        reason: str) -> None:
    client = corral.client()
    body = group(container("bad", ["true"]))
    mutate(body)
    with pytest.raises(ApiError) as exc:
        client.request("PUT", client.group_path(RG, "bad"), json=body)
    assert exc.value.status == 400 and target in str(exc.value) and reason in str(exc.value)
    with pytest.raises(ApiError) as missing:
        client.request("GET", client.group_path(RG, "bad"))
    assert missing.value.status == 404  # nothing was stored


def test_cli_placement_flags_round_trip_through_export(corral: CorralServer, tmp_path: Path) -> None:
    flags = ["--tags", "ngroup=web", "--node-selector", "disk=ssd", "--affinity", "app=db@zone",
             "--anti-affinity", "app=web:40", "--spread", "ngroup@node:2"]
    try:
        out = corral.cli("container", "create", "-g", RG, "-n", "flags", "--image", "corral/busybox:latest",
                         "--cpu", "0.1", "--memory", "0.1", *flags, "--no-wait", "-o", "json").stdout
        placement = json.loads(out)["properties"]["placement"]
        assert placement == {
            "nodeSelector": {"disk": "ssd"},
            "affinity": [{"tags": {"app": "db"}, "topologyKey": "zone", "required": True}],
            "antiAffinity": [{"tags": {"app": "web"}, "topologyKey": "node", "required": False, "weight": 40}],
            "spread": [{"tag": "ngroup", "topologyKey": "node", "maxSkew": 2, "whenUnsatisfiable": "DoNotSchedule"}],
        }
        exported = tmp_path / "flags.yaml"
        corral.cli("container", "export", "-g", RG, "-n", "flags", "-f", str(exported))
        doc = yaml.safe_load(exported.read_text())
        assert doc["properties"]["placement"] == placement and doc["tags"] == {"ngroup": "web"}
        assert "instanceView" not in doc["properties"]
        doc["name"] = "copy"
        exported.write_text(yaml.safe_dump(doc))
        corral.cli("container", "create", "-g", RG, "-f", str(exported), "--no-wait")
        copy = get(corral.client(), RG, "copy")
        assert copy["properties"]["placement"] == placement
        # Pending on the one node: it has no ssd label (the first reason the node fails).
        reason = wait_for(corral.client(), RG, "copy", lambda g: g["properties"]["instanceView"]["events"])
        assert "1 node selector mismatch" in reason["properties"]["instanceView"]["events"][-1]["message"]
    finally:
        delete(corral.client(), RG, "flags")
        delete(corral.client(), RG, "copy")
