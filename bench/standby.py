"""Create-to-Running from a standby pool beside cold creates of the same profile, in one run.

    .venv/bin/python bench/standby.py [-n 10]

Rows (the same profile revision: one busybox httpd container of 0.1 CPU with a readiness probe):
  standby pool   PUT a group naming the profile and a standby pool of n ready groups; the pooled
                 group is taken over (isCreatedFromStandbyPool) and the pool refills in between
  cold           PUT a group naming the profile only: scheduled, sandbox, container started
Each is timed from the PUT until GET says Running with every container ready (what a client that
waits for the group to serve sees). Prints p50/p90 and the mean in milliseconds. Needs root; removes
what it made.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from corral_server import running_corral  # noqa: E402
from orchestration import profile_body, profile_id, put_profile, rg_path, wait_until  # noqa: E402
from start_latency import percentile  # noqa: E402

from corral.cli.client import Client  # noqa: E402

RG = "corbench"


def serving(client: Client, name: str) -> bool:
    g = client.request("GET", client.group_path(RG, name)).json()
    props = g["properties"]
    return props["instanceView"]["state"] == "Running" and all(
        c["properties"]["instanceView"].get("ready") for c in props["containers"])


def create(client: Client, name: str, pool: str | None) -> float:
    props: dict[str, object] = {"containerGroupProfile": {"id": profile_id(client, RG, "web"), "revision": 1}}
    if pool:
        props["standbyPoolProfile"] = {"id": pool, "failContainerGroupCreateOnReuseFailure": True}
    start = time.monotonic()
    client.request("PUT", client.group_path(RG, name), json={"location": "local", "properties": props})
    while not serving(client, name):
        time.sleep(0.002)
    return (time.monotonic() - start) * 1000


def ready_count(client: Client, pool: str) -> int:
    view = client.request("GET", pool + "/runtimeViews/latest").json()
    counts = {c["state"]: c["count"] for c in view["properties"]["instanceCountSummary"][0]["instanceCountsByState"]}
    return int(counts.get("Running", 0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=10, help="creates of each kind")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="corbench-") as tmp, running_corral(Path(tmp)) as server:
        client = server.client()
        put_profile(client, RG, "web", profile_body("pooled"))
        pool = f"{rg_path(client, RG, 'Microsoft.StandbyPool')}/standbyContainerGroupPools/warm"
        client.request("PUT", pool, json={"location": "local", "properties": {
            "elasticityProfile": {"maxReadyCapacity": 3, "refillPolicy": "always"},
            "containerGroupProperties": {"containerGroupProfile": {"id": profile_id(client, RG, "web"),
                                                                   "revision": 1}}}})
        warm, cold = [], []
        for i in range(args.n):
            wait_until("a full pool", lambda: ready_count(client, pool) == 3, timeout=120, every=0.05)
            warm.append(create(client, f"warm-{i}", pool))
            cold.append(create(client, f"cold-{i}", None))
            for name in (f"warm-{i}", f"cold-{i}"):  # room for the next ones on a small machine
                client.request("DELETE", client.group_path(RG, name))
        client.request("DELETE", pool)
        print(f"\nCreate -> Running and ready, {args.n} of each (ms)")
        print(f"{'':<16}{'p50':>8}{'p90':>8}{'mean':>8}")
        for name, values in (("standby pool", warm), ("cold", cold)):
            print(f"{name:<16}{percentile(values, 0.5):>8.0f}{percentile(values, 0.9):>8.0f}"
                  f"{statistics.mean(values):>8.0f}")


if __name__ == "__main__":
    main()
