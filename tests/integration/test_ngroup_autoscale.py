"""Autoscale with real containers and Corral's own metrics: CPU load on a member adds members; once the
load is gone they are removed after the scale-down delay.

Usage comes from the metrics API (a minute is its finest grain); autoscale reads the samples that arrived
since its last reading, a few seconds ago, so it follows the load within seconds whenever in the minute it
starts and stops.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from corral_server import CorralServer
from groups import exec_sync
from orchestration import (
    emptied_after,
    get_ngroup,
    ngroup_body,
    profile_body,
    put_ngroup,
    put_profile,
    steady,
    wait_until,
)

from corral.cli.client import Client

RG = "corautoscale"


@pytest.fixture(scope="module")
def client(corral: CorralServer) -> Iterator[Client]:
    yield from emptied_after(corral, RG)


def test_cpu_load_adds_members_and_they_leave_after_the_delay(client: Client) -> None:
    put_profile(client, RG, "busy", profile_body("busy", cpu=0.1))
    body = ngroup_body(client, RG, "busy", 1, extra_elastic={"autoscale": {
        "minCount": 1, "maxCount": 3, "targetCpuUtilizationPercent": 50, "scaleDownDelay": "PT5S"}})
    body["properties"]["updateProfile"]["drainPeriod"] = "PT1S"  # no load balancer, no DNS clients: leave soon
    put_ngroup(client, RG, "busy", body)
    ng = wait_until("one member", steady(client, RG, "busy", 1), timeout=60)
    first = ng["properties"]["status"]["members"][0]["name"]
    burn = exec_sync(client, RG, first, "web", "sh", "-c", "while :; do :; done > /dev/null 2>&1 & echo $!")
    assert burn["exitCode"] == 0, burn

    def scaled_up() -> object:
        st = get_ngroup(client, RG, "busy")["properties"]["status"]
        auto = st.get("autoscale") or {}
        return st if auto.get("desiredCount", 1) >= 2 and st["readyCount"] >= 2 else None
    st = wait_until("members added under load", scaled_up, timeout=60, every=1)
    assert st["autoscale"]["cpuUtilizationPercent"] > 50
    assert any(e["name"] == "Autoscaled" for e in st["events"])
    exec_sync(client, RG, first, "web", "kill", burn["stdout"].strip())

    ng = wait_until("back to one member", steady(client, RG, "busy", 1), timeout=60, every=1)
    st = ng["properties"]["status"]
    assert st["autoscale"]["desiredCount"] == 1
    assert any(e["name"] == "Autoscaled" and "scaling down" in e["message"] for e in st["events"]), st["events"]
