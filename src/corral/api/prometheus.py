"""``GET /metrics``: Prometheus' text format, for a scraper holding the bearer token or the scrape token.

Two sources: the families code updates as things happen (``corral.telemetry``, prometheus-client's default
registry, with its process_* and python_* families), and families computed from the store when scraped
(``StateCollector``: groups by state, pending groups, nodes, per-container usage and restarts, standby pools,
NGroups), cached a few seconds so that several scrapers cost one pass. ``RequestMetrics`` counts and times
every API request by route template (never by concrete path: label values stay bounded).
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral.control.groups import GroupView
from corral.control.standbypools import pool_id, ready
from corral.model.armids import NGROUPS, POOL_TAG, STANDBY_POOLS
from corral.model.ngroup import NGroupRecord
from corral.model.records import GROUPS, NODES, STATUS, GroupRecord, NodeInfo
from corral.model.standbypool import PoolRecord
from corral.model.status import GroupStatus
from corral.scheduler.allocation import loads
from corral.telemetry import API_LATENCY, API_REQUESTS

router = APIRouter()

PATH = "/metrics"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATE_CACHE = 5.0  # seconds one store pass answers scrapes
GROUP_STATES = ("Pending", "Running", "Stopped", "Succeeded", "Failed")
GIB = 1024**3


def scrape_authorized(path: str, headers: Headers, scrape_token: str | None) -> bool:
    """True for ``GET /metrics`` with ``Authorization: Bearer <scrape token>``."""
    if path != PATH or not scrape_token:
        return False
    scheme, _, value = (headers.get("authorization") or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), scrape_token.encode())


class RequestMetrics:
    """Counts every HTTP request by method, route template and status; times it up to its response headers
    (a log follow or an event stream is timed to its first byte, not its end). Outermost, so the 401s of
    the authentication middleware count too."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        code = ["500"]
        observed = [False]

        def observe() -> None:
            if observed[0]:
                return
            observed[0] = True
            route = scope.get("route")
            template = getattr(route, "path", None) or "unrouted"
            API_REQUESTS.labels(scope["method"], template, code[0]).inc()
            API_LATENCY.labels(scope["method"], template).observe(time.perf_counter() - start)

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                code[0] = str(message["status"])
                observe()
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            observe()


def _labels(rec: GroupRecord) -> list[str]:
    return [rec.meta.resourceGroup, rec.meta.name]


class StateCollector(Collector):
    """Families computed from the store (and this server's latest samples) at scrape time."""

    def __init__(self, plane: Any) -> None:
        self.plane = plane
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > STATE_CACHE:
                self._cached = (time.monotonic(), self._compute())
            yield from self._cached[1]

    def _compute(self) -> list[Metric]:
        store = self.plane.store
        records = store.list(GROUPS)
        groups = [GroupRecord.model_validate(r.value) for r in records]
        statuses = {st.uid: st for st in (GroupStatus.model_validate(r.value) for r in store.list(STATUS))}
        nodes = [NodeInfo.model_validate(r.value) for r in store.list(NODES)]

        by_state = GaugeMetricFamily("corral_container_groups", "Container groups by instanceView state",
                                     labels=["state"])
        counts = dict.fromkeys(GROUP_STATES, 0)
        for g in groups:
            st = statuses.get(g.meta.uid)
            state = st.state if st else "Pending"
            counts[state] = counts.get(state, 0) + 1
        for state, n in counts.items():
            by_state.add_metric([state], n)
        pending = GaugeMetricFamily("corral_scheduler_pending_groups",
                                    "Container groups waiting for a node (not bound yet)")
        pending.add_metric([], sum(1 for g in groups if g.meta.node is None and not g.meta.deleting))

        views = [GroupView(key=r.key, version=r.version, record=g, status=statuses.get(g.meta.uid))
                 for r, g in zip(records, groups, strict=True)]
        out: list[Metric] = [by_state, pending, *self._nodes(nodes, groups), *self._containers(groups, statuses),
                             *self._standby_pools(views), *self._ngroups()]
        return out

    def _standby_pools(self, views: list[GroupView]) -> list[Metric]:
        labels = ["resource_group", "pool"]
        ready_fam = GaugeMetricFamily("corral_standby_pool_ready_groups", "Pre-created groups of a standby pool "
                                      "ready to be claimed", labels=labels)
        target = GaugeMetricFamily("corral_standby_pool_target_groups", "The size a standby pool is kept at "
                                   "(maxReadyCapacity)", labels=labels)
        pooled: dict[str, int] = {}
        for v in views:
            owner = (v.record.spec.tags or {}).get(POOL_TAG)
            if owner and ready(v):
                pooled[owner.lower()] = pooled.get(owner.lower(), 0) + 1
        for r in self.plane.store.list(STANDBY_POOLS):
            pool = PoolRecord.model_validate(r.value)
            m = pool.meta
            ready_fam.add_metric([m.resourceGroup, m.name], pooled.get(pool_id(m.subscription, m.resourceGroup,
                                                                                m.name).lower(), 0))
            target.add_metric([m.resourceGroup, m.name], pool.spec.properties.elasticityProfile.maxReadyCapacity)
        return [ready_fam, target]

    def _ngroups(self) -> list[Metric]:
        labels = ["resource_group", "ngroup"]
        desired = GaugeMetricFamily("corral_ngroup_desired_members", "Members an NGroup keeps (autoscale's count "
                                    "when it is on)", labels=labels)
        ready_fam = GaugeMetricFamily("corral_ngroup_ready_members", "Members of an NGroup ready and in service",
                                      labels=labels)
        for r in self.plane.store.list(NGROUPS):
            ng = NGroupRecord.model_validate(r.value)
            m, st = ng.meta, ng.status
            count = st.desiredCount if st.observedGeneration else ng.spec.properties.elasticProfile.desiredCount
            desired.add_metric([m.resourceGroup, m.name], count)
            ready_fam.add_metric([m.resourceGroup, m.name], st.readyCount)
        return [desired, ready_fam]

    def _nodes(self, nodes: list[NodeInfo], groups: list[GroupRecord]) -> list[Metric]:
        labels = ["node"]
        fam = {
            "cpu": GaugeMetricFamily("corral_node_cpu_cores", "CPU cores a node offers", labels=labels),
            "mem": GaugeMetricFamily("corral_node_memory_bytes", "Memory a node offers", labels=labels),
            "cpu_alloc": GaugeMetricFamily("corral_node_allocated_cpu_cores",
                                           "CPU cores requested by the groups bound to a node", labels=labels),
            "mem_alloc": GaugeMetricFamily("corral_node_allocated_memory_bytes",
                                           "Memory requested by the groups bound to a node", labels=labels),
            "groups": GaugeMetricFamily("corral_node_groups", "Container groups bound to a node", labels=labels),
            "max": GaugeMetricFamily("corral_node_max_groups", "Container groups a node takes", labels=labels),
            "ready": GaugeMetricFamily("corral_node_ready", "1 if the node is ready (heartbeating)",
                                       labels=labels),
            "sched": GaugeMetricFamily("corral_node_schedulable", "1 unless the node is cordoned", labels=labels),
            "beat": GaugeMetricFamily("corral_node_heartbeat_age_seconds", "Seconds since the node's last "
                                      "heartbeat", labels=labels),
        }
        now = time.time()
        for name, load in loads(nodes, groups).items():
            n = load.node
            for key, value in (("cpu", n.cpu), ("mem", n.memoryGB * GIB), ("cpu_alloc", load.cpu),
                               ("mem_alloc", load.memoryGB * GIB), ("groups", load.groups), ("max", n.maxGroups),
                               ("ready", float(n.ready)), ("sched", float(not n.unschedulable)),
                               ("beat", max(0.0, now - n.lastHeartbeat.timestamp()))):
                fam[key].add_metric([name], value)
        return list(fam.values())

    def _containers(self, groups: list[GroupRecord], statuses: dict[str, GroupStatus]) -> list[Metric]:
        labels = ["resource_group", "container_group", "container"]
        restarts = CounterMetricFamily("corral_container_restarts", "Restarts of a container (instanceView "
                                       "restartCount)", labels=labels)
        cpu = GaugeMetricFamily("corral_container_cpu_usage_cores", "CPU a running container used over the last "
                                "sampling period", labels=labels)
        mem = GaugeMetricFamily("corral_container_memory_working_set_bytes", "Working set of a running container",
                                labels=labels)
        by_uid = {g.meta.uid: g for g in groups}
        for g in groups:
            st = statuses.get(g.meta.uid)
            for c in g.spec.properties.containers:
                cs = st.containers.get(c.name) if st else None
                restarts.add_metric([*_labels(g), c.name], cs.restartCount if cs else 0)
        for uid, (_node, sample) in self.plane.metrics.latest().items():
            g = by_uid.get(uid)
            if g is None:
                continue
            for name, c in sample.containers.items():
                cpu.add_metric([*_labels(g), name], c.cpu)
                mem.add_metric([*_labels(g), name], c.memoryBytes)
        return [restarts, cpu, mem]


class _Defaults(Collector):
    """prometheus-client's default registry (the telemetry families, process_*, python_*), inside ours."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def registry_for(app: Any) -> CollectorRegistry:
    reg = getattr(app.state, "prometheus_registry", None)
    if reg is None:
        reg = CollectorRegistry(auto_describe=False)
        reg.register(_Defaults())
        reg.register(StateCollector(app.state.plane))
        app.state.prometheus_registry = reg
    return reg


@router.get(PATH)
def metrics(request: Request) -> Response:
    return Response(generate_latest(registry_for(request.app)), media_type=CONTENT_TYPE)
