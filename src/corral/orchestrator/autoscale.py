"""Autoscale (Corral extension): an NGroup's member count follows measured usage.

Usage comes from Corral's Azure Monitor metrics API (``CpuUsage`` in millicores,
``MemoryUsage`` in bytes, per container group), the same numbers any client
sees. The rule is Kubernetes' HPA rule: ``desired = ceil(current * usage /
target)``, ignored within 10 % of the target, clamped to ``minCount..maxCount``;
up at once (or after ``scaleUpDelay``), down only once usage has wanted fewer
members for a whole ``scaleDownDelay``, and then to the most members wanted
during that window, so a dip does not shed members a burst needs again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from corral.model.ngroup import Autoscale, AutoscaleStatus

TOLERANCE = 0.1
CPU_METRIC = "CpuUsage"
MEMORY_METRIC = "MemoryUsage"
GB = 1024 ** 3


@dataclass
class Usage:
    cpu_percent: float | None = None  # of the cores the group requests
    memory_percent: float | None = None  # of the memory the group requests


def latest(metrics: dict[str, Any], name: str) -> float | None:
    """The sum over a metric's time series (one per container, or one for the group) of each one's latest
    average; None when no series has a value yet."""
    total, seen = 0.0, False
    for metric in metrics.get("value") or []:
        mname = metric.get("name")
        mname = mname.get("value") if isinstance(mname, dict) else mname
        if str(mname).lower() != name.lower():
            continue
        for series in metric.get("timeseries") or []:
            points = [p for p in series.get("data") or [] if p.get("average") is not None]
            if points:
                last = max(points, key=lambda p: str(p.get("timeStamp", "")))
                total += float(last["average"])
                seen = True
    return total if seen else None


def requests_of(group: dict[str, Any]) -> tuple[float, float]:
    """CPU cores and memory GB a rendered container group requests."""
    cpu = mem = 0.0
    for c in (group.get("properties") or {}).get("containers") or []:
        req = ((c.get("properties") or {}).get("resources") or {}).get("requests") or {}
        cpu += float(req.get("cpu") or 1.0)
        mem += float(req.get("memoryInGB") or 1.5)
    return cpu, mem


def usage_of(group: dict[str, Any], metrics: dict[str, Any]) -> Usage:
    cpu_req, mem_req = requests_of(group)
    cpu, mem = latest(metrics, CPU_METRIC), latest(metrics, MEMORY_METRIC)
    return Usage(cpu_percent=None if cpu is None or not cpu_req else cpu / 1000 / cpu_req * 100,
                 memory_percent=None if mem is None or not mem_req else mem / (mem_req * GB) * 100)


def average(usages: list[Usage]) -> Usage:
    cpus = [u.cpu_percent for u in usages if u.cpu_percent is not None]
    mems = [u.memory_percent for u in usages if u.memory_percent is not None]
    return Usage(cpu_percent=sum(cpus) / len(cpus) if cpus else None,
                 memory_percent=sum(mems) / len(mems) if mems else None)


def wanted(spec: Autoscale, current: int, usage: Usage) -> int | None:
    """Members the usage asks for (None: no measurement to go by)."""
    ratios = []
    if spec.targetCpuUtilizationPercent is not None and usage.cpu_percent is not None:
        ratios.append(usage.cpu_percent / spec.targetCpuUtilizationPercent)
    if spec.targetMemoryUtilizationPercent is not None and usage.memory_percent is not None:
        ratios.append(usage.memory_percent / spec.targetMemoryUtilizationPercent)
    if not ratios:
        return None
    ratio = max(ratios)
    base = max(current, 1)
    want = base if abs(ratio - 1.0) <= TOLERANCE else math.ceil(base * ratio - 1e-9)
    return max(spec.minCount, min(spec.maxCount, want))


class Autoscaler:
    """One NGroup's autoscale decisions; the recommendations of the scale-down window live in memory
    (after a restart the window starts again, which only delays a scale-down)."""

    def __init__(self) -> None:
        self.recommendations: list[tuple[datetime, int]] = []

    def decide(self, spec: Autoscale, st: AutoscaleStatus, usage: Usage, now: datetime) -> AutoscaleStatus:
        current = max(spec.minCount, min(spec.maxCount, st.desiredCount))
        st = st.model_copy(update={"desiredCount": current, "cpuUtilizationPercent": _round(usage.cpu_percent),
                                   "memoryUtilizationPercent": _round(usage.memory_percent)})
        want = wanted(spec, current, usage)
        if want is None:
            st.message = "no usage measured yet"
            return st
        self.recommendations = [(t, n) for t, n in self.recommendations
                                if (now - t).total_seconds() <= spec.down_delay] + [(now, want)]
        if want > current:
            st.belowSince = None
            st.aboveSince = st.aboveSince or now
            if (now - st.aboveSince).total_seconds() >= spec.up_delay:
                st.message = f"usage {_describe(usage)} asks for {want} member(s): scaling up from {current}"
                st.desiredCount, st.lastScaleTime, st.aboveSince = want, now, None
                self.recommendations = [(now, want)]
            return st
        st.aboveSince = None
        if want == current:
            st.belowSince = None
            st.message = f"usage {_describe(usage)} fits {current} member(s)"
            return st
        st.belowSince = st.belowSince or now
        waited = (now - st.belowSince).total_seconds()
        if waited < spec.down_delay:
            st.message = (f"usage {_describe(usage)} asks for {want} member(s); scaling down after "
                          f"{spec.down_delay:g} s of it ({waited:.0f} s so far)")
            return st
        target = max(n for _, n in self.recommendations)
        if target < current:
            st.message = f"usage has asked for at most {target} member(s) for {spec.down_delay:g} s: scaling down"
            st.desiredCount, st.lastScaleTime = target, now
        st.belowSince = None
        return st


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _describe(u: Usage) -> str:
    parts = []
    if u.cpu_percent is not None:
        parts.append(f"cpu {u.cpu_percent:.0f}%")
    if u.memory_percent is not None:
        parts.append(f"memory {u.memory_percent:.0f}%")
    return ", ".join(parts)
