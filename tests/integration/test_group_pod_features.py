"""Corral extensions a Kubernetes pod needs, on real groups: tcpSocket and startup probes, the group's own
address in instanceView, hostAliases, readiness in the event stream, and port-forward over a websocket."""

from __future__ import annotations

import base64
import json
import time

import pytest
from corral_server import CorralServer
from groups import container, delete, exec_sync, get, group, put, view, wait_for
from test_access import SseReader, open_socket
from websockets.exceptions import ConnectionClosed

from corral.cli.client import ApiError

RG = "it-podfeat"
HTTPD = ["httpd", "-f", "-p", "80", "-h", "/"]


def _events(g: dict, name: str, kind: str) -> list[dict]:  # type: ignore[type-arg]
    return [e for e in view(g, name)["events"] if e["name"] == kind]


def test_tcp_probes_startup_probe_address_and_host_aliases(corral: CorralServer) -> None:
    client = corral.client()
    tcp_ok = {"tcpSocket": {"port": 80}, "periodSeconds": 1}
    tcp_closed = {"tcpSocket": {"port": 81}, "periodSeconds": 1, "failureThreshold": 100}
    # The startup probe passes only once /tmp/up exists (after ~2 s); readiness waits for it.
    starting = ["sh", "-c", "sleep 2; touch /tmp/up; exec sleep 3600"]
    startup = {"exec": {"command": ["test", "-f", "/tmp/up"]}, "periodSeconds": 1, "failureThreshold": 30}
    body = group(
        container("web", HTTPD, readinessProbe=tcp_ok, ports=[{"port": 80}]),
        container("closed", ["sleep", "3600"], readinessProbe=tcp_closed),
        container("slow", starting, startupProbe=startup, readinessProbe={"exec": {"command": ["true"]},
                                                                          "periodSeconds": 1}),
        hostAliases=[{"ip": "10.1.2.3", "hostnames": ["foo.remote", "bar.remote"]}],
    )
    sse = SseReader(client, client.group_path(RG, "pf-probes") + "/events")
    put(client, RG, "pf-probes", body)
    try:
        g = wait_for(client, RG, "pf-probes", lambda g: view(g, "web")["ready"] is True
                     and view(g, "slow")["ready"] is True and _events(g, "closed", "Unhealthy"), timeout=40)
        assert view(g, "closed")["ready"] is False
        msg = _events(g, "closed", "Unhealthy")[0]["message"]
        assert msg.startswith("Readiness probe failed: dial tcp ") and ":81: " in msg, msg
        slow = _events(g, "slow", "Unhealthy")
        assert slow and slow[0]["message"].startswith("Startup probe failed: command 'test' exited with 1")
        assert view(g, "slow")["restartCount"] == 0

        ip = g["properties"]["instanceView"]["privateIp"]
        assert ip and ip.count(".") == 3
        hosts = exec_sync(client, RG, "pf-probes", "web", "cat", "/etc/hosts")["stdout"]
        assert "10.1.2.3\tfoo.remote bar.remote" in hosts and f"{ip}\tpf-probes" in hosts

        # Readiness changes reach the event stream (the Kubernetes connector's status comes from it).
        sse.wait_for(lambda k, d: k == "container" and d["container"] == "slow" and d["ready"] is True)
        sse.wait_for(lambda k, d: k == "container" and d["container"] == "web" and d["ready"] is True)
    finally:
        sse.close()
        delete(client, RG, "pf-probes")


def test_failing_startup_probe_kills_the_container(corral: CorralServer) -> None:
    client = corral.client()
    startup = {"tcpSocket": {"port": 9}, "periodSeconds": 1, "failureThreshold": 2}
    put(client, RG, "pf-nostart", group(container("c", ["sleep", "3600"], startupProbe=startup,
                                                  livenessProbe={"exec": {"command": ["false"]}})))
    try:
        g = wait_for(client, RG, "pf-nostart", lambda g: view(g, "c")["restartCount"] >= 1, timeout=40)
        kill = _events(g, "c", "Killing")
        assert kill and "failed its startup probe" in kill[0]["message"]
        # The liveness probe (which always fails) never ran: startup had not succeeded.
        assert not [e for e in view(g, "c")["events"] if e["message"].startswith("Liveness")]
    finally:
        delete(client, RG, "pf-nostart")


def test_probe_needs_exactly_one_action(corral: CorralServer) -> None:
    client = corral.client()
    bad = {"tcpSocket": {"port": 80}, "exec": {"command": ["true"]}}
    with pytest.raises(ApiError) as err:
        client.request("PUT", client.group_path(RG, "pf-bad"), json=group(container("c", ["true"], startupProbe=bad)))
    assert err.value.status == 400 and "exactly one of 'exec', 'httpGet' or 'tcpSocket'" in err.value.message
    with pytest.raises(ApiError) as err:
        client.request("PUT", client.group_path(RG, "pf-bad"),
                       json=group(container("c", ["true"]), hostAliases=[{"ip": "x", "hostnames": ["a"]}]))
    assert err.value.status == 400 and "'x' is not an IP address" in err.value.message


def test_port_forward_carries_a_tcp_connection_to_the_group(corral: CorralServer) -> None:
    client = corral.client()
    put(client, RG, "pf-web", group(container("web", HTTPD)))
    path = client.group_path(RG, "pf-web") + "/portForward"
    try:
        wait_for(client, RG, "pf-web", lambda g: g["properties"]["instanceView"]["state"] == "Running")
        time.sleep(0.3)  # httpd is listening once its process runs; give it a moment
        session = client.request("POST", path, json={"port": 80}).json()
        ws = open_socket(client, session)
        ws.send(session["password"])
        ws.send(b"GET /etc/hostname HTTP/1.0\r\n\r\n")
        data = b""
        try:
            while True:
                msg = ws.recv(timeout=10)
                data += msg if isinstance(msg, bytes) else msg.encode()
        except ConnectionClosed:
            pass
        assert b" 200 " in data.split(b"\r\n")[0] and data.endswith(b"pf-web\n"), data[:300]
        assert ws.close_code == 1000 and json.loads(ws.close_reason) == {"closed": True}

        # Nothing listens on 81: the session fails with the reason.
        session = client.request("POST", path, json={"port": 81}).json()
        ws = open_socket(client, session)
        ws.send(session["password"])
        first = ws.recv(timeout=10)
        assert isinstance(first, str) and first.startswith("error: cannot connect to port 81")
        with pytest.raises(ApiError) as err:
            client.request("POST", path, json={"port": 0})
        assert err.value.status == 400
    finally:
        delete(client, RG, "pf-web")
    with pytest.raises(ApiError) as err:
        client.request("POST", path, json={"port": 80})
    assert err.value.status == 404


def test_args_group_fields_secret_files_updated_in_place_and_capacity(corral: CorralServer) -> None:
    client = corral.client()
    env = [{"name": "MY_IP", "groupField": "privateIp"}, {"name": "NODE_IP", "groupField": "nodeIp"}]
    files = {"level": base64.b64encode(b"one").decode()}
    body = group(
        # args alone: the image's entrypoint (none in corral/busybox) with these arguments, in place of its CMD
        {"name": "c", "properties": {"image": "corral/busybox:latest", "args": ["sleep", "3600"],
                                     "environmentVariables": env,
                                     "volumeMounts": [{"name": "cfg", "mountPath": "/etc/cfg"}],
                                     "resources": {"requests": {"cpu": 0.1, "memoryInGB": 0.1}}}},
        volumes=[{"name": "cfg", "secret": files}],
    )
    cap0 = client.request("GET", f"/subscriptions/{client.sub}/providers/Microsoft.ContainerInstance/locations/"
                          "local/capacity").json()
    put(client, RG, "pf-args", body)
    try:
        g = wait_for(client, RG, "pf-args", lambda g: view(g, "c")["currentState"]["state"] == "Running")
        ip = g["properties"]["instanceView"]["privateIp"]
        out = exec_sync(client, RG, "pf-args", "c", "sh", "-c", "echo $MY_IP $NODE_IP; cat /etc/cfg/level; echo; "
                        "cat /proc/1/cmdline | tr '\\0' ' '")["stdout"].split("\n")
        assert out[0].split()[0] == ip and out[0].split()[1] and out[1] == "one"
        assert out[2].strip() == "sleep 3600"
        started = view(g, "c")["currentState"]["startTime"]
        # New contents of a secret volume reach the running container; nothing restarts.
        body["properties"]["volumes"][0]["secret"] = {"level": base64.b64encode(b"two").decode()}
        put(client, RG, "pf-args", body)
        wait_for(client, RG, "pf-args", lambda g: exec_sync(client, RG, "pf-args", "c", "cat",
                                                            "/etc/cfg/level")["stdout"] == "two", timeout=20)
        g = get(client, RG, "pf-args")
        assert view(g, "c")["currentState"]["startTime"] == started and view(g, "c")["restartCount"] == 0
        # Another kind of volume still needs a new group.
        body["properties"]["volumes"][0] = {"name": "cfg", "emptyDir": {}}
        with pytest.raises(ApiError) as err:
            client.request("PUT", client.group_path(RG, "pf-args"), json=body)
        assert err.value.status == 409 and "except the files of secret volumes" in err.value.message
        cap = client.request("GET", f"/subscriptions/{client.sub}/providers/Microsoft.ContainerInstance/locations/"
                             "local/capacity").json()
        assert cap["readyNodes"] == 1 and cap["total"]["cpu"] > 0
        assert round(cap0["free"]["cpu"] - cap["free"]["cpu"], 3) == 0.1
        assert cap["free"]["groups"] == cap0["free"]["groups"] - 1
    finally:
        delete(client, RG, "pf-args")
