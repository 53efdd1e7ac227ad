"""Test helper: profiles, load balancers, NGroups and standby pools through Corral's API, and a request loop.

Members are busybox httpd serving one page that names their revision, with a
readiness probe, at 0.1 CPU and little memory, so many fit one test machine.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from corral_server import CorralServer

from corral.cli.client import Client

IMAGE = "corral/busybox:latest"
CI = "/providers/Microsoft.ContainerInstance"
# Exits at once on SIGTERM (busybox httpd as PID 1 would ignore it), so members stop quickly.
WEB = "mkdir -p /www && echo {page} > /www/index.html && trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait"


def rg_path(client: Client, rg: str, provider: str = "Microsoft.ContainerInstance") -> str:
    return f"/subscriptions/{client.sub}/resourceGroups/{rg}/providers/{provider}"


def profile_body(page: str = "v1", image: str = IMAGE, probe: bool = True, restart: str = "Always",
                 command: str | None = None, cpu: float = 0.1) -> dict[str, Any]:
    props: dict[str, Any] = {
        "image": image, "command": ["sh", "-c", command or WEB.format(page=page)],
        "ports": [{"port": 80}],
        "resources": {"requests": {"cpu": cpu, "memoryInGB": 0.1}},
    }
    if probe:
        props["readinessProbe"] = {"httpGet": {"path": "/", "port": 80}, "periodSeconds": 1,
                                   "failureThreshold": 1, "successThreshold": 1, "timeoutSeconds": 1}
    return {"location": "local", "properties": {"containers": [{"name": "web", "properties": props}],
                                                "osType": "Linux", "restartPolicy": restart}}


def put_profile(client: Client, rg: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    return client.request("PUT", f"{rg_path(client, rg)}/containerGroupProfiles/{name}", json=body).json()


def profile_id(client: Client, rg: str, name: str) -> str:
    return f"{rg_path(client, rg)}/containerGroupProfiles/{name}"


def put_lb(client: Client, rg: str, name: str, frontend_port: int, pool: str = "web", drain: int = 1,
           private_subnet: str | None = None) -> dict[str, Any]:
    """A load balancer with a public frontend ``fe`` (every node's address) on ``frontend_port`` and, with
    ``private_subnet``, a private frontend ``vip`` (an address picked in that subnet) on port 80."""
    lb = f"{rg_path(client, rg, 'Microsoft.Network')}/loadBalancers/{name}"

    def rule(fe: str, port: int) -> dict[str, Any]:
        return {"name": f"http-{fe}", "properties": {
            "frontendIPConfiguration": {"id": f"{lb}/frontendIPConfigurations/{fe}"},
            "backendAddressPool": {"id": f"{lb}/backendAddressPools/{pool}"},
            "probe": {"id": f"{lb}/probes/http"}, "protocol": "Tcp", "frontendPort": port, "backendPort": 80}}
    frontends: list[dict[str, Any]] = [{"name": "fe"}]
    rules = [rule("fe", frontend_port)]
    if private_subnet:
        frontends.append({"name": "vip", "properties": {"subnet": {"id": private_subnet}}})
        rules.append(rule("vip", 80))
    body = {"location": "local", "properties": {
        "frontendIPConfigurations": frontends,
        "backendAddressPools": [{"name": pool, "properties": {"drainPeriodInSeconds": drain}}],
        "probes": [{"name": "http", "properties": {"protocol": "Http", "port": 80, "requestPath": "/"}}],
        "loadBalancingRules": rules,
    }}
    return client.request("PUT", lb, json=body).json()


def pool_id(client: Client, rg: str, lb: str, pool: str = "web") -> str:
    return f"{rg_path(client, rg, 'Microsoft.Network')}/loadBalancers/{lb}/backendAddressPools/{pool}"


def ngroup_body(client: Client, rg: str, profile: str, count: int, revision: int | None = None,
                pools: list[str] | None = None, mode: str = "Rolling", batch: int = 50, unhealthy: int = 20,
                in_place: bool = False, maintain: bool = True, prefix: str | None = None,
                extra_elastic: dict[str, Any] | None = None, **rolling: Any) -> dict[str, Any]:
    stub: dict[str, Any] = {"resource": {"id": profile_id(client, rg, profile)}}
    if revision is not None:
        stub["revision"] = revision
    if pools:
        stub["networkProfile"] = {"loadBalancer": {"backendAddressPools": [{"resource": {"id": p}} for p in pools]}}
    elastic: dict[str, Any] = {"desiredCount": count, "maintainDesiredCount": maintain, **(extra_elastic or {})}
    if prefix:
        elastic["containerGroupNamingPolicy"] = {"guidNamingPolicy": {"prefix": prefix}}
    return {"location": "local", "properties": {
        "elasticProfile": elastic,
        "containerGroupProfiles": [stub],
        "updateProfile": {"updateMode": mode, "rollingUpdateProfile": {
            "maxBatchPercent": batch, "maxUnhealthyPercent": unhealthy, "inPlaceUpdate": in_place, **rolling}},
    }}


def ngroup_path(client: Client, rg: str, name: str) -> str:
    return f"{rg_path(client, rg)}/ngroups/{name}"


def put_ngroup(client: Client, rg: str, name: str, body: dict[str, Any]) -> Any:
    return client.request("PUT", ngroup_path(client, rg, name), json=body)


def get_ngroup(client: Client, rg: str, name: str) -> dict[str, Any]:
    return client.request("GET", ngroup_path(client, rg, name)).json()


def members(client: Client, rg: str, ngroup: str) -> list[dict[str, Any]]:
    ng = get_ngroup(client, rg, ngroup)
    groups = client.request("GET", client.group_path(rg)).json()["value"]
    return [g for g in groups if (g.get("tags") or {}).get("corral-ngroup", "").lower() == ng["id"].lower()]


def clean_resource_group(client: Client, rg: str) -> None:
    """Remove what an orchestration test made in ``rg``: NGroups (their members drain and go), standby
    pools, container groups, load balancers and profiles."""
    for ng in client.request("GET", f"{rg_path(client, rg)}/ngroups").json()["value"]:
        client.request("DELETE", ngroup_path(client, rg, ng["name"]))
    pools = f"{rg_path(client, rg, 'Microsoft.StandbyPool')}/standbyContainerGroupPools"
    for p in client.request("GET", pools).json()["value"]:
        client.request("DELETE", p["id"])
    wait_until("the NGroups are gone", lambda: not client.request("GET", f"{rg_path(client, rg)}/ngroups").json()[
        "value"], timeout=60)
    for g in client.request("GET", client.group_path(rg)).json()["value"]:
        client.request("DELETE", client.group_path(rg, g["name"]))
    for lb in client.request("GET", f"{rg_path(client, rg, 'Microsoft.Network')}/loadBalancers").json()["value"]:
        client.request("DELETE", lb["id"])
    for p in client.request("GET", f"{rg_path(client, rg)}/containerGroupProfiles").json()["value"]:
        client.request("DELETE", p["id"])


def emptied_after(corral: CorralServer, rg: str) -> Iterator[Client]:
    """A module fixture's client, with ``rg`` emptied (clean_resource_group) when the module is done."""
    c = corral.client()
    try:
        yield c
    finally:
        clean_resource_group(c, rg)


def wait_until(what: str, pred: Callable[[], Any], timeout: float = 60, every: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = pred()
        except (AssertionError, OSError) as exc:  # not yet (a frontend not served yet refuses)
            last = exc
        if last and not isinstance(last, AssertionError | OSError):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}: {last}")
        time.sleep(every)


def steady(client: Client, rg: str, ngroup: str, count: int, revision: int | None = None) -> Callable[[], Any]:
    def check() -> Any:
        ng = get_ngroup(client, rg, ngroup)
        st = ng["properties"].get("status") or {}
        serving = [m for m in st.get("members", []) if m.get("inService")]
        ok = (st.get("phase") == "Steady" and len(serving) == count and st.get("observedGeneration")
              == ng["properties"]["generation"] and (revision is None or all(m["revision"] == revision
                                                                              for m in serving)))
        return ng if ok else None
    return check


def fetch(port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> str:
    """One request on a new connection (as a client that does not keep connections alive)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read().decode().strip()
        if resp.status != 200:
            raise OSError(f"HTTP {resp.status}")
        return body
    finally:
        conn.close()


@dataclass
class RequestLoop:
    """A steady, bounded request loop through a frontend, counting answers by page and failures."""

    port: int
    interval: float = 0.02
    host: str = "127.0.0.1"
    pages: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RequestLoop:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                page = fetch(self.port, self.host)
                self.pages[page] = self.pages.get(page, 0) + 1
            except OSError as exc:
                self.failures.append(f"{time.strftime('%H:%M:%S')} {exc!r}")
            self._stop.wait(self.interval)

    @property
    def total(self) -> int:
        return sum(self.pages.values()) + len(self.failures)
