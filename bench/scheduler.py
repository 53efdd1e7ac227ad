"""Scheduler throughput and packing: simulated nodes, no containers, binds written to a real SQLite store.

    .venv/bin/python bench/scheduler.py [--quick] [--baseline-budget SECONDS]

For each cluster (100, 1,000, 5,000 nodes) and workload (10,000 or 50,000
groups of mixed sizes, in random order) it registers the nodes and writes the
groups unplaced into a fresh SQLite store, then times the binder's full pass:
list and read every group, place each one, write every bind (batched
transactions). Scenarios: plain; required anti-affinity (families of 4, one
per node); zone spread (3 zones, families of 6, maxSkew 1). All use the
bin-packing strategy.

Columns:
- placements/s: groups bound / wall time of the pass, binding writes included;
- p99 ms: one placement, from the binder taking the group to its bind committed;
- nodes used vs BFD: nodes holding a group, against best-fit-decreasing on the
  same groups (offline, sorted, unconstrained); ``bound`` is the volume lower bound
  (total CPU or memory over a node's). Where the 250-groups-a-node cap binds (100
  nodes), BFD, placing the small groups last, needs more nodes than arrival order.

The same run drives the old placement code (``bench/baseline_placement.py``, the
scheduler before the plugin pipeline) as the old binder did: recompute every
node's load from every group after each placement, one write per bind. It is
quadratic, so it runs for ``--baseline-budget`` seconds per cluster and its rate
is what it managed in that time.

Node size is chosen per cluster so the groups fill about 70% of it (a node
takes at most 250 groups); 100 nodes x 50,000 groups is left out (500 a node).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baseline_placement import Unschedulable as OldUnschedulable  # noqa: E402
from baseline_placement import loads, place  # noqa: E402

from corral.control.binder import Binder  # noqa: E402
from corral.control.netplane import NetworkControl  # noqa: E402
from corral.model.group import ContainerGroup  # noqa: E402
from corral.model.network import NetworkSettings  # noqa: E402
from corral.model.records import NODES, GroupMeta, GroupRecord, NodeInfo, group_key  # noqa: E402
from corral.scheduler.pipeline import SchedulerSettings  # noqa: E402
from corral.store.base import BATCH_OPS, Put  # noqa: E402
from corral.store.sqlite import SqliteStore  # noqa: E402

SUB, RG = "00000000-0000-0000-0000-000000000000", "bench"
# (cpu, memory GB, weight): mostly small groups, a tail of large ones.
SIZES = [(0.25, 0.5, 20), (0.5, 1, 25), (1, 2, 20), (1, 4, 10), (2, 4, 10), (2, 8, 7), (4, 8, 5), (4, 16, 3)]
NODE_CPUS = [8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512]
MAX_GROUPS = 250
ZONES = 3
FILL = 0.70


def node_cpu_for(nodes: int, groups: int) -> int:
    avg = sum(c * w for c, _, w in SIZES) / sum(w for *_, w in SIZES)
    need = groups * avg / (nodes * FILL)
    return next(c for c in NODE_CPUS if c >= need)


def workload(groups: int, seed: int) -> list[tuple[float, float]]:
    rnd = random.Random(seed)
    return rnd.choices([(c, m) for c, m, _ in SIZES], weights=[w for *_, w in SIZES], k=groups)


def group_value(i: int, cpu: float, mem: float, scenario: str) -> dict[str, Any]:
    tags: dict[str, str] = {}
    placement: dict[str, Any] = {}
    if scenario == "anti-affinity":
        tags = {"app": f"a{i // 4}"}
        placement = {"antiAffinity": [{"tags": tags, "topologyKey": "node"}]}
    elif scenario == "zone spread":
        tags = {"family": f"f{i // 6}"}
        placement = {"spread": [{"tag": "family", "topologyKey": "zone", "maxSkew": 1}]}
    props: dict[str, Any] = {"containers": [{"name": "app", "properties": {
        "image": "corral/busybox:latest", "command": ["sleep", "3600"],
        "resources": {"requests": {"cpu": cpu, "memoryInGB": mem}}}}]}
    if placement:
        props["placement"] = placement
    spec = ContainerGroup.model_validate({"location": "local", "tags": tags or None, "properties": props})
    meta = GroupMeta(uid=uuid.uuid4().hex[:16], subscription=SUB, resourceGroup=RG, name=f"g{i}",
                     createdAt=datetime.now(UTC))
    return GroupRecord(spec=spec, meta=meta).dump()


def nodes_of(count: int, cpu: int) -> list[NodeInfo]:
    now = datetime.now(UTC)
    return [NodeInfo(name=f"node-{i:05d}", address=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", cpu=cpu,
                     memoryGB=cpu * 4, maxGroups=MAX_GROUPS, lastHeartbeat=now, zone=str(i % ZONES + 1))
            for i in range(count)]


def fresh_store(root: Path, nodes: list[NodeInfo]) -> tuple[SqliteStore, NetworkControl]:
    store = SqliteStore(root / f"{uuid.uuid4().hex}.db")
    network = NetworkControl(store, NetworkSettings(default_prefix="10.0.0.0/8"))
    network.start()
    for i in range(0, len(nodes), BATCH_OPS):
        store.txn([Put(key=NODES + n.name, value=n.model_dump(mode="json")) for n in nodes[i:i + BATCH_OPS]])
    return store, network


class TimedBinder(Binder):
    """The product's binder, with the time from taking each group to its bind being committed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.taken: dict[str, float] = {}
        self.latencies: list[float] = []

    def _try(self, key, p) -> None:  # type: ignore[no-untyped-def]
        self.taken[key] = time.perf_counter()
        super()._try(key, p)

    def _flush(self) -> None:
        keys = list(self._batch)
        super()._flush()
        t = time.perf_counter()
        for k in keys:
            start = self.taken.pop(k, None)
            if start is not None:
                self.latencies.append(t - start)


def run_new(root: Path, nodes: list[NodeInfo], sizes: list[tuple[float, float]], scenario: str) -> dict[str, Any]:
    store, network = fresh_store(root, nodes)
    values = [group_value(i, c, m, scenario) for i, (c, m) in enumerate(sizes)]
    for i in range(0, len(values), BATCH_OPS):
        store.txn([Put(key=group_key(SUB, RG, f"g{j}"), value=v) for j, v in enumerate(values[i:i + BATCH_OPS], i)])
    binder = TimedBinder(store, SchedulerSettings(strategy="binpack"), network.settings,
                         network.vnets.default_subnet_id())
    t0 = time.perf_counter()
    binder.resync()
    elapsed = time.perf_counter() - t0
    bound = len(binder.state.bound)
    used = int(np.count_nonzero(binder.state.nodes.count[: binder.state.nodes.n]))
    store.close()
    lat = sorted(binder.latencies)
    return {"placed": bound, "rate": bound / elapsed, "p99": lat[int(len(lat) * 0.99) - 1] * 1e3 if lat else 0.0,
            "used": used, "seconds": elapsed}


def run_old(root: Path, nodes: list[NodeInfo], sizes: list[tuple[float, float]], budget: float) -> dict[str, Any]:
    store, _ = fresh_store(root, nodes)
    records = [GroupRecord.model_validate(group_value(i, c, m, "plain")) for i, (c, m) in enumerate(sizes)]
    versions = {}
    for i in range(0, len(records), BATCH_OPS):
        recs = store.txn([Put(key=group_key(SUB, RG, f"g{j}"), value=r.dump())
                          for j, r in enumerate(records[i:i + BATCH_OPS], i)])
        versions.update({r.key: r.version for r in recs if r is not None})
    placed, lat = 0, []
    t0 = time.perf_counter()
    node_loads = loads(nodes, records)
    for j, g in enumerate(records):
        t = time.perf_counter()
        if t - t0 > budget:
            break
        try:
            g.meta.node = place(g, node_loads)
        except OldUnschedulable:
            continue
        key = group_key(SUB, RG, f"g{j}")
        store.put(key, g.dump(), expect_version=versions[key])
        node_loads = loads(nodes, records)  # as the old binder did after every placement
        placed += 1
        lat.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - t0
    store.close()
    lat.sort()
    return {"placed": placed, "rate": placed / elapsed, "p99": lat[int(len(lat) * 0.99) - 1] * 1e3 if lat else 0.0,
            "used": None, "seconds": elapsed}


def best_fit_decreasing(sizes: list[tuple[float, float]], cpu: float, mem: float, max_groups: int) -> int:
    """Nodes best-fit-decreasing needs for the groups (sorted by normalised size, each to the fullest
    opened node it fits, a new node when none)."""
    order = sorted(sizes, key=lambda s: -(s[0] / cpu + s[1] / mem))
    n = len(order)
    free_c, free_m, count = np.full(n, float(cpu)), np.full(n, float(mem)), np.zeros(n, dtype=np.int64)
    opened = 0
    for c, m in order:
        fc, fm = free_c[:opened], free_m[:opened]
        ok = (fc >= c - 1e-9) & (fm >= m - 1e-9) & (count[:opened] < max_groups)
        if ok.any():
            i = int(np.argmin(np.where(ok, (fc - c) / cpu + (fm - m) / mem, np.inf)))
        else:
            i, opened = opened, opened + 1
        free_c[i] -= c
        free_m[i] -= m
        count[i] += 1
    return opened


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="Only 1,000 nodes x 10,000 groups.")
    ap.add_argument("--baseline-budget", type=float, default=3.0, help="Seconds the old code runs per cluster.")
    args = ap.parse_args()
    clusters = [(1000, 10_000)] if args.quick else [(100, 10_000), (1000, 10_000), (1000, 50_000),
                                                    (5000, 10_000), (5000, 50_000)]
    scenarios = ["plain", "anti-affinity", "zone spread"]
    head = (f"{'nodes':>6} {'groups':>7} {'node':>9} {'scenario':<14} {'code':<4} {'placed':>7} {'placements/s':>13} "
            f"{'p99 ms':>8} {'nodes used':>10} {'BFD':>6} {'bound':>6} {'vs BFD':>7}")
    print(head)
    print("-" * len(head))
    with tempfile.TemporaryDirectory(prefix="csd-sched-bench-") as tmp:
        root = Path(tmp)
        for n_nodes, n_groups in clusters:
            cpu = node_cpu_for(n_nodes, n_groups)
            nodes = nodes_of(n_nodes, cpu)
            sizes = workload(n_groups, seed=n_nodes + n_groups)
            bfd = best_fit_decreasing(sizes, cpu, cpu * 4, MAX_GROUPS)
            bound = math.ceil(max(sum(c for c, _ in sizes) / cpu, sum(m for _, m in sizes) / (cpu * 4)))
            shape = f"{cpu}c/{cpu * 4}G"
            for scenario in scenarios:
                r = run_new(root, nodes, sizes, scenario)
                ratio = f"{r['used'] / bfd - 1:+.1%}" if scenario == "plain" else f"({r['used'] / bfd - 1:+.1%})"
                print(f"{n_nodes:>6,} {n_groups:>7,} {shape:>9} {scenario:<14} {'new':<4} {r['placed']:>7,} "
                      f"{r['rate']:>13,.0f} {r['p99']:>8.2f} {r['used']:>10,} {bfd:>6,} {bound:>6,} {ratio:>7}",
                      flush=True)
            o = run_old(root, nodes, sizes, args.baseline_budget)
            done = "" if o["placed"] == n_groups else f" (in {o['seconds']:.0f} s)"
            print(f"{n_nodes:>6,} {n_groups:>7,} {shape:>9} {'plain':<14} {'old':<4} {o['placed']:>7,} "
                  f"{o['rate']:>13,.0f} {o['p99']:>8.2f} {'-':>10} {bfd:>6,} {bound:>6,} {'-':>7}{done}", flush=True)
    print("\nvs BFD in parentheses: constrained placements against the unconstrained best-fit-decreasing.")


if __name__ == "__main__":
    main()
