"""Store latency: SQLite (the baseline) beside etcd (one member, one behind client TLS, then three), in the same run.

    .venv/bin/python bench/store.py [-n 300]

Per store: get, list of 100 records, count, put, CAS put, a txn of 100 puts, and the latency
from a put to a waiting watcher's wake-up, in milliseconds (median and p95), plus a watch call
that finds its events already in the window (the agents' and controllers' loop). etcd members
run on free loopback ports under a temp dir and are removed at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from etcd_support import run_etcd  # noqa: E402

from corral.store.base import Put, Store  # noqa: E402
from corral.store.open import open_store  # noqa: E402

VALUE = {"spec": {"properties": {"containers": [{"name": "c", "image": "busybox", "cpu": 1}] * 3}},
         "meta": {"state": "Running", "node": "n1", "epoch": 3}}


def timed(n: int, fn: Callable[[int], object]) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1000)
    return out


def watch_wake(store: Store, n: int) -> list[float]:
    """ms from a put to the watcher (waiting in another thread) returning it."""
    out = []

    def wait(rev: int, woke: list[float]) -> None:
        store.watch("/wake/", rev, 5)
        woke.append(time.perf_counter())

    for i in range(n):
        woke: list[float] = []
        t = threading.Thread(target=wait, args=(store.revision(), woke))
        t.start()
        time.sleep(0.002)
        sent = time.perf_counter()
        store.put(f"/wake/{i}", VALUE)
        t.join()
        out.append((woke[0] - sent) * 1000)
    return out


def measure(store: Store, n: int) -> dict[str, list[float]]:
    store.txn([Put(key=f"/list/{i:03d}", value=VALUE) for i in range(100)])
    rec = store.put("/cas", VALUE)
    state = {"v": rec.version}

    def cas(_: int) -> None:
        state["v"] = store.put("/cas", VALUE, expect_version=state["v"]).version

    rev = store.revision()
    store.put("/win/x", VALUE)
    return {
        "get": timed(n, lambda i: store.get("/list/050")),
        "list 100": timed(max(20, n // 10), lambda i: store.list("/list/")),
        "count 100": timed(n, lambda i: store.count("/list/")),
        "put": timed(n, lambda i: store.put(f"/put/{i}", VALUE)),
        "CAS put": timed(n, cas),
        "txn 100 puts": timed(max(10, n // 30),
                              lambda i: store.txn([Put(key=f"/txn/{j}", value=VALUE) for j in range(100)])),
        "watch (in window)": timed(n, lambda i: store.watch("/win/", rev, 1)),
        "put -> watcher": watch_wake(store, max(20, n // 5)),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=300)
    args = ap.parse_args()
    results: dict[str, dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="cet-bench-") as tmp:
        sqlite = open_store(f"sqlite://{tmp}/store.db")
        results["sqlite"] = measure(sqlite, args.n)
        sqlite.close()
        for members, tls in ((1, False), (1, True), (3, False)):
            with run_etcd(Path(tmp), members=members, tls=tls) as etcd:
                store = open_store(etcd.url("/bench"))
                results[f"etcd x{members}" + (" TLS" if tls else "")] = measure(store, args.n)
                store.close()
    names = list(results)
    print(f"{'ms (median / p95)':<20}" + "".join(f"{n:>20}" for n in names))
    for op in results[names[0]]:
        cells = []
        for n in names:
            xs = sorted(results[n][op])
            cells.append(f"{statistics.median(xs):8.3f} / {xs[int(len(xs) * 0.95) - 1]:7.3f}")
        print(f"{op:<20}" + "".join(f"{c:>20}" for c in cells))


if __name__ == "__main__":
    main()
