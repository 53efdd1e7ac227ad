"""Failover: seconds from a host's crash, and from a cut of its link, to all of its groups Running elsewhere.

    sudo .venv/bin/python bench/failover.py [-n 5]

Builds the three-host fabric of the cluster tests (``tests/cluster.py``: network namespaces
``ccl-*``, addresses 10.213.200.0/24, a registry, a `corral server`, three `corral agent`
processes with default timings), puts N groups on one host, then:

- crash: SIGKILLs that host's agent, watchdog and every process of its groups;
- cut: takes another host's fabric link down (its agent and containers stay alive).

For each it prints when the control plane declared the node NotReady, when every group ran
elsewhere, and the longest time two copies of one group ran at once (sampled every 20 ms
from the hosts' cgroups; must be 0). The baseline, measured in the same run, is placing and
starting the same N groups from scratch: what any failover must pay at least.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from cluster import CORRAL, UPLINK, ClusterFabric, Host, OverlapWatch  # noqa: E402
from groups import container, group  # noqa: E402
from registry import run_registry  # noqa: E402

from corral.cli.client import Client  # noqa: E402

RG = "bench-failover"
TARGET = 5.0  # seconds from the cut to every group Running elsewhere


def states(client: Client) -> dict[str, str]:
    return {g["name"]: g["properties"]["instanceView"]["state"]
            for g in client.request("GET", client.group_path(RG)).json()["value"]}


def uid_of(fab: ClusterFabric, host: Host, name: str) -> str:
    for d in (Path("/sys/fs/cgroup/pids") / host.cgroup_parent.strip("/")).iterdir():
        if d.is_dir() and any(c.name.endswith(f"-c-{name}") for c in d.iterdir() if c.is_dir()):
            return d.name
    raise RuntimeError(f"group {name} runs nowhere on {host.name}")


def create_on(fab: ClusterFabric, host: Host, names: list[str], image: str) -> tuple[dict[str, str], float]:
    """Create the groups on ``host`` (the other hosts cordoned meanwhile); their uids, and seconds to all Running."""
    client = fab.client()
    for h in fab.hosts:
        if h is not host:
            client.request("POST", f"/providers/Corral/nodes/{h.name}/cordon")
    t0 = time.monotonic()
    for n in names:
        body = group(container(n, ["sleep", "3600"], cpu=0.05, memory=0.05, image=image), restartPolicy="Always")
        client.request("PUT", client.group_path(RG, n), json=body)
    wait_running(fab, names, exclude=None)
    took = time.monotonic() - t0
    for h in fab.hosts:
        client.request("POST", f"/providers/Corral/nodes/{h.name}/uncordon")
    return {n: uid_of(fab, host, n) for n in names}, took


def wait_running(fab: ClusterFabric, names: list[str], exclude: str | None, timeout: float = 60) -> float:
    client = fab.client()
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        st = states(client)
        if all(st.get(n) == "Running" for n in names):
            where = fab.placement() if exclude else {}
            if not exclude or all(where.get(n) not in (None, exclude) for n in names):
                return time.monotonic()
        time.sleep(0.05)
    raise RuntimeError(f"groups not Running within {timeout} s: {states(client)}")


def wait_status(fab: ClusterFabric, host: Host, status: str, timeout: float = 30) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if fab.node(host)["properties"]["status"] == status:
            return time.monotonic()
        time.sleep(0.05)
    raise RuntimeError(f"{host.name} not {status} within {timeout} s")


def delete_all(client: Client) -> None:
    for g in client.request("GET", client.group_path(RG)).json()["value"]:
        resp = client.request("DELETE", client.group_path(RG, g["name"]))
        if resp.status_code == 202:
            client.wait_operation(resp, timeout=60)


def scenario(fab: ClusterFabric, host: Host, kind: str, n: int, image: str) -> dict[str, Any]:
    client = fab.client()
    names = [f"{kind}-{i}" for i in range(n)]
    uids, _ = create_on(fab, host, names, image)
    with OverlapWatch(fab, uids, every=0.02) as overlap:
        t0 = time.monotonic()
        if kind == "crash":
            fab.crash(host)
        else:
            fab.cut(host)
        try:
            notready = wait_status(fab, host, "NotReady") - t0
            moved = wait_running(fab, names, exclude=host.name) - t0
        finally:
            if kind == "cut":
                fab.heal(host)
        if kind == "crash":
            fab.start_agent(host)
        else:
            fab.wait_node(host, "Ready")
        time.sleep(1.0)  # the host is back: any stale copy would show now
    delete_all(client)
    return {"notready": notready, "moved": moved, "overlap": overlap.longest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=5, help="groups on the failing host")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces, containers)")
    root = Path(tempfile.mkdtemp(prefix="corral-bench-failover-"))
    fab = ClusterFabric(root)
    try:
        fab.build()
        with run_registry(root / "registry", host=UPLINK) as reg:
            import subprocess

            fab.env["CORRAL_INSECURE_REGISTRIES"] = reg.host_port
            image = f"{reg.host_port}/corral/busybox:latest"
            subprocess.run([CORRAL, "image", "build-base", "--data-dir", str(root / "build")], check=True,
                           capture_output=True)
            subprocess.run([CORRAL, "image", "push", "corral/busybox:latest", image, "--data-dir",
                            str(root / "build")], check=True, capture_output=True, env=fab.env)
            fab.start_server("bench", f"sqlite://{root}/store.db")
            for h in fab.hosts:
                fab.start_agent(h, wait=False)
            for h in fab.hosts:
                fab.wait_node(h, "Ready")
            # Baseline: the same groups placed and started from scratch (images already on the node).
            _, warm = create_on(fab, fab.hosts[2], [f"warm-{i}" for i in range(args.n)], image)
            delete_all(fab.client())
            _, base = create_on(fab, fab.hosts[2], [f"base-{i}" for i in range(args.n)], image)
            delete_all(fab.client())
            crash = scenario(fab, fab.hosts[0], "crash", args.n, image)
            cut = scenario(fab, fab.hosts[1], "cut", args.n, image)
    finally:
        fab.close()
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nfailover of {args.n} groups, default timings (heartbeat 0.5 s, fence 1.5 s, node lease 2.5 s)\n")
    print(f"{'scenario':<44} {'NotReady':>9} {'all Running elsewhere':>22} {'longest overlap':>16}")
    print(f"{'baseline: create -> Running, no failure':<44} {'':>9} {base:>20.2f} s {'':>16}")
    for name, r in (("crash (agent + groups SIGKILLed)", crash), ("cut (fabric link down, all alive)", cut)):
        print(f"{name:<44} {r['notready']:>7.2f} s {r['moved']:>20.2f} s {r['overlap']:>14.2f} s")
    print(f"\ntarget: at most {TARGET:g} s from the cut, overlap 0. Kubernetes by default: ~50 s to NotReady, "
          "+300 s before eviction; Docker Swarm: ~15 s to notice.")
    ok = cut["moved"] <= TARGET and crash["overlap"] == 0 and cut["overlap"] == 0
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
