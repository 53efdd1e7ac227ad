"""Where a start goes: PUT -> Running step by step, beside a raw `crun run` in the same run.

    .venv/bin/python bench/start_trace.py [-n 20]

Runs `corral up`'s parts in this process (AllInOne on plain HTTP, vnet with a
standby pool, DNS off), times the steps of the create path by wrapping the
functions that do them, and prints for each step when it starts (ms after the
PUT was sent) and how long it takes, p50 over n groups (each deleted before the
next). "Running seen" is when the status record says Running (what the event
stream and GETs then show). The raw `crun run --detach` of the same image and
spec comes last, from this same process. Needs root.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import start_latency  # noqa: E402

import corral.control.binder as binder  # noqa: E402
import corral.control.groups as groups  # noqa: E402
import corral.link.local as local  # noqa: E402
import corral.node.agent as agent  # noqa: E402
import corral.node.host as host  # noqa: E402
import corral.node.images.store as store  # noqa: E402
import corral.node.network.vnet_backend as vnet_backend  # noqa: E402
import corral.node.runtime.conmon as conmon  # noqa: E402
import corral.node.runtime.runtime as runtime  # noqa: E402
import corral.node.worker as worker  # noqa: E402
from corral.allinone import AllInOne, UpSettings  # noqa: E402
from corral.cli.client import Client  # noqa: E402
from corral.config import ClientConfig  # noqa: E402
from corral.node.setup import NodeSettings  # noqa: E402

CORRAL = str(Path(sys.executable).parent / "corral")

# (label, owner, attribute), in the order they happen on the create path.
STEPS: list[tuple[str, Any, str]] = [
    ("API: validate + store write (create_or_update)", groups.GroupService, "create_or_update"),
    ("binder pass (take the change in, place, write the binding)", binder.Binder, "handle"),
    ("agent: wake-up, read, dispatch to a worker", agent.NodeAgent, "_dispatch"),
    ("worker pass (all below)", worker.GroupWorker, "reconcile"),
    ("  network sandbox (standby pool take)", host.NodeHost, "ensure_sandbox"),
    ("    pool take: rename + records + hostname + /etc files", vnet_backend.VnetNetworkManager, "_adopt"),
    ("  container (rootfs mount, spec, runtime)", host.NodeHost, "run_container"),
    ("    conmon started, its runtime held at the gate", conmon.Launch, "__init__"),
    ("    rootfs mount (overlay), meanwhile", store.ImageStore, "mount_rootfs"),
    ("    gate opened -> crun run (create and start) done", conmon.Launch, "go"),
    ("    warm container instead: spec check, rootfs move, bind", host.NodeHost, "_run_warm"),
    ("      bind: limits, spec, command -> exec'd", runtime.Runtime, "bind_warm"),
    ("status write (Running)", local.LocalLink, "report"),
]


class Tracer:
    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self._undo: list[Callable[[], None]] = []

    def wrap(self, label: str, owner: Any, name: str) -> None:
        fn = getattr(owner, name)
        calls = self.calls

        @functools.wraps(fn)
        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                calls[label].append((t0, time.perf_counter()))

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, fn))

    def undo(self) -> None:
        for u in self._undo:
            u()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=20, help="groups to time")
    ap.add_argument("--prefix", default="cbtr", help="bridge and cgroup prefix")
    ap.add_argument("--warm-containers", type=int, default=0, help="the node's warm containers per image")
    ap.add_argument("--gap", type=float, default=start_latency.GAP,
                    help="seconds between one start's clean-up and the next, baseline included "
                         "(the pools refill after 0.2 s without a take)")
    args = ap.parse_args()
    start_latency.GAP = args.gap
    work = Path(tempfile.mkdtemp(prefix="corral-bench-trace-", dir="/var/tmp"))
    data = work / "data"
    subprocess.run([CORRAL, "image", "build-base", "--data-dir", str(data)], check=True, capture_output=True)
    bridge, parent = f"{args.prefix}0"[:15], f"/{args.prefix}"
    node = NodeSettings(data_dir=data, bridge=bridge, subnet="10.64.0.0/16", cgroup_parent=parent, pool_size=4,
                        cni_socket=None, warm_containers=args.warm_containers)
    settings = UpSettings(data_dir=data, listen="127.0.0.1:0", insecure_http=True, config_path=work / "client.json",
                          node=node, dns_listen=None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        settings.listen = f"127.0.0.1:{s.getsockname()[1]}"
    app = AllInOne(settings)
    tracer = Tracer()
    ready = threading.Event()
    thread = threading.Thread(target=app.serve, args=(ready,), daemon=True)
    thread.start()
    rows: list[dict[str, tuple[float, float]]] = []
    totals: list[float] = []
    try:
        if not ready.wait(30):
            raise RuntimeError("corral did not start")
        client = Client(ClientConfig.load(work / "client.json"))
        for label, owner, name in STEPS:
            tracer.wrap(label, owner, name)
        for i in range(args.n + 3):  # the first three warm caches and the pool
            tracer.calls.clear()
            path = client.group_path("bench", f"t{i}")
            t0 = time.perf_counter()
            client.request("PUT", path, json=start_latency.group_body())
            while not any(r.value.get("state") == "Running" for r in app.store.list("/status/")):
                time.sleep(0.0005)
            seen = time.perf_counter()
            if i >= 3:
                totals.append((seen - t0) * 1000)
                rows.append({label: ((c[0][0] - t0) * 1000, sum(e - s for s, e in c) * 1000)
                             for label, c in tracer.calls.items()})
            client.wait_operation(client.request("DELETE", path), timeout=60)
            while app.store.list("/status/"):
                time.sleep(0.01)
            time.sleep(args.gap)
        tracer.undo()
        crun = start_latency.crun_run(data, args.n, work, cgroup_parent=parent)  # node reset removes it
    finally:
        tracer.undo()
        app.shutdown()
        thread.join(30)
        subprocess.run([CORRAL, "node", "reset", "--data-dir", str(data), "--bridge", bridge,
                        "--subnet", "10.64.0.0/16", "--cgroup-parent", parent], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nPUT -> Running, step by step (p50 of {args.n}, ms after the PUT was sent)")
    print(f"{'step':<58} {'starts':>8} {'takes':>8}")
    for label, _, _ in STEPS:
        got = [r[label] for r in rows if label in r]
        if got:
            starts, takes = statistics.median(g[0] for g in got), statistics.median(g[1] for g in got)
            print(f"{label:<58} {starts:8.1f} {takes:8.1f}")
    p50 = statistics.median(totals)
    print(f"{'Running seen (status record)':<58} {p50:8.1f}")
    c50 = start_latency.percentile(crun, 0.5)
    print(f"{'raw crun run --detach, same image (same run)':<58} {'':8} {c50:8.1f}")
    print(f"ratio PUT->Running / crun run: {p50 / c50:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
