"""Autoscale (Corral extension): an NGroup's member count follows measured usage.

Usage comes from Corral's Azure Monitor metrics API (``CpuUsage`` in millicores,
``MemoryUsage`` in bytes), the same numbers any client sees: one query per NGroup
per reading, split by member (``containerGroupName``). Its finest grain is a
minute (PT1M), and like Azure Monitor it answers the minute in progress as a
last, incomplete bucket. Autoscale asks for each bucket's ``Total`` and
``Count`` and keeps the previous answer: the difference between two readings is
the sum and number of exactly the samples that arrived between them (agents
sample every few seconds), so the usage it acts on is that of the last few
seconds, not the average since the minute began (``UsageMeter``).
The rule is Kubernetes' HPA rule: ``desired = ceil(current * usage /
target)``, ignored within 10 % of the target, clamped to ``minCount..maxCount``;
up at once (or after ``scaleUpDelay``), down only once usage has wanted fewer
members for a whole ``scaleDownDelay``, and then to the most members wanted
during that window, so a dip does not shed members a burst needs again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from corral.model.ngroup import Autoscale, AutoscaleStatus

TOLERANCE = 0.1
CPU_METRIC = "CpuUsage"
MEMBER_DIMENSION = "containergroupname"  # an NGroup's metrics, split by member
MEMORY_METRIC = "MemoryUsage"
GB = 1024 ** 3


@dataclass
class Usage:
    cpu_percent: float | None = None  # of the cores the group requests
    memory_percent: float | None = None  # of the memory the group requests


# (metric, time series) -> bucket start -> (total, count): one reading of a group's metrics.
Reading = dict[tuple[str, str], dict[str, tuple[float, float]]]


def totals(metrics: dict[str, Any]) -> Reading:
    """The Total and Count of every bucket of every time series in a metrics answer."""
    out: Reading = {}
    for metric in metrics.get("value") or []:
        mname = metric.get("name")
        mname = str(mname.get("value") if isinstance(mname, dict) else mname).lower()
        for series in metric.get("timeseries") or []:
            key = (mname, json.dumps(series.get("metadatavalues") or [], sort_keys=True))
            points = out.setdefault(key, {})
            for p in series.get("data") or []:
                if p.get("count"):
                    points[str(p.get("timeStamp", ""))] = (float(p.get("total") or 0.0), float(p["count"]))
    return out


def by_member(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """An NGroup's metrics answer split by ``containerGroupName``: one answer per member, shaped as a container
    group's own (its other dimensions kept)."""
    out: dict[str, dict[str, Any]] = {}
    for metric in metrics.get("value") or []:
        for series in metric.get("timeseries") or []:
            dims = series.get("metadatavalues") or []
            mine = [d for d in dims if str((d.get("name") or {}).get("value", "")).lower() == MEMBER_DIMENSION]
            if not mine:
                continue
            answer = out.setdefault(str(mine[0].get("value")), {"value": []})
            entry = next((v for v in answer["value"] if v.get("name") == metric.get("name")), None)
            if entry is None:
                entry = {"name": metric.get("name"), "timeseries": []}
                answer["value"].append(entry)
            entry["timeseries"].append({**series, "metadatavalues": [d for d in dims if d not in mine]})
    return out


def _since(now: dict[str, tuple[float, float]], before: dict[str, tuple[float, float]] | None) -> float | None:
    """The average of the samples in ``now`` that were not in ``before``; None: none arrived. Without a usable
    earlier reading (none, too old to overlap, or data lost since), the latest bucket's average."""
    if before:
        newest = max(before)
        overlap = all(t in before for t in now if t <= newest)
        dt = sum(tot - before.get(t, (0.0, 0.0))[0] for t, (tot, _) in now.items())
        dn = sum(n - before.get(t, (0.0, 0.0))[1] for t, (_, n) in now.items())
        if overlap and all(n >= before.get(t, (0.0, 0.0))[1] for t, (_, n) in now.items()):
            return dt / dn if dn > 0 else None
    if not now:
        return None
    tot, n = now[max(now)]
    return tot / n


class UsageMeter:
    """One group's recent usage from successive readings of its metrics (kept in memory: after a restart the
    first reading counts from the minute's start, which only blurs one decision)."""

    def __init__(self) -> None:
        self.before: Reading | None = None
        self.last: dict[tuple[str, str], float] = {}  # each series' value at the last reading

    def update(self, metrics: dict[str, Any]) -> dict[str, float | None]:
        """metric name (lowercase) -> the sum over its series of their usage since the last reading; a series
        with no new sample keeps the value it had."""
        now = totals(metrics)
        out: dict[str, float | None] = {}
        for key, points in now.items():
            v = _since(points, self.before.get(key) if self.before is not None else None)
            if v is None:
                v = self.last.get(key)
            if v is None:
                continue
            self.last[key] = v
            out[key[0]] = (out.get(key[0]) or 0.0) + v
        self.before = now
        return out


def requests_of(group: dict[str, Any]) -> tuple[float, float]:
    """CPU cores and memory GB a rendered container group requests."""
    cpu = mem = 0.0
    for c in (group.get("properties") or {}).get("containers") or []:
        req = ((c.get("properties") or {}).get("resources") or {}).get("requests") or {}
        cpu += float(req.get("cpu") or 1.0)
        mem += float(req.get("memoryInGB") or 1.5)
    return cpu, mem


def usage_of(group: dict[str, Any], recent: dict[str, float | None]) -> Usage:
    """A group's usage as shares of what it requests, from ``UsageMeter.update``'s answer."""
    cpu_req, mem_req = requests_of(group)
    cpu, mem = recent.get(CPU_METRIC.lower()), recent.get(MEMORY_METRIC.lower())
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
