"""In-place update by PUT: only what changed restarts; what cannot change in place is a 409."""

from __future__ import annotations

import copy
import time

import pytest
from corral_server import CorralServer, free_port
from groups import container, delete, exec_sync, get, group, put, view, wait_for

from corral.cli.client import ApiError

RG = "it-update"


def _env(name: str, value: str) -> list[dict[str, str]]:
    return [{"name": name, "value": value}]


def _base() -> dict:  # type: ignore[type-arg]
    return group(
        container("upd-a", ["sleep", "3600"], environmentVariables=_env("COLOR", "red")),
        container("upd-b", ["sleep", "3600"], environmentVariables=_env("SIZE", "small")),
        ipAddress={"type": "Public", "ports": [{"port": 80, "publicPort": free_port()}]},
        volumes=[{"name": "v", "emptyDir": {}}],
    )


def _starts(g: dict) -> dict[str, tuple[str, int]]:  # type: ignore[type-arg]
    return {n: (view(g, n)["currentState"]["startTime"], view(g, n)["restartCount"]) for n in ("upd-a", "upd-b")}


@pytest.fixture
def updated(corral: CorralServer):  # type: ignore[no-untyped-def]
    client = corral.client()
    body = _base()
    body["properties"]["containers"][0]["properties"]["ports"] = [{"port": 80}]
    put(client, RG, "upd", body)
    try:
        yield client, body
    finally:
        delete(client, RG, "upd")


def test_changing_one_containers_env_restarts_only_that_container(updated) -> None:  # type: ignore[no-untyped-def]
    client, body = updated
    before = _starts(get(client, RG, "upd"))
    new = copy.deepcopy(body)
    new["properties"]["containers"][1]["properties"]["environmentVariables"] = _env("SIZE", "large")
    put(client, RG, "upd", new)
    g = wait_for(client, RG, "upd", lambda g: view(g, "upd-b")["currentState"]["state"] == "Running"
                 and view(g, "upd-b")["currentState"]["startTime"] != before["upd-b"][0])
    after = _starts(g)
    assert after["upd-a"] == before["upd-a"]  # untouched: same start, no restart
    assert exec_sync(client, RG, "upd", "upd-b", "sh", "-c", "echo $SIZE")["stdout"] == "large\n"
    assert exec_sync(client, RG, "upd", "upd-a", "sh", "-c", "echo $COLOR")["stdout"] == "red\n"
    assert any(e["name"] == "Updating" for e in view(g, "upd-b")["events"])


def test_tags_only_change_restarts_nothing(updated) -> None:  # type: ignore[no-untyped-def]
    client, body = updated
    before = _starts(get(client, RG, "upd"))
    tagged = copy.deepcopy(body)
    tagged["tags"] = {"team": "blue"}
    g = put(client, RG, "upd", tagged)
    assert g["tags"] == {"team": "blue"}
    resp = client.request("PATCH", client.group_path(RG, "upd"), json={"tags": {"team": "green"}})
    assert resp.json()["tags"] == {"team": "green"}
    time.sleep(1.5)  # a few reconcile passes
    assert _starts(get(client, RG, "upd")) == before


def _add_port(p: dict) -> None:  # type: ignore[type-arg]
    p["containers"][0]["properties"]["ports"].append({"port": 81})
    p["ipAddress"]["ports"].append({"port": 81, "publicPort": free_port()})


@pytest.mark.parametrize("change,field", [
    (lambda p: p.update(osType="Windows"), "osType"),
    (lambda p: p["ipAddress"]["ports"][0].update(publicPort=free_port()), "ipAddress"),
    (_add_port, "ipAddress"),
    (lambda p: p.update(volumes=[{"name": "w", "emptyDir": {}}]), "volumes"),
    (lambda p: p.update(sku="Confidential"), "sku"),
])
def test_changes_that_need_a_new_group_are_409_with_a_reason(updated, change, field) -> None:  # type: ignore[no-untyped-def]
    client, body = updated
    before = _starts(get(client, RG, "upd"))
    new = copy.deepcopy(body)
    change(new["properties"])
    with pytest.raises(ApiError) as err:
        client.request("PUT", client.group_path(RG, "upd"), json=new)
    assert err.value.status == 409, err.value.message
    assert f"properties.{field}" in err.value.message and "delete the group" in err.value.message
    assert _starts(get(client, RG, "upd")) == before
