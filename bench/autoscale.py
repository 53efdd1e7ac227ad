"""Autoscale's reaction to CPU load, beside the signal it read before (the minute's average), in one run.

    .venv/bin/python bench/autoscale.py [--offset 30]

An NGroup of one member (busybox, 0.1 CPU) with autoscale (1..3 members, target CPU 50 %, scaleDownDelay
PT5S). A busy loop starts in the member --offset seconds into a minute (it has run, idle, since before
that minute began), and stops once a second member serves. Rows:
  recent samples    what autoscale does now: the samples that arrived since its last reading
                    (status.autoscale.desiredCount, as the orchestrator reports it)
  minute average    what it read before: the average of the minute in progress (the metrics API's last
                    PT1M bucket), put through the same rule by this script from the same API, polled
                    alongside; its scale-down is when that rule first wants fewer members, plus the delay
Columns: seconds from the load's start until more members are asked for, and from the load's stop until
one member is asked for again (from the members autoscale had then, for both). Needs root; removes what it made.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from corral_server import running_corral  # noqa: E402
from groups import exec_sync  # noqa: E402
from orchestration import get_ngroup, ngroup_body, profile_body, put_ngroup, put_profile, steady, wait_until  # noqa: E402

from corral.cli.client import Client  # noqa: E402
from corral.model.ngroup import Autoscale  # noqa: E402
from corral.orchestrator.autoscale import Usage, average, requests_of, wanted  # noqa: E402

RG = "corbenchscale"
SPEC = {"minCount": 1, "maxCount": 3, "targetCpuUtilizationPercent": 50, "scaleDownDelay": "PT5S"}


def minute_average_wants(client: Client, spec: Autoscale, current: int, only: str | None) -> int | None:
    """Members the old signal asks for: each serving member's CpuUsage average over the minute in progress
    (``only``: that member's alone)."""
    st = get_ngroup(client, RG, "busy")["properties"]["status"]
    usages = []
    for m in st["members"]:
        if not m["inService"] or only not in (None, m["name"]):
            continue
        group = client.request("GET", client.group_path(RG, m["name"])).json()
        body = client.request("GET", f"{group['id']}/providers/Microsoft.Insights/metrics", params={
            "api-version": "2018-01-01", "metricnames": "CpuUsage", "aggregation": "Average", "timespan": "PT2M",
            "interval": "PT1M"}).json()
        points = [p for s in body["value"][0]["timeseries"] for p in s["data"] if p.get("average") is not None]
        if points:
            cores, _ = requests_of(group)
            last = max(points, key=lambda p: p["timeStamp"])["average"]
            usages.append(Usage(cpu_percent=last / 1000 / cores * 100))
    return wanted(spec, current, average(usages))


def autoscale_count(client: Client) -> int:
    auto = get_ngroup(client, RG, "busy")["properties"]["status"].get("autoscale") or {}
    return int(auto.get("desiredCount", 1))


def race(client: Client, spec: Autoscale, current: int, done: Any, timeout: float,
         only: str | None = None) -> tuple[float, float]:
    """Seconds until autoscale's count, and the members the old signal asks for from ``current``, each meet
    ``done(count)`` (polled side by side)."""
    start = time.monotonic()
    now_at = old_at = None
    while (now_at is None or old_at is None) and time.monotonic() - start < timeout:
        if now_at is None and done(autoscale_count(client)):
            now_at = time.monotonic() - start
        if old_at is None and done(minute_average_wants(client, spec, current, only) or current):
            old_at = time.monotonic() - start
        time.sleep(0.25)
    return (now_at if now_at is not None else float("nan"), old_at if old_at is not None else float("nan"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--offset", type=float, default=30.0, help="seconds into a minute the load starts")
    args = ap.parse_args()
    spec = Autoscale.model_validate(SPEC)
    with tempfile.TemporaryDirectory(prefix="corbench-") as tmp, running_corral(Path(tmp)) as server:
        client = server.client()
        put_profile(client, RG, "busy", profile_body("busy", cpu=0.1))
        body = ngroup_body(client, RG, "busy", 1, extra_elastic={"autoscale": SPEC})
        body["properties"]["updateProfile"]["drainPeriod"] = "PT1S"
        put_ngroup(client, RG, "busy", body)
        ng = wait_until("one member", steady(client, RG, "busy", 1), timeout=120)
        first = ng["properties"]["status"]["members"][0]["name"]
        # The member runs (and is sampled, idle) from before the minute the load starts in.
        time.sleep(60 - time.time() % 60 + args.offset)
        burn = exec_sync(client, RG, first, "web", "sh", "-c", "while :; do :; done > /dev/null 2>&1 & echo $!")
        # The old signal from the loaded member alone, as it would have been before any other joined.
        up = race(client, spec, 1, lambda n: n >= 2, timeout=150, only=first)
        wait_until("a second member serving", lambda: get_ngroup(client, RG, "busy")["properties"]["status"][
            "readyCount"] >= 2, timeout=60)
        exec_sync(client, RG, first, "web", "kill", burn["stdout"].strip())
        scaled = autoscale_count(client)
        down = race(client, spec, scaled, lambda n: n == 1, timeout=150)
        delay = spec.down_delay
        print(f"\nAutoscale under CPU load started {args.offset:.0f} s into a minute "
              f"(target {SPEC['targetCpuUtilizationPercent']} %, scaleDownDelay {SPEC['scaleDownDelay']})")
        print(f"{'signal':<18}{'scale-up asked (s)':>20}{'back to 1 asked (s)':>22}")
        print(f"{'recent samples':<18}{up[0]:>20.1f}{down[0]:>22.1f}")
        print(f"{'minute average':<18}{up[1]:>20.1f}{down[1] + delay:>22.1f}")
        client.request("DELETE", f"/subscriptions/{client.sub}/resourceGroups/{RG}/providers/"
                       "Microsoft.ContainerInstance/ngroups/busy")
        wait_until("the NGroup gone", lambda: not client.request("GET", f"/subscriptions/{client.sub}/resourceGroups/"
                   f"{RG}/providers/Microsoft.ContainerInstance/ngroups").json()["value"], timeout=60)


if __name__ == "__main__":
    main()
