"""Per-container CPU and memory for ``/stats/summary`` and ``/metrics/resource`` (so ``kubectl top`` works
through metrics-server), read from Corral's Azure Monitor metrics API of each group:
``GET {groupId}/providers/Microsoft.Insights/metrics?metricnames=CpuUsage,MemoryUsage`` with the
``containerName`` dimension (CpuUsage in millicores, MemoryUsage in bytes, one-minute grain).

Kubernetes wants CPU as a cumulative counter (core-seconds); Corral reports a rate, so the counter is
integrated here between scrapes, starting when this node first saw the container.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from corral.kube.corral_api import CorralApi, CorralRefused, CorralUnavailable
from corral.kube.mapping import group_name

METRICS_API_VERSION = "2018-01-01"


class PodMetrics:
    def __init__(self, corral: CorralApi, node: str) -> None:
        self.corral, self.node = corral, node
        self._cpu_seconds: dict[tuple[str, str], float] = {}
        self._last: dict[tuple[str, str], tuple[float, float]] = {}  # -> (monotonic time, cores)
        self.started = datetime.now(UTC)

    async def sample(self, gname: str) -> dict[str, tuple[float, float]]:
        """container -> (CPU cores, working-set bytes), the latest point Corral has; {} when it has none."""
        path = self.corral.group_path(gname) + "/providers/Microsoft.Insights/metrics"
        # The last few minutes only: the newest point is all we use (the current minute's, on one server).
        params = {"api-version": METRICS_API_VERSION, "metricnames": "CpuUsage,MemoryUsage", "timespan": "PT5M",
                  "aggregation": "Average", "interval": "PT1M", "$filter": "containerName eq '*'"}
        try:
            body = (await self.corral.request("GET", path, params=params, attempts=1)).json()
        except (CorralRefused, CorralUnavailable):
            return {}
        out: dict[str, list[float]] = {}
        for metric in body.get("value") or []:
            which = (metric.get("name") or {}).get("value")
            for series in metric.get("timeseries") or []:
                dims = {(m.get("name") or {}).get("value", "").lower(): m.get("value")
                        for m in series.get("metadatavalues") or []}
                container = dims.get("containername")
                points = [p.get("average") for p in series.get("data") or [] if p.get("average") is not None]
                if not container or not points:
                    continue
                slot = out.setdefault(container, [0.0, 0.0])
                if which == "CpuUsage":
                    slot[0] = float(points[-1]) / 1000.0
                elif which == "MemoryUsage":
                    slot[1] = float(points[-1])
        return {c: (v[0], v[1]) for c, v in out.items()}

    def _cumulative(self, key: tuple[str, str], cores: float) -> float:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None:
            self._cpu_seconds[key] = self._cpu_seconds.get(key, 0.0) + last[1] * (now - last[0])
        self._last[key] = (now, cores)
        return self._cpu_seconds.setdefault(key, 0.0)

    async def collect(self, pods: list[Any]) -> list[tuple[Any, dict[str, tuple[float, float, float]]]]:
        """(pod, container -> (cores, bytes, cumulative core-seconds)) for the running pods."""
        out = []
        for pod in pods:
            if not pod.status or pod.status.phase != "Running":
                continue
            gname = group_name(pod.metadata.namespace, pod.metadata.name)
            samples = await self.sample(gname)
            values = {c: (cores, mem, self._cumulative((pod.metadata.uid, c), cores))
                      for c, (cores, mem) in samples.items()}
            out.append((pod, values))
        return out

    async def summary(self, pods: list[Any]) -> dict[str, Any]:
        """kubelet's Summary API (stats/v1alpha1)."""
        now = _stamp(datetime.now(UTC))
        items, node_cpu, node_mem, node_secs = [], 0.0, 0.0, 0.0
        for pod, values in await self.collect(pods):
            containers = [{"name": c, "startTime": now, **_usage(now, cores, mem, secs)}
                          for c, (cores, mem, secs) in values.items()]
            cpu, mem, secs = (sum(v[i] for v in values.values()) for i in range(3))
            node_cpu, node_mem, node_secs = node_cpu + cpu, node_mem + mem, node_secs + secs
            items.append({"podRef": {"name": pod.metadata.name, "namespace": pod.metadata.namespace,
                                     "uid": pod.metadata.uid},
                          "startTime": _stamp(pod.status.startTime) if pod.status.startTime else now,
                          "containers": containers, **_usage(now, cpu, mem, secs)})
        node = {"nodeName": self.node, "startTime": _stamp(self.started), **_usage(now, node_cpu, node_mem, node_secs)}
        return {"node": node, "pods": items}

    async def prometheus(self, pods: list[Any]) -> str:
        """kubelet's /metrics/resource, the Prometheus text metrics-server reads."""
        ms = int(time.time() * 1000)
        lines = {
            "container_cpu_usage_seconds_total": ("counter", "Cumulative cpu time consumed by the container in "
                                                  "core-seconds"),
            "container_memory_working_set_bytes": ("gauge", "Current working set of the container in bytes"),
            "pod_cpu_usage_seconds_total": ("counter", "Cumulative cpu time consumed by the pod in core-seconds"),
            "pod_memory_working_set_bytes": ("gauge", "Current working set of the pod in bytes"),
            "node_cpu_usage_seconds_total": ("counter", "Cumulative cpu time consumed by the node in core-seconds"),
            "node_memory_working_set_bytes": ("gauge", "Current working set of the node in bytes"),
        }
        samples: dict[str, list[str]] = {k: [] for k in lines}
        node_secs = node_mem = 0.0
        for pod, values in await self.collect(pods):
            ns, name = pod.metadata.namespace, pod.metadata.name
            for c, (_, mem, secs) in values.items():
                lbl = f'container="{c}",namespace="{ns}",pod="{name}"'
                samples["container_cpu_usage_seconds_total"].append(f"{{{lbl}}} {secs:.6f} {ms}")
                samples["container_memory_working_set_bytes"].append(f"{{{lbl}}} {int(mem)} {ms}")
            secs = sum(v[2] for v in values.values())
            mem = sum(v[1] for v in values.values())
            node_secs, node_mem = node_secs + secs, node_mem + mem
            samples["pod_cpu_usage_seconds_total"].append(f'{{namespace="{ns}",pod="{name}"}} {secs:.6f} {ms}')
            samples["pod_memory_working_set_bytes"].append(f'{{namespace="{ns}",pod="{name}"}} {int(mem)} {ms}')
        samples["node_cpu_usage_seconds_total"].append(f" {node_secs:.6f} {ms}")
        samples["node_memory_working_set_bytes"].append(f" {int(node_mem)} {ms}")
        out = []
        for metric, (kind, help_) in lines.items():
            out += [f"# HELP {metric} [STABLE] {help_}", f"# TYPE {metric} {kind}"]
            out += [metric + s for s in samples[metric]]
        out += ["# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, "
                "0 otherwise", "# TYPE resource_scrape_error gauge", "resource_scrape_error 0"]
        return "\n".join(out) + "\n"


def _stamp(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _usage(now: str, cores: float, mem: float, secs: float) -> dict[str, Any]:
    """The Summary API's cpu and memory of a container, a pod or the node."""
    return {"cpu": {"time": now, "usageNanoCores": int(cores * 1e9), "usageCoreNanoSeconds": int(secs * 1e9)},
            "memory": {"time": now, "workingSetBytes": int(mem), "usageBytes": int(mem)}}
