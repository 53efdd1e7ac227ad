"""API throughput and latency under load: Debian's ``wrk`` against a real ``corral up`` on loopback.

    .venv/bin/python bench/api.py [-d 10] [--groups 20] [--http]

Rows (each a bounded wrk run of ``-d`` seconds after a short warm-up, one wrk thread so the
other core is the server's):
  GET one group          GET .../containerGroups/NAME, 8 connections, as fast as it answers
  GET list (N groups)    GET .../resourceGroups/RG/.../containerGroups with N groups in it
  GET subscription list  GET /subscriptions/SUB/.../containerGroups
  PUT (unchanged spec)   PUT of a group's own body again, 4 connections (what a re-run
                         `az container create` sends: an update that changes nothing)
  GET one group @ R/s    the same GET paced to about R requests per second (wrk's delay()
                         per connection: a closed loop, so the achieved rate is printed)
  GET with a JWT         GET one group authenticated by an issued JWT (what az sends)

Prints requests per second, latency percentiles (ms) and the server's CPU time per request
(user + system of the `corral up` process over the run: the figure that holds on a busy
machine, where req/s depends on what else runs). Everything runs on 127.0.0.1;
the server and its groups are removed at the end. Needs root (the server runs real groups).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from corral_server import CorralServer  # noqa: E402

from corral.api.auth import issue_jwt  # noqa: E402
from corral.cli.client import API_VERSION  # noqa: E402

IMAGE = "corral/busybox:latest"

LUA = """
local method, body, pace = os.getenv("CB_METHOD"), os.getenv("CB_BODY"), tonumber(os.getenv("CB_DELAY_MS"))
wrk.method = method
wrk.headers["Authorization"] = "Bearer " .. os.getenv("CB_TOKEN")
if body and body ~= "" then
  local f = assert(io.open(body, "rb")); wrk.body = f:read("*a"); f:close()
  wrk.headers["Content-Type"] = "application/json"
end
if pace then function delay() return pace end end
function done(summary, latency, requests)
  io.write(string.format('CB_RESULT {"requests": %d, "seconds": %.3f, "errors": %d, "non2xx": %d, '
    .. '"p50": %.3f, "p90": %.3f, "p99": %.3f, "max": %.3f}\\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status,
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3, latency:percentile(99) / 1e3,
    latency.max / 1e3))
end
"""


def group_body(i: int) -> dict:
    return {"location": "local", "tags": {"bench": "api"}, "properties": {
        "osType": "Linux", "restartPolicy": "Always",
        "containers": [{"name": "app", "properties": {
            "image": IMAGE, "command": ["sleep", "3600"],
            "environmentVariables": [{"name": "MODE", "value": "bench"}, {"name": "N", "value": str(i)}],
            "resources": {"requests": {"cpu": 0.05, "memoryInGB": 0.05}}}}]}}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, token: str, seconds: float, connections: int, work: Path, method: str = "GET",
        body: dict | None = None, delay_ms: float | None = None, pid: int | None = None) -> dict:
    script = work / "bench.lua"
    script.write_text(LUA)
    env = {**os.environ, "CB_METHOD": method, "CB_TOKEN": token, "CB_BODY": ""}
    if body is not None:
        (work / "body.json").write_text(json.dumps(body))
        env["CB_BODY"] = str(work / "body.json")
    if delay_ms is not None:
        env["CB_DELAY_MS"] = f"{delay_ms:.3f}"
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s", "-s", str(script), url]
    cpu0 = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    cpu = cpu_seconds(pid) - cpu0 if pid else 0.0
    line = next(ln for ln in out.splitlines() if ln.startswith("CB_RESULT "))
    res = json.loads(line[len("CB_RESULT "):])
    res["rps"] = res["requests"] / res["seconds"]
    res["cpu_ms"] = 1000 * cpu / max(1, res["requests"])
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-d", type=float, default=10, help="seconds per wrk run")
    ap.add_argument("--groups", type=int, default=20, help="groups in the listed resource group")
    ap.add_argument("--rate", type=float, default=500, help="paced GET rate, requests per second")
    ap.add_argument("--http", action="store_true", help="plain HTTP instead of HTTPS (the default)")
    ap.add_argument("--prefix", default="cbapi", help="bridge name and cgroup prefix of the server")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("wrk is not installed (make system-packages)", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="corral-bench-api-", dir="/var/tmp"))
    extra = ["--network", "vnet", "--pool-size", "0", "--dns-listen", "off"]
    if args.http:
        extra.append("--insecure-http")
    server = CorralServer(work / "corral", bridge=f"{args.prefix}0"[:15], subnet="10.68.0.0/16",
                          cgroup_parent=f"/{args.prefix}", extra=extra)
    rows: list[tuple[str, dict]] = []
    try:
        server.build_base_image()
        server.start()
        client = server.client()
        cfg = server.config
        for i in range(args.groups):
            client.request("PUT", client.group_path("bench", f"g{i}"), json=group_body(i)).raise_for_status()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # measure a settled node, not one starting groups
            states = [g["properties"]["instanceView"]["state"] for g in client.request(
                "GET", client.group_path("bench")).json()["value"]]
            if states.count("Running") == args.groups:
                break
            time.sleep(0.5)
        q = f"?api-version={API_VERSION}"
        one = cfg.endpoint + client.group_path("bench", "g0") + q
        lst = cfg.endpoint + client.group_path("bench") + q
        sub = f"{cfg.endpoint}/subscriptions/{client.sub}/providers/Microsoft.ContainerInstance/containerGroups{q}"
        token = cfg.token
        pid = server.proc.pid if server.proc else None

        def run(name: str, url: str, conns: int = 8, tok: str = token, **kw: object) -> None:
            rows.append((name, wrk(url, tok, args.d, conns, work, pid=pid, **kw)))  # type: ignore[arg-type]

        wrk(one, token, 2, 8, work)  # warm-up
        run("GET /healthz (floor)", f"{cfg.endpoint}/healthz")
        run("GET one group", one)
        run(f"GET list ({args.groups} groups)", lst)
        run("GET subscription list", sub)
        put = cfg.endpoint + client.group_path("bench", "g1") + q
        run("PUT (unchanged spec)", put, 4, method="PUT", body=group_body(1))
        # Paced: wrk waits delay() after each answer, so aim by a short trial run first.
        conns, delay = 8, 1000 * 8 / args.rate
        for _ in range(2):
            got = wrk(one, token, 2, conns, work, delay_ms=delay)["rps"]
            delay = max(0.1, delay * got / args.rate)
        run(f"GET one group @ ~{args.rate:g}/s", one, conns, delay_ms=delay)
        run("GET one group, JWT auth", one, tok=issue_jwt(token).access_token)
    finally:
        server.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nAPI under wrk, {args.d:g} s per row, {'HTTP' if args.http else 'HTTPS'} on 127.0.0.1 "
          f"(machine: {os.cpu_count()} cores)")
    print(f"{'what':<28} {'req/s':>8} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8} {'cpu/req':>8}")
    for name, r in rows:
        bad = f"  errors {r['errors']}, non-2xx {r['non2xx']}" if r["errors"] or r["non2xx"] else ""
        print(f"{name:<28} {r['rps']:8.0f} {r['p50']:8.2f} {r['p90']:8.2f} {r['p99']:8.2f} {r['max']:8.1f} "
              f"{r['cpu_ms']:8.3f}{bad}")
    print("(latencies and server CPU per request in ms)")
    print("targets: GET one group >= 2000 req/s; p99 <= 20 ms at 500 req/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
