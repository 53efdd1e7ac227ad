"""Create-to-Running latency of container groups through Corral's API, beside baselines in the same run.

    .venv/bin/python bench/start_latency.py [-n 30]

Rows:
  corral API      PUT a one-container group (image cached, no public port) and time until the
                  group's event stream (GET .../events, what `corral container watch` reads)
                  says Running; the group is deleted before the next one. A second row for the
                  pool set-up polls GET every 2 ms instead, as a naive client would: the
                  polling itself costs the server CPU on a 2-core machine.
                  Four node set-ups: virtual network with a standby pool of ready network
                  sandboxes (the default), the same with warm containers (`--warm-containers 2`:
                  the group starts in a container the node started ahead), the same without
                  either pool, and the plain CNI bridge.
  crun run        raw `crun run --detach` of a bundle over the same image (overlay rootfs), no network
                  (behind the same prefix Corral starts crun behind, _sys.runtime_prefix: the native
                  shim, or unshare + umount + sh without it; crun refuses hybrid cgroups).
  conmon + crun   Corral's runtime layer alone (node/runtime: conmon, which runs `crun run --detach`) on
                  the same bundle, no agent, no network: the floor of a container with a monitor that keeps
                  its log and exit code, as every Corral container has. Runtime.run, started cold: the
                  agent instead launches conmon ahead and overlaps its start with the rootfs and spec:
  launched ahead  that (Runtime.launch 4 ms before the spec is given), timed from the gate opening to
                  Running; only with the native crun shim, which waits at the gate.
  podman run      `podman run --rm --network bridge` of the same image, a command that exits at once
                  (Debian's podman with runc and cgroupfs).
Every row's starts are --gap seconds apart (default 0.4: the pools refill after 0.2 s without a
take), baselines included, so each start finds the same idle machine.
Prints p50/p95/p99 in milliseconds. Needs root. Everything it creates is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from corral_server import CorralServer  # noqa: E402
from podman_support import PODMAN_CONF  # noqa: E402
from registry import run_registry  # noqa: E402

from corral.cli.client import API_VERSION  # noqa: E402
from corral.node.images.store import ImageStore  # noqa: E402
from corral.node.runtime import _sys  # noqa: E402
from corral.node.runtime.runtime import Runtime  # noqa: E402
from corral.node.runtime.spec import SpecRequest, build_spec  # noqa: E402

IMAGE = "corral/busybox:latest"
# Seconds between one start's clean-up and the next start, in every row (set by --gap): the pools
# refill after 0.2 s without a take, and every row, baselines too, starts from the same idle machine.
GAP = 0.4


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    k = (len(s) - 1) * p
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def group_body() -> dict:
    return {"location": "local", "properties": {"containers": [{"name": "app", "properties": {
        "image": IMAGE, "command": ["sleep", "3600"],
        "resources": {"requests": {"cpu": 0.1, "memoryInGB": 0.1}}}}]}}


class RunningWatch:
    """Times when groups of resource group ``rg`` turn Running, from Corral's event stream."""

    def __init__(self, server: CorralServer, rg: str = "bench") -> None:
        self.client = server.client()
        self.rg = rg
        self.seen: queue.Queue[tuple[str, float]] = queue.Queue()
        self.opened = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.opened.wait(10):
            raise RuntimeError("the event stream did not open")

    def _read(self) -> None:
        path = self.client.group_path(self.rg).rsplit("/", 1)[0] + "/events"
        kind = ""
        try:
            with self.client.http.stream("GET", path, params={"api-version": API_VERSION}, timeout=None) as resp:
                for line in resp.iter_lines():
                    if line.startswith(": watching"):
                        self.opened.set()
                    elif line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind == "group":
                        data = json.loads(line[6:])
                        if data["state"] == "Running":
                            self.seen.put((data["name"], time.perf_counter()))
        except httpx.HTTPError:
            pass  # the server went away at the end of the run

    def wait(self, name: str, timeout: float = 30) -> float:
        while True:
            got, at = self.seen.get(timeout=timeout)
            if got == name:
                return at


def corral_api(server: CorralServer, n: int, poll: bool = False) -> list[float]:
    """Create-to-Running per group, seen on the event stream, or (``poll``) by GET every 2 ms."""
    client = server.client()
    watch = None if poll else RunningWatch(server)
    out = []
    for i in range(n):
        time.sleep(GAP)
        name = f"lat-{'p' if poll else 'w'}-{i}"
        path = client.group_path("bench", name)
        t0 = time.perf_counter()
        client.request("PUT", path, json=group_body())
        if watch is not None:
            t1 = watch.wait(name)
        else:
            while client.request("GET", path).json()["properties"]["instanceView"]["state"] != "Running":
                time.sleep(0.002)
            t1 = time.perf_counter()
        out.append((t1 - t0) * 1000)
        resp = client.request("DELETE", path)
        client.wait_operation(resp, timeout=60)
    return out


def bench_spec(store: ImageStore, cid: str, cdir: Path, cgroup_parent: str) -> dict:
    """The OCI spec of one bench container over the image's overlay rootfs (mounted under ``cdir``)."""
    image = store.get(IMAGE)
    assert image is not None
    rootfs = store.mount_rootfs(image, cdir)
    return build_spec(SpecRequest(rootfs=rootfs, args=["sleep", "3600"], env=["PATH=/bin:/usr/bin"],
                                  hostname=cid, cpu=0.1, cpu_limit=0.1, memory_bytes=100 * 2**20,
                                  cgroup_path=f"{cgroup_parent}/{cid}"))


def timed_starts(data_dir: Path, n: int, work: Path, cgroup_parent: str, tag: str,
                 start: Callable[[str, dict, Path], float], remove: Callable[[str], None]) -> list[float]:
    """n containers of the image Corral keeps under ``data_dir``, each made ready (rootfs, spec) outside the
    timing, started by ``start`` (which returns the ms it took) and removed before the next."""
    store = ImageStore(data_dir / "images")
    out = []
    for i in range(n):
        cid = f"bench-{tag}-{os.getpid()}-{i}"
        cdir = work / cid
        cdir.mkdir()
        spec = bench_spec(store, cid, cdir, cgroup_parent)
        time.sleep(GAP)
        out.append(start(cid, spec, cdir))
        remove(cid)
        store.unmount_rootfs(cdir)
    return out


def runtime_run(data_dir: Path, n: int, work: Path, cgroup_parent: str = "/corral-bench") -> list[float]:
    """Corral's runtime layer alone (conmon running crun) on the same image, n times (ms each)."""
    runtime = Runtime(work / "plain-runtime")

    def start(cid: str, spec: dict, cdir: Path) -> float:
        t0 = time.perf_counter()
        runtime.run(cid, spec, cdir / "log")
        return (time.perf_counter() - t0) * 1000

    return timed_starts(data_dir, n, work, cgroup_parent, "rt", start, runtime.delete)


def runtime_launched(data_dir: Path, n: int, work: Path, cgroup_parent: str = "/corral-bench",
                     ahead: float = 0.004) -> list[float]:
    """The runtime layer as the agent uses it: conmon launched ``ahead`` s before the spec is given (the
    agent mounts the rootfs and writes the spec meanwhile); timed from the gate opening to Running (ms)."""
    runtime = Runtime(work / "launched-runtime")

    def start(cid: str, spec: dict, cdir: Path) -> float:
        launched = runtime.launch(cid, cdir / "log")
        if launched is None:
            return math.nan  # no native shim: nothing is launched ahead
        time.sleep(ahead)
        t0 = time.perf_counter()
        runtime.run(cid, spec, cdir / "log", launched=launched)
        return (time.perf_counter() - t0) * 1000

    return timed_starts(data_dir, n, work, cgroup_parent, "rl", start, runtime.delete)


def crun_run(data_dir: Path, n: int, work: Path, cgroup_parent: str = "/corral-bench") -> list[float]:
    """``crun run --detach`` of the image Corral keeps under ``data_dir``, n times (ms each), in cgroups
    under ``cgroup_parent`` (the bench's own, which it removes)."""

    def start(cid: str, spec: dict, cdir: Path) -> float:
        bundle = cdir / "bundle"
        bundle.mkdir()
        (bundle / "config.json").write_text(json.dumps(spec))
        with open(cdir / "out", "wb") as log:
            t0 = time.perf_counter()
            # Behind the same prefix the agent uses (no preexec_fn: this process is
            # vforked, not forked), so the baseline pays nothing for being started from Python.
            subprocess.run([*_sys.runtime_prefix(), "crun", "run", "--detach", "--bundle", str(bundle),
                            cid], check=True, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            return (time.perf_counter() - t0) * 1000

    def remove(cid: str) -> None:
        subprocess.run(["crun", "delete", "--force", cid], check=True, capture_output=True)

    return timed_starts(data_dir, n, work, cgroup_parent, "crun", start, remove)


def podman_run(server: CorralServer, n: int, work: Path) -> list[float]:
    if not shutil.which("podman"):
        return []
    conf = work / "containers.conf"
    conf.write_text(PODMAN_CONF)
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    base = ["podman", "--root", str(work / "proot"), "--runroot", str(work / "prun")]
    with run_registry(work) as reg:
        ref = f"{reg.host_port}/corral/busybox:latest"
        server.cli("image", "push", IMAGE, ref, "--data-dir", str(server.data_dir))
        subprocess.run([*base, "pull", "--tls-verify=false", ref], env=env, check=True, capture_output=True)
    out = []
    try:
        for _ in range(n):
            time.sleep(GAP)
            t0 = time.perf_counter()
            subprocess.run([*base, "run", "--rm", "--network", "bridge", ref, "true"], env=env, check=True,
                           capture_output=True)
            out.append((time.perf_counter() - t0) * 1000)
    finally:
        subprocess.run([*base, "system", "reset", "--force"], env=env, capture_output=True)
    return out


SETUPS = [
    ("corral API, vnet + standby pool", ["--network", "vnet", "--pool-size", "4"]),
    ("corral API, vnet + pool + warm containers", ["--network", "vnet", "--pool-size", "4",
                                                   "--warm-containers", "2"]),
    ("corral API, vnet, no pool", ["--network", "vnet", "--pool-size", "0"]),
    ("corral API, CNI bridge (std plugins)", ["--network", "bridge"]),
]


def corral_rows(n: int, work: Path) -> list[tuple[str, list[float]]]:
    rows = []
    for i, (name, flags) in enumerate(SETUPS):
        server = CorralServer(work / f"corral-{i}", bridge="cbench0", subnet="10.69.0.0/16",
                              cgroup_parent="/corral-bench", extra=[*flags, "--dns-listen", "off"])
        try:
            server.build_base_image()
            server.start()
            corral_api(server, 3)  # warm up imports, caches and the pools
            time.sleep(1)
            rows.append((name, corral_api(server, n)))
            if i == 0:
                rows.append((name + ", polling", corral_api(server, n, poll=True)))
                rows.append(("crun run --detach (no network)", crun_run(server.data_dir, n, work)))
                rows.append(("conmon + crun, runtime layer alone", runtime_run(server.data_dir, n, work)))
                launched = runtime_launched(server.data_dir, n, work)
                if not any(math.isnan(v) for v in launched):
                    rows.append(("conmon launched ahead, gate -> Running", launched))
                rows.append(("podman run --rm, bridge network", podman_run(server, n, work)))
        finally:
            server.close()
    return rows


def main() -> None:
    global GAP
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=30, help="samples per row")
    ap.add_argument("--gap", type=float, default=GAP, help="seconds between one start's clean-up and the next")
    args = ap.parse_args()
    GAP = args.gap
    work = Path(tempfile.mkdtemp(prefix="corral-bench-"))
    try:
        rows = corral_rows(args.n, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nstart latency, {args.n} samples each, ms (machine: {os.cpu_count()} cores)")
    print(f"{'what':<45} {'p50':>8} {'p95':>8} {'p99':>8} {'mean':>8}")
    for name, vals in rows:
        if not vals:
            print(f"{name:<45} {'(not available)':>35}")
            continue
        print(f"{name:<45} {percentile(vals, .5):8.1f} {percentile(vals, .95):8.1f} "
              f"{percentile(vals, .99):8.1f} {statistics.mean(vals):8.1f}")
    found = dict(rows)
    crun, podman = found.get("crun run --detach (no network)"), found.get("podman run --rm, bridge network")
    if crun:
        print("\nratios to raw crun run (p50, p99); podman run p50 / this p50")
        for name, vals in rows:
            if name.startswith("corral API") and vals:
                vs_podman = f"{percentile(podman, .5) / percentile(vals, .5):.1f}x" if podman else "-"
                print(f"{name:<45} {percentile(vals, .5) / percentile(crun, .5):7.2f}x "
                      f"{percentile(vals, .99) / percentile(crun, .99):7.2f}x {vs_podman:>8}")


if __name__ == "__main__":
    main()
