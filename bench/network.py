"""Network sandbox set-up cost: ADD and DEL p50/p99, four ways, in one run.

  (a) standard CNI ``bridge`` + ``host-local`` executables
  (b) ``corral-vnet`` as a CNI executable (the same conflist path a runtime uses)
  (c) ``corral-vnet`` in-process (what the node agent calls)
  (d) VnetNetworkManager taking a ready sandbox from the standby pool (create/delete)

Everything runs inside a throw-away "host" network namespace (``cnt-hb``), so the
real host's links and iptables are untouched. Needs root.

    .venv/bin/python bench/network.py [-n 30]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from corral.net.vnet import netops, plugin
from corral.net.vnet.config import VnetConf
from corral.node.network import cni, nsfiles
from corral.node.network.vnet_backend import VnetNetworkConfig, VnetNetworkManager

HOST = "cnt-hb"
HOST_PATH = f"/var/run/netns/{HOST}"


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


class Bench:
    def __init__(self, n: int, tmp: Path) -> None:
        self.n = n
        self.tmp = tmp
        self.rows: list[tuple[str, list[float], list[float]]] = []
        self.netns = [f"cnt-hb-s{i}" for i in range(n)]

    def make_netns(self) -> None:
        for name in self.netns:
            nsfiles.create_namespaces(nsfiles.netns_path(name), self.tmp / f"{name}.uts",
                                      self.tmp / f"{name}.ipc", name)

    def drop_netns(self) -> None:
        for name in self.netns:
            for p in (nsfiles.netns_path(name), self.tmp / f"{name}.uts", self.tmp / f"{name}.ipc"):
                nsfiles.remove_namespace_file(p)

    def run_conflist(self, label: str, bindir: Path, conflist: dict[str, Any]) -> None:
        adds: list[float] = []
        dels: list[float] = []
        results: list[dict[str, Any]] = []
        for i, name in enumerate(self.netns):
            path = str(nsfiles.netns_path(name))
            t0 = time.perf_counter()
            results.append(cni.add(bindir, conflist, container_id=f"b{i}", netns=path, ifname="eth0"))
            adds.append((time.perf_counter() - t0) * 1000)
        for i, name in enumerate(self.netns):
            path = str(nsfiles.netns_path(name))
            dels.append(timed(partial(cni.delete, bindir, conflist, container_id=f"b{i}", netns=path,
                                      ifname="eth0", prev=results[i])))
        self.rows.append((label, adds, dels))

    def run_inprocess(self, conf: VnetConf) -> None:
        paths = [str(nsfiles.netns_path(name)) for name in self.netns]
        adds = [timed(partial(plugin.add, conf, f"i{i}", p, "eth0")) for i, p in enumerate(paths)]
        dels = [timed(partial(plugin.delete, conf, f"i{i}", p, "eth0")) for i, p in enumerate(paths)]
        self.rows.append(("(c) corral-vnet in-process", adds, dels))

    def run_pool(self, conf: VnetConf) -> None:
        mgr = VnetNetworkManager(VnetNetworkConfig(vnet=conf, state_dir=self.tmp / "pool-state", netns_prefix="cnt-",
                                                   pool_size=self.n, dns_servers=["10.199.0.1"],
                                                   host_netns=HOST_PATH))
        try:
            if not mgr.wait_pool(120):
                raise RuntimeError(f"pool did not fill: {mgr.pool_errors}")
            mgr.stop_pool()  # measure the take itself, not the refill competing for the CPU
            adds = [timed(partial(mgr.create, f"g{i}", f"g{i}")) for i in range(self.n)]
            dels = [timed(partial(mgr.delete, f"g{i}")) for i in range(self.n)]
            self.rows.append(("(d) standby pool take (VnetNetworkManager)", adds, dels))
        finally:
            for s in mgr.list():
                mgr.delete(s.id)
            mgr.teardown()

    def table(self) -> str:
        head = f"{'mode':<46} {'ADD p50':>9} {'ADD p99':>9} {'DEL p50':>9} {'DEL p99':>9}   (ms, n={self.n})"
        lines = [head, "-" * len(head)]
        for label, adds, dels in self.rows:
            lines.append(f"{label:<46} {pct(adds, 50):9.1f} {pct(adds, 99):9.1f} {pct(dels, 50):9.1f} "
                         f"{pct(dels, 99):9.1f}")
        return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=30, help="sandboxes per mode")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="corral-bench-net-"))
    subprocess.run(["ip", "netns", "add", HOST], check=True)
    subprocess.run(["ip", "netns", "exec", HOST, "ip", "link", "set", "lo", "up"], check=True)
    bench = Bench(args.n, tmp)
    try:
        bindir = tmp / "bin"
        bindir.mkdir()
        exe = bindir / "corral-vnet"
        exe.write_text(f"#!/bin/sh\nexec {sys.executable} -m corral.net.vnet.cli\n")
        exe.chmod(0o755)
        for p in ("bridge", "host-local"):
            (bindir / p).symlink_to(f"/usr/lib/cni/{p}")
        std = {"cniVersion": "1.0.0", "name": "cnt-bench-std", "plugins": [{
            "type": "bridge", "bridge": "cntb0", "isGateway": True, "ipMasq": True,
            "ipam": {"type": "host-local", "dataDir": str(tmp / "hl"),
                     "ranges": [[{"subnet": "10.199.160.0/24", "gateway": "10.199.160.1"}]],
                     "routes": [{"dst": "0.0.0.0/0"}]}}]}

        def vconf(name: str, bridge: str, block: str) -> dict[str, Any]:
            return {"cniVersion": "1.0.0", "name": name, "type": "corral-vnet", "bridge": bridge,
                    "dataDir": str(tmp / "vnet"), "ipam": {"subnet": "10.199.160.0/19", "nodeBlock": block}}

        exe_conf = vconf("cnt-bench-exe", "cntb1", "10.199.161.0/24")
        exe_list = {"cniVersion": "1.0.0", "name": "cnt-bench-exe",
                    "plugins": [{k: v for k, v in exe_conf.items() if k not in ("cniVersion", "name")}]}
        inproc = VnetConf.model_validate(vconf("cnt-bench-inproc", "cntb2", "10.199.162.0/24"))
        pooled = VnetConf.model_validate(vconf("cnt-bench-pool", "cntb3", "10.199.163.0/24"))

        def work() -> None:
            bench.make_netns()
            try:
                bench.run_conflist("(a) standard bridge + host-local (exec)", bindir, std)
                bench.run_conflist("(b) corral-vnet executable", bindir, exe_list)
                plugin.add(inproc, "warm", str(nsfiles.netns_path(bench.netns[0])), "eth1")  # node set-up
                plugin.delete(inproc, "warm", str(nsfiles.netns_path(bench.netns[0])), "eth1")
                bench.run_inprocess(inproc)
            finally:
                bench.drop_netns()
            bench.run_pool(pooled)
            for c in (VnetConf.model_validate(exe_conf), inproc):
                plugin.teardown(c)

        netops.in_netns(HOST_PATH, work)
        print(bench.table())
    finally:
        subprocess.run(["ip", "netns", "del", HOST], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
