"""Rolling 20 members to a new revision under a steady request loop, beside a naive redeploy, in one run.

    .venv/bin/python bench/rollout.py [-n 20] [--batch 20]

Rows (same server, same load balancer frontend, the same request loop: one request on a new
connection every 20 ms, each answered by busy httpd members of 0.1 CPU):
  NGroup rolling    an NGroup of N members behind the load balancer rolls to revision 2
                    (Rolling mode, maxBatchPercent --batch, surge: new members join once ready,
                    old ones leave the pool and drain before they stop)
  delete + create   the same N members as plain groups: delete them all, create N new ones, and
                    put the new addresses in the pool once they run, as a script would without an
                    orchestrator
Prints the wall time of each until every request is answered by the new revision, the requests
made and how many failed (the target for the NGroup is 0). Needs root; removes what it made.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from corral_server import free_port, running_corral  # noqa: E402
from orchestration import (  # noqa: E402
    RequestLoop,
    fetch,
    ngroup_body,
    ngroup_path,
    pool_id,
    profile_body,
    profile_id,
    put_lb,
    put_ngroup,
    put_profile,
    steady,
    wait_until,
)

from corral.cli.client import Client  # noqa: E402

RG = "corbench"


def only(port: int, page: str) -> bool:
    try:
        return all(fetch(port) == page for _ in range(10))
    except OSError:  # not served yet
        return False


def ngroup_rollout(client: Client, n: int, batch: int) -> tuple[float, RequestLoop]:
    port = free_port()
    put_lb(client, RG, "nglb", port)
    pools = [pool_id(client, RG, "nglb")]
    put_ngroup(client, RG, "roll", ngroup_body(client, RG, "web", n, revision=1, pools=pools, batch=batch))
    wait_until(f"{n} members", steady(client, RG, "roll", n, revision=1), timeout=300, every=0.5)
    with RequestLoop(port) as loop:
        time.sleep(1)
        start = time.monotonic()
        put_ngroup(client, RG, "roll", ngroup_body(client, RG, "web", n, revision=2, pools=pools, batch=batch))
        wait_until("revision 2 everywhere", steady(client, RG, "roll", n, revision=2), timeout=600, every=0.1)
        wait_until("only v2 answers", lambda: only(port, "v2"), timeout=60, every=0.1)
        took = time.monotonic() - start
        time.sleep(1)
    client.request("DELETE", ngroup_path(client, RG, "roll"))
    return took, loop


def naive(client: Client, n: int) -> tuple[float, RequestLoop]:
    port = free_port()
    put_lb(client, RG, "naivelb", port)
    pool = pool_id(client, RG, "naivelb")

    def deploy(revision: int, names: list[str]) -> None:
        for name in names:
            body = {"location": "local", "properties": {
                "containerGroupProfile": {"id": profile_id(client, RG, "web"), "revision": revision}}}
            client.request("PUT", client.group_path(RG, name), json=body)

        def running() -> dict[str, str] | None:
            ips = {}
            for name in names:
                g = client.request("GET", client.group_path(RG, name)).json()
                iv = g["properties"]["instanceView"]
                ready = all(c["properties"]["instanceView"].get("ready") for c in g["properties"]["containers"])
                if iv["state"] != "Running" or not ready:
                    return None
                ips[name] = iv["privateIp"]
            return ips
        ips = wait_until("the groups running", running, timeout=300, every=0.2)
        client.request("PUT", pool, json={"properties": {"drainPeriodInSeconds": 1, "loadBalancerBackendAddresses": [
            {"name": k, "properties": {"ipAddress": v}} for k, v in sorted(ips.items())]}})

    deploy(1, [f"naive-a{i}" for i in range(n)])
    wait_until("v1 answers", lambda: only(port, "v1"), timeout=60)
    with RequestLoop(port) as loop:
        time.sleep(1)
        start = time.monotonic()
        for i in range(n):
            client.request("DELETE", client.group_path(RG, f"naive-a{i}"))
        deploy(2, [f"naive-b{i}" for i in range(n)])
        wait_until("only v2 answers", lambda: only(port, "v2"), timeout=60, every=0.1)
        took = time.monotonic() - start
        time.sleep(1)
    for i in range(n):
        client.request("DELETE", client.group_path(RG, f"naive-b{i}"))
    return took, loop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=20, help="members")
    ap.add_argument("--batch", type=int, default=20, help="maxBatchPercent of the rolling update")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="corbench-") as tmp, running_corral(Path(tmp)) as server:
        client = server.client()
        # 0.05 CPU each: the surge (a batch more than n) must fit beside the n on a 2-core machine.
        put_profile(client, RG, "web", profile_body("v1", cpu=0.05))
        put_profile(client, RG, "web", profile_body("v2", cpu=0.05))
        rows = [("NGroup rolling", *ngroup_rollout(client, args.n, args.batch)),
                ("delete + create", *naive(client, args.n))]
        print(f"\nRolling {args.n} members (maxBatchPercent {args.batch}) under a request loop every 20 ms")
        print(f"{'method':<18}{'seconds':>9}{'requests':>10}{'failed':>8}")
        for name, took, loop in rows:
            print(f"{name:<18}{took:>9.1f}{loop.total:>10}{len(loop.failures):>8}")
        failed = rows[0][2].failures
        if failed:
            print("NGroup failures:", *failed[:5], sep="\n  ")


if __name__ == "__main__":
    main()
