"""Standby pools with real containers: the pool fills, a create takes a ready group over (running faster
than a cold create, its containers never restarted), and the pool refills."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from corral_server import CorralServer
from orchestration import emptied_after, profile_body, profile_id, put_profile, rg_path, wait_until

from corral.cli.client import ApiError, Client

RG = "corstandby"


@pytest.fixture(scope="module")
def client(corral: CorralServer) -> Iterator[Client]:
    yield from emptied_after(corral, RG)


def pool_path(client: Client, name: str) -> str:
    return f"{rg_path(client, RG, 'Microsoft.StandbyPool')}/standbyContainerGroupPools/{name}"


def pooled(client: Client) -> dict[str, dict[str, Any]]:
    return {g["name"]: g for g in client.request("GET", client.group_path(RG)).json()["value"]
            if (g.get("tags") or {}).get("corral-standby-pool") and g["properties"]["provisioningState"] != "Deleting"}


def counts(client: Client) -> dict[str, int]:
    view = client.request("GET", pool_path(client, "pool") + "/runtimeViews/latest").json()
    return {c["state"]: c["count"] for c in view["properties"]["instanceCountSummary"][0]["instanceCountsByState"]}


def create(client: Client, name: str, standby: bool, strict: bool = False) -> tuple[float, dict[str, Any]]:
    """Create a group from the profile; seconds until the API says it is Running, and the group."""
    props: dict[str, Any] = {"containerGroupProfile": {"id": profile_id(client, RG, "web"), "revision": 1}}
    if standby:
        props["standbyPoolProfile"] = {"id": pool_path(client, "pool"),
                                       **({"failContainerGroupCreateOnReuseFailure": True} if strict else {})}
    start = time.monotonic()
    resp = client.request("PUT", client.group_path(RG, name), json={"location": "local", "properties": props})
    assert client.wait_operation(resp, timeout=60)["status"] == "Succeeded"
    while True:
        g = client.request("GET", client.group_path(RG, name)).json()
        if g["properties"]["instanceView"]["state"] == "Running":
            return time.monotonic() - start, g
        time.sleep(0.005)


def test_a_create_takes_a_ready_group_from_the_pool_and_the_pool_refills(client: Client) -> None:
    put_profile(client, RG, "web", profile_body("pooled"))
    resp = client.request("PUT", pool_path(client, "pool"), json={"location": "local", "properties": {
        "elasticityProfile": {"maxReadyCapacity": 3, "refillPolicy": "always"},
        "containerGroupProperties": {"containerGroupProfile": {"id": profile_id(client, RG, "web")}}}})
    assert resp.status_code == 201 and resp.json()["properties"]["provisioningState"] == "Succeeded"
    assert resp.json()["properties"]["containerGroupProperties"]["containerGroupProfile"]["revision"] == 1
    wait_until("3 ready", lambda: counts(client) == {"Running": 3, "Creating": 0, "Deleting": 0}, timeout=60)
    before = pooled(client)

    warm, claimed = create(client, "claimed", standby=True)
    props = claimed["properties"]
    assert props["isCreatedFromStandbyPool"] is True and claimed["tags"] == {}
    taken = [n for n in before if n not in pooled(client)]
    assert len(taken) == 1
    # The same containers: started when the pooled group started, never restarted.
    pooled_view = before[taken[0]]["properties"]["containers"][0]["properties"]["instanceView"]
    view = props["containers"][0]["properties"]["instanceView"]
    assert view["currentState"]["startTime"] == pooled_view["currentState"]["startTime"]
    assert view["restartCount"] == 0 and view["currentState"]["state"] == "Running"

    cold, plain = create(client, "cold", standby=False)
    assert "isCreatedFromStandbyPool" not in plain["properties"]
    assert warm < cold, f"claimed in {warm:.3f} s, cold in {cold:.3f} s"

    wait_until("the pool refilled", lambda: counts(client)["Running"] == 3 and len(pooled(client)) == 3, timeout=60)
    assert set(pooled(client)) - set(before)  # a new one took the taken one's place
    client.request("DELETE", client.group_path(RG, "claimed"))

    # Emptied (capacity 0): a strict create fails without changing anything, a lenient one starts cold.
    client.request("PATCH", pool_path(client, "pool"), json={"properties": {"elasticityProfile": {
        "maxReadyCapacity": 0}}})
    wait_until("the pool is empty", lambda: not pooled(client), timeout=30)
    with pytest.raises(ApiError) as empty:
        create(client, "strict", standby=True, strict=True)
    assert empty.value.status == 409 and empty.value.code == "StandbyPoolEmpty"
    with pytest.raises(ApiError):
        client.request("GET", client.group_path(RG, "strict"))
    _, lenient = create(client, "lenient", standby=True)
    assert "isCreatedFromStandbyPool" not in lenient["properties"]
