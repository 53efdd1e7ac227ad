"""Corral's Prometheus metric families: every counter, gauge and histogram the code updates is defined here,
so any part imports the one it instruments (``from corral.telemetry import FAILOVERS``) and the names stay
consistent. They live in prometheus-client's default registry (with its process_* and python_* families);
``GET /metrics`` serves them with the families computed from the store at scrape time
(``corral.api.prometheus``: groups by state, pending groups, node allocation and readiness, per-container
usage and restarts, standby pools and NGroups).

In the all-in-one (`corral up`) the node agent runs in the API's process, so its families (image pulls,
network pool) are in the same registry; a cluster's `corral agent` serves them with ``--metrics-listen``.
See docs/metrics.md for the list and a scrape config.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Latency buckets in seconds, from a cached read (ms) to a slow image pull (minutes).
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SLOW = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

# API (corral.api.prometheus.RequestMetrics) -------------------------------------------------------------------------
API_REQUESTS = Counter("corral_api_requests", "HTTP requests served, by method, route template and status code",
                       ["method", "route", "code"])
API_LATENCY = Histogram("corral_api_request_duration_seconds",
                        "Time from a request's arrival to its response headers, by method and route template",
                        ["method", "route"], buckets=_FAST)

# Scheduler (sched) ----------------------------------------------------------------------------------------------------
SCHEDULING_ATTEMPTS = Histogram("corral_scheduler_attempt_duration_seconds",
                                "One scheduling attempt of a group (filter, score, bind), by result: "
                                "scheduled, unschedulable, error", ["result"], buckets=_FAST)
SCHEDULING_LATENCY = Histogram("corral_scheduler_scheduling_latency_seconds",
                               "From a group seen unbound (created, failed over, evicted) to its binding to a node",
                               buckets=_FAST)

# Node agent: images and network (in the agent's process) -------------------------------------------------------------
IMAGE_PULLS = Histogram("corral_image_pull_duration_seconds", "Image pulls from a registry, by result: "
                        "success or failure", ["result"], buckets=_SLOW)
NETWORK_POOL_READY = Gauge("corral_network_pool_ready_sandboxes",
                           "Pre-built network sandboxes ready to be taken, per virtual network on this node",
                           ["node", "network"])

# Cluster: failover (cluster) -----------------------------------------------------------------------------------------
FAILOVERS = Counter("corral_failovers", "Container groups moved off a node that stopped heartbeating "
                    "(or was drained), by reason", ["reason"])
