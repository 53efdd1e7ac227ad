"""Liveness and readiness probes (exec and httpGet) on real containers, through the API."""

from __future__ import annotations

from datetime import datetime

from corral_server import CorralServer
from groups import container, delete, exec_sync, get, group, put, view, wait_for

RG = "it-probes"


def _ts(v: str) -> datetime:
    return datetime.fromisoformat(v.replace("Z", "+00:00"))


def _events(g: dict, name: str, kind: str) -> list[dict]:  # type: ignore[type-arg]
    return [e for e in view(g, name)["events"] if e["name"] == kind]


def test_failing_exec_liveness_probe_restarts_the_container_with_events(corral: CorralServer) -> None:
    client = corral.client()
    cmd = ["sh", "-c", "touch /tmp/healthy; sleep 2; rm /tmp/healthy; sleep 3600"]
    probe = {"exec": {"command": ["cat", "/tmp/healthy"]}, "periodSeconds": 1, "failureThreshold": 2}
    put(client, RG, "live-exec", group(container("live-exec", cmd, livenessProbe=probe)))
    try:
        g = wait_for(client, RG, "live-exec", lambda g: view(g, "live-exec")["restartCount"] >= 1, timeout=60)
        unhealthy = _events(g, "live-exec", "Unhealthy")
        assert unhealthy and unhealthy[0]["type"] == "Warning"
        assert unhealthy[0]["message"].startswith("Liveness probe failed: command 'cat' exited with 1")
        assert _events(g, "live-exec", "Killing")
        g = wait_for(client, RG, "live-exec", lambda g: view(g, "live-exec")["currentState"]["state"] == "Running")
        assert view(g, "live-exec")["previousState"]["state"] == "Terminated"
    finally:
        delete(client, RG, "live-exec")


def test_liveness_failure_under_restart_policy_never_leaves_it_terminated(corral: CorralServer) -> None:
    client = corral.client()
    probe = {"exec": {"command": ["false"]}, "periodSeconds": 1, "failureThreshold": 1}
    put(client, RG, "live-never", group(container("live-never", ["sleep", "3600"], livenessProbe=probe),
                                        restartPolicy="Never"))
    try:
        g = wait_for(client, RG, "live-never", lambda g: g["properties"]["instanceView"]["state"] == "Failed")
        iv = view(g, "live-never")
        assert iv["currentState"]["state"] == "Terminated" and iv["restartCount"] == 0
        assert _events(g, "live-never", "Killing")
    finally:
        delete(client, RG, "live-never")


def test_http_liveness_waits_for_initial_delay_and_times_out(corral: CorralServer) -> None:
    client = corral.client()
    # Nothing listens on 8081: every probe fails, but not before initialDelaySeconds.
    probe = {"httpGet": {"port": 8081, "path": "/"}, "initialDelaySeconds": 3, "periodSeconds": 1,
             "failureThreshold": 1, "timeoutSeconds": 1}
    put(client, RG, "live-http", group(container("live-http", ["sleep", "3600"], livenessProbe=probe)))
    try:
        g = wait_for(client, RG, "live-http", lambda g: _events(g, "live-http", "Killing"), timeout=60)
        first = _events(g, "live-http", "Unhealthy")[0]
        started = view(g, "live-http")["previousState"]["startTime"] if view(g, "live-http")["restartCount"] else \
            view(g, "live-http")["currentState"]["startTime"]
        assert (_ts(first["firstTimestamp"]) - _ts(started)).total_seconds() >= 3
        assert "GET http://" in first["message"] and ":8081/" in first["message"]
    finally:
        delete(client, RG, "live-http")


def test_exec_probe_over_its_timeout_fails(corral: CorralServer) -> None:
    client = corral.client()
    probe = {"exec": {"command": ["sleep", "5"]}, "periodSeconds": 1, "timeoutSeconds": 1, "failureThreshold": 50}
    put(client, RG, "ready-slow", group(container("ready-slow", ["sleep", "3600"], readinessProbe=probe)))
    try:
        g = wait_for(client, RG, "ready-slow", lambda g: _events(g, "ready-slow", "Unhealthy"), timeout=30)
        assert "timed out after 1s" in _events(g, "ready-slow", "Unhealthy")[0]["message"]
        assert view(g, "ready-slow")["ready"] is False
        assert view(g, "ready-slow")["restartCount"] == 0  # readiness never restarts
    finally:
        delete(client, RG, "ready-slow")


def test_http_readiness_follows_the_server(corral: CorralServer) -> None:
    client = corral.client()
    web = ["sh", "-c", "mkdir -p /www; sleep 2; echo ok > /www/index.html; httpd -f -p 8080 -h /www"]
    probe = {"httpGet": {"port": 8080, "path": "/index.html", "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
             "periodSeconds": 1, "successThreshold": 2, "failureThreshold": 2}
    body = group(container("ready-web", web, readinessProbe=probe, ports=[{"port": 8080}]),
                 container("ready-plain", ["sleep", "3600"]))
    put(client, RG, "ready-http", body)
    try:
        g = get(client, RG, "ready-http")
        assert view(g, "ready-plain")["ready"] is True  # no readiness probe: ready when running
        assert view(g, "ready-web")["ready"] is False  # the server is not up yet
        g = wait_for(client, RG, "ready-http", lambda g: view(g, "ready-web")["ready"] is True, timeout=30)
        assert g["properties"]["instanceView"]["state"] == "Running"
        exec_sync(client, RG, "ready-http", "ready-web", "rm", "/www/index.html")
        g = wait_for(client, RG, "ready-http", lambda g: view(g, "ready-web")["ready"] is False, timeout=30)
        assert "HTTP 404" in _events(g, "ready-web", "Unhealthy")[-1]["message"]
        assert view(g, "ready-web")["currentState"]["state"] == "Running"
        assert view(g, "ready-web")["restartCount"] == 0
    finally:
        delete(client, RG, "ready-http")
