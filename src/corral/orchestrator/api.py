"""What the orchestrator asks of Corral's public API, and nothing else: it is a client like any other.

Every call is an ARM route (container groups, NGroups, load-balancer pools,
standby pools, metrics) with the installation's bearer token; the orchestrator
never reads the store or talks to an agent.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

import httpx

from corral.cli.client import ApiError, Client, sse_messages, stream
from corral.config import ClientConfig
from corral.model.armids import LB_TYPE, ResourceRef, parse_child_id

# The api-version the orchestrator speaks (the first with NGroups' 2025-09-01 shape and standby pools).
API_VERSION = "2025-09-01"
METRICS_API_VERSION = "2018-01-01"


class OrchestratorApi:
    def __init__(self, config: ClientConfig) -> None:
        self.client = Client(config)
        self.client.http.timeout = httpx.Timeout(30.0)
        self.sub = config.subscription
        self._streams: set[httpx.Response] = set()
        self._lock = threading.Lock()

    def _req(self, method: str, path: str, **kw: Any) -> httpx.Response:
        params = {"api-version": API_VERSION, **(kw.pop("params", None) or {})}
        return self.client.request(method, path, params=params, **kw)

    def _rg(self, rg: str, provider: str) -> str:
        return f"/subscriptions/{self.sub}/resourceGroups/{rg}/providers/{provider}"

    # listing -----------------------------------------------------------------
    def ngroups(self) -> list[dict[str, Any]]:
        path = f"/subscriptions/{self.sub}/providers/Microsoft.ContainerInstance/ngroups"
        return list(self._req("GET", path).json()["value"])

    def groups(self) -> list[dict[str, Any]]:
        path = f"/subscriptions/{self.sub}/providers/Microsoft.ContainerInstance/containerGroups"
        return list(self._req("GET", path).json()["value"])

    def standby_pools(self) -> list[dict[str, Any]]:
        path = f"/subscriptions/{self.sub}/providers/Microsoft.StandbyPool/standbyContainerGroupPools"
        return list(self._req("GET", path).json()["value"])

    # container groups ----------------------------------------------------------
    def group_path(self, rg: str, name: str) -> str:
        return f"{self._rg(rg, 'Microsoft.ContainerInstance')}/containerGroups/{name}"

    def put_group(self, rg: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._req("PUT", self.group_path(rg, name), json=body).json())

    def delete_group(self, rg: str, name: str) -> None:
        self._req("DELETE", self.group_path(rg, name))

    def set_group_tags(self, rg: str, name: str, tags: dict[str, str]) -> None:
        self._req("PATCH", self.group_path(rg, name), json={"tags": tags})

    def group_action(self, rg: str, name: str, action: str) -> None:
        self._req("POST", f"{self.group_path(rg, name)}/{action}")

    # NGroups -------------------------------------------------------------------
    def report_ngroup(self, rg: str, name: str, uid: str, status: dict[str, Any]) -> None:
        path = f"{self._rg(rg, 'Microsoft.ContainerInstance')}/ngroups/{name}/status"
        self._req("PUT", path, json={"uid": uid, "status": status})

    # load balancers -------------------------------------------------------------
    def get_lb(self, lb: ResourceRef) -> dict[str, Any]:
        path = f"{self._rg(lb.resource_group, 'Microsoft.Network')}/loadBalancers/{lb.name}"
        return dict(self._req("GET", path).json())

    def put_pool(self, pool_id: str, body: dict[str, Any], etag: str | None) -> dict[str, Any]:
        lb, pool = parse_child_id(pool_id, LB_TYPE, "backendAddressPools")
        path = f"{self._rg(lb.resource_group, 'Microsoft.Network')}/loadBalancers/{lb.name}/backendAddressPools/{pool}"
        headers = {"If-Match": etag} if etag else {}
        return dict(self._req("PUT", path, json=body, headers=headers).json())

    # metrics (the Azure Monitor shape) ---------------------------------------------
    def metrics(self, resource_id: str, names: list[str], timespan: str, interval: str,
                aggregation: str = "Average", **more: str) -> dict[str, Any]:
        """A container group's or an NGroup's metrics; ``more``: further query parameters ($filter, top)."""
        path = f"{resource_id}/providers/Microsoft.Insights/metrics"
        params = {"api-version": METRICS_API_VERSION, "metricnames": ",".join(names), "aggregation": aggregation,
                  "timespan": timespan, "interval": interval, **more}
        return dict(self.client.request("GET", path, params=params).json())

    # watching ----------------------------------------------------------------------
    def watch_resource_group(self, rg: str, on_change: Callable[[], None], stop: threading.Event) -> None:
        """Follow the resource group's container group events until ``stop``; ``on_change`` for each."""
        path = f"{self._rg(rg, 'Microsoft.ContainerInstance')}/events"
        while not stop.is_set():
            try:
                with stream(self.client, path, {}) as resp:
                    with self._lock:
                        self._streams.add(resp)
                    try:
                        for _kind, _data in sse_messages(resp):
                            on_change()
                            if stop.is_set():
                                return
                    finally:
                        with self._lock:
                            self._streams.discard(resp)
            except (httpx.HTTPError, ApiError, ValueError, RuntimeError):
                stop.wait(1.0)  # the server restarts or is busy: watch again shortly

    def close(self) -> None:
        """Close every connection (event streams and the idle pool): a stopping server must not wait on them."""
        self.close_streams()
        try:
            self.client.http.close()
        except Exception:  # a request in flight on another thread fails, which is what stopping means
            pass

    def close_streams(self) -> None:
        """End the open event streams now (their readers see the connection close)."""
        with self._lock:
            streams = list(self._streams)
        for resp in streams:
            # A close() would not wake a reader blocked in recv(); shutting the socket down does.
            try:
                sock = resp.extensions["network_stream"].get_extra_info("socket")
                if sock is not None:
                    sock.shutdown(socket.SHUT_RDWR)
            except (KeyError, OSError, AttributeError):
                pass
