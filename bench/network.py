"""Network sandbox set-up cost: ADD and DEL p50/p99, four ways, in one run.

  (a) standard CNI ``bridge`` + ``host-local`` executables
  (b) ``corral-vnet`` as a CNI executable (what ``corral up`` installs for runtimes: the native
      client, ``make venv`` builds it), handing the call to the node's network service
  (b") the Python launcher instead (installed where no C compiler built the native client)
  (b') the executable with no service running: it does the work itself
  (c) ``corral-vnet`` in-process (what the node agent calls)
  (d) VnetNetworkManager taking a ready sandbox from the standby pool (create/delete)

(a) and the (b) rows alternate sandbox by sandbox, so a burst of load on the machine
hits them alike. Everything runs inside a throw-away "host" network namespace
(``<prefix>-hb``), so the real host's links and iptables are untouched. Needs root.

    .venv/bin/python bench/network.py [-n 30] [--prefix cnt]
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
from corral.net.vnet.install import install_executable
from corral.net.vnet.service import CniService
from corral.node.network import cni, nsfiles
from corral.node.network.vnet_backend import VnetNetworkConfig, VnetNetworkManager


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))]


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


class Bench:
    def __init__(self, n: int, tmp: Path, prefix: str = "cnt") -> None:
        self.n = n
        self.tmp = tmp
        self.prefix = prefix
        self.rows: list[tuple[str, list[float], list[float]]] = []
        self.made: list[str] = []

    def make_netns(self, tag: str) -> list[str]:
        names = [f"{self.prefix}-hb-{tag}{i}" for i in range(self.n)]
        for name in names:
            nsfiles.create_namespaces(nsfiles.netns_path(name), self.tmp / f"{name}.uts",
                                      self.tmp / f"{name}.ipc", name)
            self.made.append(name)
        return names

    def drop_netns(self) -> None:
        for name in self.made:
            for p in (nsfiles.netns_path(name), self.tmp / f"{name}.uts", self.tmp / f"{name}.ipc"):
                nsfiles.remove_namespace_file(p)
        self.made.clear()

    def run_conflists(self, bindir: Path, modes: list[tuple[str, dict[str, Any]]]) -> None:
        """ADD then DEL of n sandboxes per mode, the modes taking turns (rotated) sandbox by sandbox."""
        nets = {label: self.make_netns(f"{k}-") for k, (label, _) in enumerate(modes)}
        adds: dict[str, list[float]] = {label: [] for label, _ in modes}
        dels: dict[str, list[float]] = {label: [] for label, _ in modes}
        results: dict[tuple[str, int], dict[str, Any]] = {}
        for label, conflist in modes:  # warm-up: the first ADD sets the network up on the node
            path = str(nsfiles.netns_path(nets[label][0]))
            res = cni.add(bindir, conflist, container_id="warm", netns=path, ifname="eth1")
            cni.delete(bindir, conflist, container_id="warm", netns=path, ifname="eth1", prev=res)
        for i in range(self.n):
            for label, conflist in modes[i % len(modes):] + modes[:i % len(modes)]:
                path = str(nsfiles.netns_path(nets[label][i]))
                t0 = time.perf_counter()
                results[label, i] = cni.add(bindir, conflist, container_id=f"b{i}", netns=path, ifname="eth0")
                adds[label].append((time.perf_counter() - t0) * 1000)
        for i in range(self.n):
            for label, conflist in modes[i % len(modes):] + modes[:i % len(modes)]:
                path = str(nsfiles.netns_path(nets[label][i]))
                dels[label].append(timed(partial(cni.delete, bindir, conflist, container_id=f"b{i}", netns=path,
                                                 ifname="eth0", prev=results[label, i])))
        for label, _ in modes:
            self.rows.append((label, adds[label], dels[label]))

    def run_inprocess(self, conf: VnetConf, label: str = "(c) corral-vnet in-process",
                      paths: list[str] | None = None) -> None:
        """ADD then DEL of n sandboxes in-process (in ``paths``, n network namespaces: default new ones)."""
        paths = paths or [str(nsfiles.netns_path(name)) for name in self.make_netns("i")]
        plugin.add(conf, "warm", paths[0], "eth1")  # node set-up
        plugin.delete(conf, "warm", paths[0], "eth1")
        adds = [timed(partial(plugin.add, conf, f"i{i}", p, "eth0")) for i, p in enumerate(paths)]
        dels = [timed(partial(plugin.delete, conf, f"i{i}", p, "eth0")) for i, p in enumerate(paths)]
        self.rows.append((label, adds, dels))

    def run_pool(self, conf: VnetConf, host_path: str) -> None:
        mgr = VnetNetworkManager(VnetNetworkConfig(vnet=conf, state_dir=self.tmp / "pool-state",
                                                   netns_prefix=f"{self.prefix}-", pool_size=self.n,
                                                   dns_servers=["10.199.0.1"], host_netns=host_path))
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
        base = next((r for r in self.rows if r[0].startswith("(a)")), None)
        fast = next((r for r in self.rows if r[0].startswith("(b) ")), None)
        if base and fast:
            lines.append(f"(b) / (a): ADD p50 {pct(fast[1], 50) / pct(base[1], 50):.2f}x, "
                         f"DEL p50 {pct(fast[2], 50) / pct(base[2], 50):.2f}x  (target: <= 1)")
        return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=30, help="sandboxes per mode")
    ap.add_argument("--prefix", default="cnt", help="prefix of the network namespaces the bench makes")
    ap.add_argument("--work-dir", default="/var/tmp", help="where the plugins keep their state during the run")
    args = ap.parse_args()
    host = f"{args.prefix}-hb"
    host_path = f"/var/run/netns/{host}"
    # State goes where a node keeps it (/var/lib/corral): a plain disk directory, not /tmp,
    # which may be a tmpfs or (on the development machines) watched and 10x slower to create files in.
    tmp = Path(tempfile.mkdtemp(prefix="corral-bench-net-", dir=args.work_dir))
    subprocess.run(["ip", "netns", "add", host], check=True)
    subprocess.run(["ip", "netns", "exec", host, "ip", "link", "set", "lo", "up"], check=True)
    bench = Bench(args.n, tmp, args.prefix)
    try:
        bindir = tmp / "bin"
        bindir.mkdir()
        install_executable(bindir / "corral-vnet")  # what install_plugin puts in /opt/cni/bin
        install_executable(bindir / "corral-vnet-py", native=False)  # the plugin ignores its `type`
        for p in ("bridge", "host-local"):
            (bindir / p).symlink_to(f"/usr/lib/cni/{p}")
        std = {"cniVersion": "1.0.0", "name": "cnt-bench-std", "plugins": [{
            "type": "bridge", "bridge": "cntb0", "isGateway": True, "ipMasq": True,
            "ipam": {"type": "host-local", "dataDir": str(tmp / "hl"),
                     "ranges": [[{"subnet": "10.199.160.0/24", "gateway": "10.199.160.1"}]],
                     "routes": [{"dst": "0.0.0.0/0"}]}}]}
        sock = str(tmp / "vnet.sock")

        def vconf(name: str, bridge: str, block: str) -> dict[str, Any]:
            return {"cniVersion": "1.0.0", "name": name, "type": "corral-vnet", "bridge": bridge,
                    "dataDir": str(tmp / "vnet"), "ipam": {"subnet": "10.199.160.0/19", "nodeBlock": block}}

        def conflist(conf: dict[str, Any], **extra: Any) -> dict[str, Any]:
            return {"cniVersion": "1.0.0", "name": conf["name"],
                    "plugins": [{**{k: v for k, v in conf.items() if k not in ("cniVersion", "name")}, **extra}]}

        svc_conf = vconf("cnt-bench-svc", "cntb1", "10.199.161.0/24")
        exe_conf = vconf("cnt-bench-exe", "cntb4", "10.199.164.0/24")
        py_conf = {**vconf("cnt-bench-py", "cntb5", "10.199.165.0/24"), "type": "corral-vnet-py"}
        inproc = VnetConf.model_validate(vconf("cnt-bench-inproc", "cntb2", "10.199.162.0/24"))
        pooled = VnetConf.model_validate(vconf("cnt-bench-pool", "cntb3", "10.199.163.0/24"))

        def work() -> None:
            service = CniService(sock)  # started here, so it serves this bench's "host" netns
            if not service.start():
                raise RuntimeError(f"could not start the network service on {sock}")
            try:
                bench.run_conflists(bindir, [
                    ("(a) standard bridge + host-local (exec)", std),
                    ("(b) corral-vnet executable + node service", conflist(svc_conf, serviceSocket=sock)),
                    ('(b") Python launcher + node service', conflist(py_conf, serviceSocket=sock)),
                    ("(b') corral-vnet executable, no service", conflist(exe_conf, serviceSocket=str(tmp / "none"))),
                ])
                bench.run_inprocess(inproc)
            finally:
                service.stop()
                bench.drop_netns()
            bench.run_pool(pooled, host_path)
            for c in (svc_conf, exe_conf, py_conf):
                plugin.teardown(VnetConf.model_validate(c))
            plugin.teardown(inproc)

        netops.in_netns(host_path, work)
        print(bench.table())
    finally:
        subprocess.run(["ip", "netns", "del", host], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
