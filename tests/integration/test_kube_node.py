"""The virtual node's Corral side and its kubelet API, with real Corral groups and no kube-apiserver.

No registry these machines reach ships a kube-apiserver, so the Kubernetes side is a small in-memory
stand-in (``PodApi``: the handful of calls the pod controller makes, on lightkube's models); everything
on Corral's side is real: groups created for pods through Corral's API, status from Corral's event
stream, orphan removal, adoption after a restart, graceful delete; and the kubelet API over TLS with
its authorisation decisions, logs, exec and port-forward reaching a real container.
The same flows against a real API server: tests/integration/test_kube_apiserver.py (KUBE_APISERVER=...).
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from corral_server import CorralServer, free_port
from kube_support import PodApi, Tokens, condition, wait, web_pod
from websockets.asyncio.client import connect

from corral.api.tls import ensure_certificates
from corral.kube.corral_api import CorralApi
from corral.kube.kubelet import KubeletApi, serve
from corral.kube.mapping import MappingSettings, group_name
from corral.kube.metrics import PodMetrics
from corral.kube.pods import PodController

NODE = "it-kube-node"
RG = "kube-it"


@pytest.fixture
def rg() -> str:
    return RG


def test_pods_become_groups_with_status_orphans_adoption_delete_and_the_kubelet_api(
        corral: CorralServer, tmp_path: Path) -> None:
    asyncio.run(_scenario(corral, tmp_path))


async def _scenario(corral: CorralServer, tmp_path: Path) -> None:
    api = CorralApi(corral.config, RG)
    kube = PodApi()
    settings = MappingSettings(node_name=NODE, location=corral.config.location)
    # A group left by an earlier run of the node for a pod that no longer exists: removed at start.
    orphan = {"location": settings.location, "tags": {"k8s-node": NODE, "k8s-uid": "gone"},
              "properties": {"containers": [{"name": "c", "properties": {
                  "image": "corral/busybox:latest", "command": ["sleep", "3600"],
                  "resources": {"requests": {"cpu": 0.1, "memoryInGB": 0.1}}}}]}}
    await api.put_group("default-orphan", orphan)
    kube.add(web_pod("web", "uid-web-1", NODE, busy=True))
    ctl = PodController(kube, api, settings, host_ip="127.0.0.1")  # type: ignore[arg-type]
    tasks = await ctl.start()
    kubelet_task: asyncio.Task[None] | None = None
    try:
        assert await api.get_group("default-orphan") is None or \
            (await api.get_group("default-orphan"))["properties"]["provisioningState"] == "Deleting"
        pod = kube.pods[("default", "web")]
        await wait(lambda: condition(pod, "Ready") == "True", what="the pod Ready from its tcpSocket probe")
        assert pod.status is not None and pod.status.phase == "Running"
        assert pod.status.podIP and pod.status.podIP.count(".") == 3 and pod.status.hostIP == "127.0.0.1"
        cs = pod.status.containerStatuses[0]  # type: ignore[index]
        assert cs.ready and cs.started and cs.restartCount == 0 and cs.state.running is not None  # type: ignore
        group = await api.get_group(group_name("default", "web"))
        assert group is not None and group["tags"]["k8s-uid"] == "uid-web-1"
        started = group["properties"]["containers"][0]["properties"]["instanceView"]["currentState"]["startTime"]

        # The kubelet API over TLS, against the real group.
        _, cert, key = ensure_certificates(tmp_path / "tls", ["127.0.0.1"])
        port = free_port()
        kubelet = KubeletApi(api, Tokens(), NODE, lambda: list(kube.pods.values()), PodMetrics(api, NODE))
        kubelet_task = asyncio.create_task(serve(kubelet, "127.0.0.1", port, str(cert), str(key), None))
        await _kubelet_checks(port, tmp_path)

        # A restart of the connector adopts the running group: nothing is created again or restarted.
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        ctl = PodController(kube, api, settings, host_ip="127.0.0.1")  # type: ignore[arg-type]
        tasks = await ctl.start()
        await asyncio.sleep(2)
        again = await api.get_group(group_name("default", "web"))
        assert again is not None
        iv = again["properties"]["containers"][0]["properties"]["instanceView"]
        assert iv["currentState"]["startTime"] == started and iv["restartCount"] == 0
        assert ("default", "web") in kube.pods

        # Deleting the pod deletes its group, then completes the graceful delete.
        kube.mark_deleting("default", "web")
        await wait(lambda: "web" in kube.deleted, what="the pod's graceful delete to complete")
        assert await api.get_group(group_name("default", "web")) is None
        assert await api.get_group("default-orphan") is None
        assert [e for e in kube.events if e.reason == "Scheduled"]
    finally:
        for t in [*tasks, *([kubelet_task] if kubelet_task else [])]:
            t.cancel()
        await asyncio.gather(*tasks, *([kubelet_task] if kubelet_task else []), return_exceptions=True)
        for name in ("default-web", "default-orphan"):
            try:
                await api.delete_group(name)
            except Exception:
                pass
        await api.close()


async def _kubelet_checks(port: int, tmp_path: Path) -> None:
    base = f"https://127.0.0.1:{port}"
    ctx = ssl.create_default_context(cafile=str(tmp_path / "tls" / "ca.pem"))
    alice = {"Authorization": "Bearer alice-token"}
    async with httpx.AsyncClient(verify=ctx, timeout=20) as http:
        await wait(_up(http, base), what="the kubelet API to listen")
        assert (await http.get(base + "/containerLogs/default/web/web")).status_code == 401
        bob = {"Authorization": "Bearer bob-token"}
        denied = await http.get(base + "/containerLogs/default/web/web", headers=bob)
        assert denied.status_code == 403 and 'cannot get resource "nodes/proxy"' in denied.text
        assert (await http.get(base + "/stats/summary", headers=bob)).status_code == 200
        logs = await http.get(base + "/containerLogs/default/web/web", params={"tailLines": 5}, headers=alice)
        assert logs.status_code == 200 and "started web" in logs.text
        # Real CPU and memory, from Corral's metrics API: the busy container spins on its tenth of a core.
        async def busy_beats_web() -> dict[str, Any] | None:
            summary = (await http.get(base + "/stats/summary", headers=alice)).json()
            pod = summary["pods"][0] if summary["pods"] else {"containers": []}
            by = {c["name"]: c for c in pod["containers"]}
            if set(by) != {"web", "busy"} or by["busy"]["cpu"]["usageNanoCores"] < 20_000_000:
                return None
            return summary | {"by": by}
        summary = await wait(busy_beats_web, 60, "the busy container's CPU in /stats/summary")
        assert summary["node"]["nodeName"] == NODE and summary["pods"][0]["podRef"]["name"] == "web"
        by = summary["by"]
        assert by["busy"]["cpu"]["usageNanoCores"] > 5 * by["web"]["cpu"]["usageNanoCores"], by
        assert by["web"]["memory"]["workingSetBytes"] > 100_000 and by["busy"]["memory"]["workingSetBytes"] > 0
        assert summary["pods"][0]["cpu"]["usageNanoCores"] >= by["busy"]["cpu"]["usageNanoCores"]
        first = _counters(await http.get(base + "/metrics/resource", headers=alice))
        await asyncio.sleep(1)
        metrics = await http.get(base + "/metrics/resource", headers=alice)
        assert "resource_scrape_error 0" in metrics.text and "# TYPE container_cpu_usage_seconds_total counter" \
            in metrics.text
        second = _counters(metrics)
        assert second["busy"] > first["busy"] and second["web"] >= first["web"], (first, second)
        pods = (await http.get(base + "/pods", headers=alice)).json()
        assert [p["metadata"]["name"] for p in pods["items"]] == ["web"]

    # SPDY upgrades (kubectl drives them in test_kube_kubectl.py): authenticated and negotiated first
    spdy = "POST /exec/default/{pod}/web?command=true&output=1 HTTP/1.1\r\nHost: node\r\nConnection: Upgrade\r\n" \
           "Upgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: {proto}\r\n{auth}\r\n"
    assert (await _raw(port, ctx, spdy.format(pod="web", proto="v4.channel.k8s.io", auth="")))[0] == 401
    auth = "Authorization: Bearer alice-token\r\n"
    code, head = await _raw(port, ctx, spdy.format(pod="web", proto="v9.channel.k8s.io", auth=auth))
    assert code == 403 and "x-accepted-stream-protocol-versions: v4.channel.k8s.io" in head.lower()
    assert (await _raw(port, ctx, spdy.format(pod="nope", proto="v4.channel.k8s.io", auth=auth)))[0] == 404
    code, head = await _raw(port, ctx, spdy.format(pod="web", proto="v4.channel.k8s.io", auth=auth))
    assert code == 101 and "x-stream-protocol-version: v4.channel.k8s.io" in head.lower()

    # exec: the channel protocol, stdout on channel 1 and the exit status on channel 3 (the query as the API
    # server sends it to kubelets)
    uri = f"wss://127.0.0.1:{port}/exec/default/web/web?command=sh&command=-c&command=echo+hi%3B+exit+3" \
          "&output=1&error=1"
    async with connect(uri, ssl=ctx, subprotocols=["v5.channel.k8s.io", "v4.channel.k8s.io"],  # type: ignore[list-item]
                       additional_headers=alice, proxy=None) as ws:
        assert ws.subprotocol == "v5.channel.k8s.io"
        got: dict[int, bytes] = {}
        async for msg in ws:
            assert isinstance(msg, bytes)
            got[msg[0]] = got.get(msg[0], b"") + msg[1:]
    assert got[1] == b"hi\n"
    err = json.loads(got[3])
    assert err["status"] == "Failure" and err["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]

    # port-forward: the port on both channels first, then the bytes of one TCP connection to the pod
    uri = f"wss://127.0.0.1:{port}/portForward/default/web?port=8080"
    async with connect(uri, ssl=ctx, subprotocols=["v4.channel.k8s.io"],  # type: ignore[list-item]
                       additional_headers=alice, proxy=None) as ws:
        first = [await ws.recv(), await ws.recv()]
        assert sorted(first) == [b"\x00\x90\x1f", b"\x01\x90\x1f"]  # type: ignore[type-var]
        await ws.send(b"\x00GET /etc/hostname HTTP/1.0\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"\n"):
            msg = await asyncio.wait_for(ws.recv(), 10)
            assert isinstance(msg, bytes) and msg[0] == 0
            data += msg[1:]
        assert data.startswith(b"HTTP/1.") and b" 200 " in data.split(b"\r\n")[0]


def _counters(resp: httpx.Response) -> dict[str, float]:
    """container -> container_cpu_usage_seconds_total, from /metrics/resource."""
    out = {}
    for line in resp.text.splitlines():
        if m := re.match(r'container_cpu_usage_seconds_total\{container="([^"]+)"[^}]*\} (\S+)', line):
            out[m[1]] = float(m[2])
    return out


async def _raw(port: int, ctx: ssl.SSLContext, request: str) -> tuple[int, str]:
    """The status and head of the answer to a raw HTTP request (an upgrade httpx cannot send)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        writer.write(request.encode())
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)).decode("latin-1")
        return int(head.split(" ", 2)[1]), head
    finally:
        writer.close()


def _up(http: httpx.AsyncClient, base: str) -> Any:
    async def check() -> bool:
        try:
            return (await http.get(base + "/healthz")).status_code in (200, 401)
        except httpx.TransportError:
            return False
    return check
