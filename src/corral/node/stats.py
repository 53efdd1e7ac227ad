"""Usage sampling on a node: CPU and working-set memory of every running container, network bytes of every
group, turned into rates and sent to the control plane every few seconds.

Everything is read from the kernel, cheaply: per container its cgroup's ``cpuacct.usage``, memory usage and
``memory.stat`` and one pid from ``cgroup.procs``; per group ``/proc/<that pid>/net/dev``, which shows the
group's own network namespace without entering it. Nothing is kept but the previous reading.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from corral.link.protocol import ControlPlaneLink
from corral.model.metrics import ContainerSample, GroupSample, MetricsReport
from corral.node.host import NodeHost, split_container_id
from corral.node.network.networks import NetworkSet
from corral.node.runtime import cgroups
from corral.telemetry import NETWORK_POOL_READY

log = logging.getLogger(__name__)

SAMPLE_INTERVAL = 5.0  # seconds between samples


def read_net_dev(pid: int) -> tuple[int, int] | None:
    """Bytes received and sent on every interface but loopback of ``pid``'s network namespace."""
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.readlines()[2:]  # two header lines
    except OSError:
        return None
    rx = tx = 0
    for line in lines:
        name, _, counters = line.partition(":")
        if name.strip() == "lo":
            continue
        fields = counters.split()
        if len(fields) >= 9:
            rx += int(fields[0])
            tx += int(fields[8])
    return rx, tx


def _rate(now: float, value: int, prev: tuple[float, int] | None) -> float | None:
    """Per second since ``prev``; None without one, or when the counter went back (a new cgroup or namespace)."""
    if prev is None or value < prev[1] or now <= prev[0]:
        return None
    return (value - prev[1]) / (now - prev[0])


class UsageSampler:
    """One reading of the node per ``sample()``; rates are over the time since the previous one."""

    def __init__(self, host: NodeHost, node: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.host, self.node, self.clock = host, node, clock
        self._cpu: dict[str, tuple[float, int]] = {}  # container id -> (time, cpuacct.usage ns)
        self._net: dict[str, tuple[float, int, int]] = {}  # group uid -> (time, rx bytes, tx bytes)

    def sample(self) -> MetricsReport:
        groups: dict[str, GroupSample] = {}
        pids: dict[str, int] = {}
        wall = datetime.now(UTC)
        seen: set[str] = set()
        for cid in self.host.runtime.list_ids():
            parts = split_container_id(cid)
            if parts is None or parts[2]:  # init containers are not sampled
                continue
            uid, name, _ = parts
            path = f"{self.host.cgroup_parent}/{uid}/{cid}"
            stats = cgroups.read_stats(path)
            if stats is None or stats.pids_current == 0:
                continue  # not running: nothing to report
            now = self.clock()
            seen.add(cid)
            cores = _rate(now, stats.cpu_usage_ns, self._cpu.get(cid))
            self._cpu[cid] = (now, stats.cpu_usage_ns)
            group = groups.setdefault(uid, GroupSample(uid=uid, time=wall))
            if cores is not None:
                group.containers[name] = ContainerSample(cpu=cores / 1e9, memoryBytes=stats.memory_working_set_bytes)
            if uid not in pids and (pid := cgroups.first_pid(path)) is not None:
                pids[uid] = pid
        for uid, pid in pids.items():
            counters = read_net_dev(pid)
            if counters is None:
                continue
            now = self.clock()
            prev = self._net.get(uid)
            rx = _rate(now, counters[0], (prev[0], prev[1]) if prev else None)
            tx = _rate(now, counters[1], (prev[0], prev[2]) if prev else None)
            self._net[uid] = (now, *counters)
            if rx is not None and tx is not None:
                groups[uid].rxBytesPerSecond, groups[uid].txBytesPerSecond = rx, tx
        if isinstance(self.host.network, NetworkSet):
            for network, ready in self.host.network.pool_counts().items():
                NETWORK_POOL_READY.labels(self.node, network).set(ready)
        for cid in [c for c in self._cpu if c not in seen]:
            del self._cpu[cid]
        for uid in [u for u in self._net if u not in pids]:
            del self._net[uid]
        return MetricsReport(node=self.node, groups=[g for g in groups.values()
                                                     if g.containers or g.rxBytesPerSecond is not None])


class MetricsReporter:
    """Samples every ``interval`` seconds and sends the report over the link; a failed send is dropped."""

    def __init__(self, sampler: UsageSampler, link: ControlPlaneLink, interval: float = SAMPLE_INTERVAL) -> None:
        self.sampler, self.link, self.interval = sampler, link, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-reporter", daemon=True)

    def start(self) -> None:
        if self.interval > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            try:
                report = self.sampler.sample()
                if report.groups:
                    self.link.report_metrics(report)
            except Exception:  # a control plane away for a moment costs one sample, not the reporter
                log.warning("could not sample or send usage metrics", exc_info=True)
            if self._stop.wait(self.interval):
                return
