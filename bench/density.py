"""Density: N idle groups on one node through the API; time to all Running, host memory per group, leaks.

    sudo .venv/bin/python bench/density.py [-n 250]

Starts its own `corral up` (default virtual network 10.71.0.0/16, cgroup parent
/corral-density, data under a temp dir). First the baseline, in the same run: the
same N containers (`sleep 3600`, same image, cpu 0.005, memory 0.01 GB) run
plainly under conmon + crun (Corral's runtime layer alone: overlay rootfs, no
network, no agent), measured and removed. Then N groups of that container through
the API with concurrent PUTs; the time until the event stream (what `corral
container watch` reads) has shown every one Running; measures; deletes them all
and checks that nothing is left: network namespaces, mounts, cgroups, veths,
conmon processes.

Memory per group = the drop of MemAvailable between "nothing started" and "all
Running", divided by N, for both: it includes conmon, the container's processes,
the kernel's share (netns, veth, overlay mount, cgroups) and, for Corral, the
agent's growth. MemAvailable is machine-wide, so other load on the machine shows
in it; PSS of the conmon + container processes (per-process, not machine-wide)
and Corral's CPU time per group are printed beside it.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from corral_server import CorralServer  # noqa: E402
from start_latency import RunningWatch  # noqa: E402

from corral.cli.client import Client  # noqa: E402
from corral.node.images.store import ImageStore  # noqa: E402
from corral.node.runtime.cgroups import remove_cgroup  # noqa: E402
from corral.node.runtime.runtime import Runtime  # noqa: E402
from corral.node.runtime.spec import SpecRequest, build_spec  # noqa: E402

RG = "density"
BRIDGE = "cdense0"
PARENT = "/corral-density"
MIB = 1024 * 1024


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable")


def settle() -> None:
    """Let the page cache and slab settle so MemAvailable compares like with like."""
    subprocess.run(["sync"], check=False)
    time.sleep(2)


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def conmon_pids(data_dir: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"conmon.*{data_dir}"], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def pss_tree(pids: list[int]) -> int:
    """Proportional set size of the processes and all their descendants (conmon + its container)."""
    total, todo, seen = 0, list(pids), set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{pid}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return total


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def plain_baseline(server: CorralServer, n: int, work: Path, parallel: int) -> dict[str, float]:
    """The same N containers under conmon + crun without Corral's agent and network: memory per container."""
    store = ImageStore(server.data_dir / "images")
    image = store.get("corral/busybox:latest")
    assert image is not None
    runtime = Runtime(work / "plain-runtime")
    cids = [f"plain-{i}" for i in range(n)]

    def run(cid: str) -> None:
        rootfs = store.mount_rootfs(image, work / cid)
        spec = build_spec(SpecRequest(rootfs=rootfs, args=["sleep", "3600"], env=["PATH=/bin:/usr/bin"],
                                      hostname=cid, cpu=0.005, cpu_limit=0.005, memory_bytes=int(0.01 * 2**30),
                                      cgroup_path=f"{PARENT}-plain/{cid}"))
        runtime.run(cid, spec, work / cid / "log")

    settle()
    mem0 = mem_available()
    t0 = time.monotonic()
    try:
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(run, cids))
        took = time.monotonic() - t0
        settle()
        mem1 = mem_available()
        pss = pss_tree(conmon_pids(work / "plain-runtime"))
    finally:
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(runtime.delete, cids))
        for cid in cids:
            store.unmount_rootfs(work / cid)
        remove_cgroup(f"{PARENT}-plain")
    return {"mem": (mem0 - mem1) / n, "pss": pss / n, "time": took}


def body(i: int) -> dict[str, Any]:
    return {"location": "local", "properties": {"containers": [{
        "name": f"idle-{i}",
        "properties": {"image": "corral/busybox:latest", "command": ["sleep", "3600"],
                       "resources": {"requests": {"cpu": 0.005, "memoryInGB": 0.01}}},
    }], "restartPolicy": "Always"}}


def states(client: Client) -> dict[str, str]:
    path = f"/subscriptions/{client.sub}/resourceGroups/{RG}/providers/Microsoft.ContainerInstance/containerGroups"
    return {g["name"]: g["properties"]["instanceView"]["state"] for g in client.request("GET", path).json()["value"]}


def host_view(server: CorralServer) -> dict[str, set[str]]:
    """What groups leave on a host, in either network mode; pool sandboxes are counted apart."""
    mounts = {ln for ln in Path("/proc/mounts").read_text().splitlines() if str(server.data_dir) in ln}
    node = server.data_dir / "node"
    sandboxes = {str(p) for p in [*node.glob("network/sandboxes/*"), *node.glob("vnets/*/sandboxes/*")]}
    return {"mounts": {m for m in mounts if "/pool/" not in m}, "sandbox dirs": sandboxes}


def groups_network(server: CorralServer) -> tuple[set[str], set[str]]:
    """The network namespaces and host veths of this server's groups, from its own state files (other
    Corrals on the machine have theirs: counting every `corral-*` name would count theirs too)."""
    node = server.data_dir / "node"
    netns, veths = set(), set()
    for f in node.glob("vnets/*/sandboxes/*/state.json"):
        netns.add(json.loads(f.read_text()).get("netns") or "")
    for f in node.glob("vnets/*/plugin/*/attachments/*.json"):
        veths.add(json.loads(f.read_text()).get("host_veth") or "")
    return netns - {""}, veths - {""}


def still_there(netns: set[str], veths: set[str]) -> tuple[int, int]:
    have_ns = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    have_veths = {ln.split(":")[1].strip().split("@")[0] for ln in subprocess.run(
        ["ip", "-o", "link", "show", "type", "veth"], capture_output=True, text=True).stdout.splitlines()}
    return len(netns & have_ns), len(veths & have_veths)


def leaks(server: CorralServer, before: dict[str, set[str]], netns: set[str], veths: set[str],
          ) -> tuple[dict[str, int], int]:
    """What of this server's groups is on the host now and was not before the groups were created."""
    after = host_view(server)
    cgroups = [p for p in glob.glob(f"/sys/fs/cgroup/*{PARENT}/*") if Path(p).is_dir()]
    pool = [ln for ln in Path("/proc/mounts").read_text().splitlines()
            if str(server.data_dir) in ln and "/pool/" in ln]
    new = {k: after[k] - before[k] for k in after}
    for ln in new["mounts"]:
        print(f"left mounted: {ln}", file=sys.stderr)
    _, live = groups_network(server)  # veths still on file belong to standby pool slots, kept by design
    ns_left, veths_left = still_there(netns, veths - live)
    return {
        "netns": ns_left,
        "mounts": len(new["mounts"]),
        "veths": veths_left,
        "cgroups": len(cgroups),
        "conmon processes": len(conmon_pids(server.data_dir)),
        "sandbox dirs": len(new["sandbox dirs"]),
    }, len(pool)


def warm_up(client: Client) -> None:
    path = client.group_path(RG, "warm-up")
    resp = client.request("PUT", path, json=body(-1))
    client.wait_operation(resp, timeout=60)
    client.wait_operation(client.request("DELETE", path), timeout=60)
    time.sleep(2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=250, help="groups to start (default 250)")
    ap.add_argument("--parallel", type=int, default=16, help="concurrent API requests")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--no-baseline", action="store_true", help="skip the plain conmon + crun baseline")
    ap.add_argument("--server-env", action="append", default=[], metavar="K=V",
                    help="environment for the server (e.g. CORRAL_START_PARALLEL=8)")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="corral-density-", dir="/var/tmp"))
    server = CorralServer(root, bridge=BRIDGE, subnet="10.71.0.0/16", cgroup_parent=PARENT)
    server.env.update(dict(kv.split("=", 1) for kv in args.server_env))
    rows: list[tuple[str, str]] = []
    ok = True
    try:
        server.build_base_image()
        server.start()
        client = server.client()
        assert server.proc is not None
        corral_pid = server.proc.pid
        warm_up(client)  # opens the default network and fills its standby pool
        plain = None if args.no_baseline else plain_baseline(server, args.n, root, 4)
        settle()
        baseline = host_view(server)
        mem0, rss0 = mem_available(), rss(corral_pid)
        watch = RunningWatch(server, RG)

        cpu0 = cpu_seconds(corral_pid)
        t0 = time.monotonic()
        with ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(lambda i: client.request("PUT", client.group_path(RG, f"idle-{i}"), json=body(i)),
                          range(args.n)))
        t_put = time.monotonic() - t0
        print(f"{t_put:6.1f} s  all PUTs accepted", file=sys.stderr, flush=True)
        running: set[str] = set()
        while len(running) < args.n:
            try:
                running.add(watch.seen.get(timeout=max(0.1, t0 + args.timeout - time.monotonic()))[0])
            except Exception:  # queue.Empty: out of time
                print(f"timed out: {len(running)}/{args.n} Running", file=sys.stderr)
                ok = False
                break
            if len(running) % 25 == 0:
                print(f"{time.monotonic() - t0:6.1f} s  {len(running)}/{args.n} Running", file=sys.stderr, flush=True)
        t_all = time.monotonic() - t0
        cpu = cpu_seconds(corral_pid) - cpu0

        settle()
        mem1, rss1 = mem_available(), rss(corral_pid)
        conmons = conmon_pids(server.data_dir)
        per_group = (mem0 - mem1) / args.n
        rows += [
            ("groups", str(args.n)),
            ("all PUTs accepted after", f"{t_put:.1f} s"),
            ("all Running after", f"{t_all:.1f} s" + ("" if t_all <= 15 else "  (target 15 s: MISSED)")),
            ("corral CPU per group start", f"{1000 * cpu / args.n:.1f} ms (API, binder, agent; not conmon/crun)"),
            ("MemAvailable drop per group", f"{per_group / MIB:.2f} MiB"),
            ("PSS of conmon + container per group", f"{pss_tree(conmons) / max(1, len(conmons)) / MIB:.2f} MiB "
                                                   f"({len(conmons)} conmons)"),
            ("corral process RSS growth per group", f"{(rss1 - rss0) / args.n / MIB:.2f} MiB"
                                                     f" ({rss0 / MIB:.0f} -> {rss1 / MIB:.0f} MiB)"),
        ]
        if plain is not None:
            extra = per_group - plain["mem"]
            rows += [
                ("plain conmon + crun: MemAvailable drop each", f"{plain['mem'] / MIB:.2f} MiB "
                                                               f"(started in {plain['time']:.1f} s, 4 at a time)"),
                ("plain conmon + crun: PSS each", f"{plain['pss'] / MIB:.2f} MiB"),
                ("Corral's overhead per group beyond plain", f"{extra / MIB:.2f} MiB" + (
                    "" if extra <= 2 * MIB else "  (target 2 MiB: MISSED)")),
            ]
            ok = ok and extra <= 2 * MIB
        ok = ok and t_all <= 15

        netns, veths = groups_network(server)
        t1 = time.monotonic()
        with ThreadPoolExecutor(args.parallel) as pool:
            list(pool.map(lambda i: client.request("DELETE", client.group_path(RG, f"idle-{i}")), range(args.n)))
        while states(client):
            if time.monotonic() > t1 + args.timeout:
                print("timed out deleting", file=sys.stderr)
                ok = False
                break
            time.sleep(0.5)
        rows.append(("all deleted after", f"{time.monotonic() - t1:.1f} s"))
        left, pooled = leaks(server, baseline, netns, veths)
        for what, n in left.items():
            rows.append((f"left behind: {what}", str(n)))
            ok = ok and n == 0
        rows.append(("standby pool mounts (kept by design)", str(pooled)))
    finally:
        server.close()
        remove_cgroup(PARENT)
        remove_cgroup(f"{PARENT}-plain")
        subprocess.run(["rm", "-rf", str(root)], check=False)

    width = max(len(k) for k, _ in rows) if rows else 0
    print(f"\n{'measure'.ljust(width)}  value\n{'-' * width}  {'-' * 24}")
    for k, v in rows:
        print(f"{k.ljust(width)}  {v}")
    print("(MemAvailable is machine-wide: on a shared machine other work moves it; compare on a quiet one)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
