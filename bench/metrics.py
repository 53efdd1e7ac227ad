"""What the metrics pipeline costs the control plane, beside baselines measured in the same run.

    .venv/bin/python bench/metrics.py [-g 250] [--minutes 60]

Simulates ``-g`` groups of two containers sampled every 5 s for ``--minutes`` minutes (a fake clock, a
real SQLite store in a temp dir) and prints:

  receive          MetricsHistory.receive of one node report (all groups), per report
  flush            writing one finished minute of every group to the store (one transaction)
  naive write      baseline: one store.put per group per sample, as a history that persisted every
                   sample would do (what the in-memory minute avoids)
  query 1h PT1M    the Azure Monitor query the portal's charts make (split by container)
  query 7d PT1H    a week at hour grain after compaction (hour rollups)
  compact          one compaction pass (hour rollups of every group)
  request metrics  RequestMetrics around a trivial ASGI app, per request, beside the bare app

Timings are medians in milliseconds (microseconds for the per-request rows).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from corral.api.monitor import Subject, metrics_response  # noqa: E402
from corral.api.prometheus import RequestMetrics  # noqa: E402
from corral.control.metrics.history import MetricsHistory  # noqa: E402
from corral.control.metrics.rollups import HOUR, compact  # noqa: E402
from corral.model.metrics import ContainerSample, GroupSample, MetricsReport  # noqa: E402
from corral.store.sqlite import SqliteStore  # noqa: E402

T0 = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = T0.timestamp()

    def __call__(self) -> float:
        return self.t


def report(groups: int, t: datetime) -> MetricsReport:
    return MetricsReport(node="n", groups=[
        GroupSample(uid=f"g{i:05d}", time=t, rxBytesPerSecond=100.0, txBytesPerSecond=50.0, containers={
            "web": ContainerSample(cpu=0.5, memoryBytes=50_000_000),
            "side": ContainerSample(cpu=0.01, memoryBytes=5_000_000)})
        for i in range(groups)])


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def bench_history(groups: int, minutes: int, root: Path) -> list[tuple[str, float, str]]:
    store = SqliteStore(root / "store.db")
    for i in range(groups):
        store.put(f"/groups/s/rg/g{i:05d}", {"meta": {"uid": f"g{i:05d}"}})
    clock = Clock()
    history = MetricsHistory(store, clock=clock, grace=0)
    receive, flush = [], []
    for minute in range(minutes):
        for tick in range(12):
            t = T0 + timedelta(minutes=minute, seconds=5 * tick)
            rep = report(groups, t)
            start = time.perf_counter()
            history.receive(rep)
            receive.append(time.perf_counter() - start)
        clock.t = (T0 + timedelta(minutes=minute + 1)).timestamp()
        start = time.perf_counter()
        history.flush()
        flush.append(time.perf_counter() - start)

    naive_store = SqliteStore(root / "naive.db")
    naive = []
    for tick in range(12):
        start = time.perf_counter()
        for g in report(groups, T0 + timedelta(seconds=5 * tick)).groups:
            naive_store.put(f"/samples/{g.uid}/{tick}", g.model_dump(mode="json"))
        naive.append(time.perf_counter() - start)

    now = T0 + timedelta(minutes=minutes)
    one = Subject("/x", "local", lambda start, end: [("g00000", "g00000")])
    q = {"metricnames": "CpuUsage,MemoryUsage", "timespan": "PT1H", "interval": "PT1M",
         "aggregation": "Average", "$filter": "containerName eq '*'"}
    query = []
    for _ in range(20):
        start = time.perf_counter()
        metrics_response(history, one, q, now=now)
        query.append(time.perf_counter() - start)

    start = time.perf_counter()
    compact(store, now.timestamp() + HOUR)
    compaction = time.perf_counter() - start
    weekly = {**q, "timespan": "P7D", "interval": "PT1H"}
    week = []
    for _ in range(20):
        start = time.perf_counter()
        metrics_response(history, one, weekly, now=now + timedelta(hours=1))
        week.append(time.perf_counter() - start)
    return [
        ("receive (one report)", median_ms(receive), f"{groups} groups"),
        ("flush (one minute)", median_ms(flush), f"{groups} rollups, one transaction"),
        ("naive write (one sample)", median_ms(naive), f"{groups} store.put, every 5 s"),
        ("query 1h PT1M", median_ms(query), "2 metrics split by container"),
        ("query 7d PT1H", median_ms(week), "hour rollups"),
        ("compact", compaction * 1000, f"{groups} groups"),
    ]


def bench_middleware(n: int) -> list[tuple[str, float, str]]:
    async def bare(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    wrapped = RequestMetrics(bare)

    async def run(app) -> list[float]:  # type: ignore[no-untyped-def]
        async def receive():  # type: ignore[no-untyped-def]
            return {"type": "http.request", "body": b""}

        async def send(message):  # type: ignore[no-untyped-def]
            return None

        out = []
        for _ in range(n):
            scope = {"type": "http", "method": "GET", "path": "/healthz"}
            start = time.perf_counter()
            await app(scope, receive, send)
            out.append(time.perf_counter() - start)
        return out

    base = asyncio.run(run(bare))
    with_metrics = asyncio.run(run(wrapped))
    return [
        ("bare ASGI app (per request)", median_ms(base) * 1000, "µs"),
        ("with RequestMetrics", median_ms(with_metrics) * 1000, "µs"),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-g", "--groups", type=int, default=250)
    ap.add_argument("--minutes", type=int, default=60)
    ap.add_argument("-n", "--requests", type=int, default=20000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cme-bench-") as tmp:
        rows = bench_history(args.groups, args.minutes, Path(tmp))
    rows += bench_middleware(args.requests)
    print(f"{'what':32} {'median':>10}  notes")
    for name, value, note in rows:
        print(f"{name:32} {value:10.3f}  {note}")


if __name__ == "__main__":
    main()
