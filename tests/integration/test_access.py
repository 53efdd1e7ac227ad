"""Getting at running containers through the API: exec and attach websockets, log follow, one-container restart,
and the server-sent event stream of state changes."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from corral_server import CorralServer
from groups import container, delete, get, group, put, state, view, wait_for
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from corral.cli.client import API_VERSION, Client
from corral.sse import SseParser

RG = "it-access"


def _ssl(client: Client) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=client.config.ca_cert)


def open_socket(client: Client, session: dict[str, str]) -> ClientConnection:
    uri = session["webSocketUri"]
    return connect(uri, ssl=_ssl(client) if uri.startswith("wss://") else None, proxy=None, open_timeout=10,
                   legacy=True)


def read_until(ws: ClientConnection, needle: str, timeout: float = 20) -> str:
    seen = ""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"never saw {needle!r}; got {seen!r}"
        msg = ws.recv(timeout=left)
        seen += msg if isinstance(msg, str) else msg.decode(errors="replace")
    return seen


def drain(ws: ClientConnection, timeout: float = 20) -> str:
    """Everything until the server closes."""
    seen = ""
    deadline = time.monotonic() + timeout
    try:
        while True:
            msg = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            seen += msg if isinstance(msg, str) else msg.decode(errors="replace")
    except ConnectionClosed:
        return seen


@pytest.fixture
def sleeper(corral: CorralServer) -> Iterator[tuple[Client, str]]:
    client = corral.client()
    name = f"acc-{time.monotonic_ns() % 10**8}"
    put(client, RG, name, group(container("main", ["sleep", "3600"]), container("side", ["sleep", "3600"])))
    try:
        yield client, name
    finally:
        delete(client, RG, name)


def post(client: Client, name: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return client.request("POST", client.group_path(RG, name) + path, json=body or {})


def test_exec_websocket_runs_a_shell_on_a_pty(sleeper: tuple[Client, str]) -> None:
    client, name = sleeper
    session = post(client, name, "/containers/main/exec",
                   {"command": "/bin/sh", "terminalSize": {"rows": 33, "cols": 101}}).json()
    assert session["webSocketUri"].startswith("wss://127.0.0.1:")
    assert len(session["password"]) >= 32
    with open_socket(client, session) as ws:
        ws.send(session["password"])
        ws.send("tty; stty size; echo sum=$((40+2))\n")
        out = read_until(ws, "sum=42")
        assert "/dev/pts/" in out and "33 101" in out
        ws.send("\x1b[8;40;120t")  # resize, then ask again
        ws.send("stty size; exit 7\n")
        out = drain(ws)
        assert "40 120" in out
        assert ws.close_code == 1000 and json.loads(ws.close_reason) == {"exitCode": 7}


def test_exec_password_is_single_use_and_checked(sleeper: tuple[Client, str]) -> None:
    client, name = sleeper
    session = post(client, name, "/containers/main/exec", {"command": ["echo", "once"]}).json()
    with open_socket(client, session) as ws:
        ws.send("not-the-password")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1008
    # The wrong guess did not burn the ticket; the right password works once.
    with open_socket(client, session) as ws:
        ws.send(session["password"])
        assert "once" in drain(ws)
        assert json.loads(ws.close_reason) == {"exitCode": 0}
    with open_socket(client, session) as ws:
        ws.send(session["password"])
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1008


def test_exec_needs_a_known_running_container_and_a_command(sleeper: tuple[Client, str]) -> None:
    client, name = sleeper
    path = client.group_path(RG, name)
    resp = client.http.post(path + "/containers/nope/exec", params={"api-version": API_VERSION},
                            json={"command": "sh"})
    assert resp.status_code == 404
    resp = client.http.post(path + "/containers/main/exec", params={"api-version": API_VERSION},
                            json={"command": ""})
    assert resp.status_code == 400 and "command" in resp.json()["error"]["message"]


def test_websocket_route_does_not_take_the_bearer_token_alone(corral: CorralServer) -> None:
    """Without a session ticket the websocket path leads nowhere, token or not."""
    client = corral.client()
    uri = client.config.endpoint.replace("https://", "wss://") + "/sessions/made-up"
    with connect(uri, ssl=_ssl(client), proxy=None,
                 additional_headers={"Authorization": f"Bearer {client.config.token}"}) as ws:
        ws.send(client.config.token)
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 1008


def test_attach_streams_the_containers_output(corral: CorralServer) -> None:
    client = corral.client()
    name = "attach-ticker"
    put(client, RG, name, group(container("ticker", ["sh", "-c", "i=0; while true; do echo tick-$i; i=$((i+1)); "
                                                                "sleep 0.2; done"])))
    try:
        session = post(client, name, "/containers/ticker/attach").json()
        with open_socket(client, session) as ws:
            ws.send(session["password"])
            first = read_until(ws, "tick-")
            n = int(first.split("tick-")[1].split()[0])
            read_until(ws, f"tick-{n + 3}")  # lines keep arriving while it runs
    finally:
        delete(client, RG, name)


def test_follow_streams_lines_as_they_are_written(corral: CorralServer) -> None:
    client = corral.client()
    name = "follow-job"
    script = "for i in $(seq 1 25); do echo line-$i; sleep 0.2; done"
    put(client, RG, name, group(container("job", ["sh", "-c", script]), restartPolicy="Never"))
    try:
        seen: list[str] = []
        path = client.group_path(RG, name) + "/containers/job/logs"
        params = {"api-version": API_VERSION, "follow": "true"}
        with client.http.stream("GET", path, params=params, timeout=httpx.Timeout(30, read=None)) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"].startswith("text/plain")
            for line in resp.iter_lines():
                seen.append(line)
                if line == "line-3":
                    # Still running: the stream delivered this before the container ended.
                    assert state(get(client, RG, name), "job") == "Running"
        # The stream ends by itself once the group has finished, with every line once, in order.
        assert seen == [f"line-{i}" for i in range(1, 26)]
        assert get(client, RG, name)["properties"]["instanceView"]["state"] == "Succeeded"
    finally:
        delete(client, RG, name)


def _inotify_watches(pid: int) -> dict[str, str]:
    """The server's inotify instances: fd -> its fdinfo (which names the watched inodes)."""
    out = {}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(fd) == "anon_inode:inotify":
                out[fd.name] = Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text()
        except OSError:
            pass
    return out


def _settles(pred, timeout: float = 10) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_follow_ends_when_the_client_goes_away(sleeper: tuple[Client, str], corral: CorralServer) -> None:
    client, name = sleeper
    assert corral.proc is not None
    pid = corral.proc.pid
    path = client.group_path(RG, name) + "/containers/main/logs"
    before = _inotify_watches(pid)
    with client.http.stream("GET", path, params={"api-version": API_VERSION, "follow": "true"},
                            timeout=httpx.Timeout(5, read=1)) as resp:
        assert resp.status_code == 200
        # The follow's own watch: an inotify instance that was not there before the request, on the log's
        # directory and the log (two watches; the runtime's exit watches have one). Its thread may start late,
        # so nothing is read before it is seen: a read that times out closes the client's connection.
        def opened() -> dict[str, str]:
            return {fd: info for fd, info in _inotify_watches(pid).items()
                    if before.get(fd) != info and info.count("inotify wd:") >= 2}

        assert _settles(lambda: bool(opened())), "the follow never watched the log"
        follow = opened()
        # A silent container: the stream stays open with nothing to send (the timeout then drops the connection).
        with pytest.raises(httpx.ReadTimeout):
            next(resp.iter_bytes())
    # Once the client has gone, the follow on the server ends and lets go of its watch
    # (other parts of the server may open and close watches meanwhile: only this one counts).
    def released() -> bool:
        now = _inotify_watches(pid)
        return all(now.get(fd) != info for fd, info in follow.items())

    assert _settles(released, timeout=20), "the follow outlived its client"
    # The server still answers normally afterwards.
    assert get(client, RG, name)["properties"]["instanceView"]["state"] == "Running"


def test_exec_process_is_hung_up_when_the_client_goes_away(sleeper: tuple[Client, str]) -> None:
    client, name = sleeper
    session = post(client, name, "/containers/main/exec", {"command": "sleep 4242"}).json()
    with open_socket(client, session) as ws:
        ws.send(session["password"])
        assert _settles(lambda: b"sleep 4242" in subprocess.run(["pgrep", "-af", "sleep 4242"],
                                                                capture_output=True).stdout)
    assert _settles(lambda: subprocess.run(["pgrep", "-f", "sleep 4242"], capture_output=True).returncode == 1)


def test_restart_one_container_leaves_the_others_alone(sleeper: tuple[Client, str]) -> None:
    client, name = sleeper
    before = get(client, RG, name)
    main0, side0 = view(before, "main"), view(before, "side")
    resp = client.request("POST", client.group_path(RG, name) + "/containers/main/restart")
    assert resp.status_code == 204
    g = wait_for(client, RG, name, lambda g: view(g, "main")["restartCount"] == main0["restartCount"] + 1
                 and state(g, "main") == "Running")
    assert view(g, "main")["currentState"]["startTime"] != main0["currentState"]["startTime"]
    assert view(g, "main")["previousState"]["state"] == "Terminated"
    assert view(g, "side")["restartCount"] == side0["restartCount"]
    assert view(g, "side")["currentState"]["startTime"] == side0["currentState"]["startTime"]
    assert any(e["name"] == "Restarting" for e in view(g, "main")["events"])
    # The restart is recorded once: the agent does not repeat it on later passes.
    time.sleep(1.5)
    assert view(get(client, RG, name), "main")["restartCount"] == main0["restartCount"] + 1

    resp = client.http.post(client.group_path(RG, name) + "/containers/nope/restart",
                            params={"api-version": API_VERSION})
    assert resp.status_code == 404


class SseReader:
    """Reads a server-sent event stream in a thread, collecting (event, data)."""

    def __init__(self, client: Client, path: str) -> None:
        self.client, self.path = client, path
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.ready = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self.ready.wait(10), "the event stream did not open"

    def _run(self) -> None:
        parser = SseParser()
        with self.client.http.stream("GET", self.path, params={"api-version": API_VERSION},
                                     timeout=httpx.Timeout(10, read=None)) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
            try:
                for line in resp.iter_lines():
                    if self._stop:
                        return
                    if line == ": watching":
                        self.ready.set()
                    if (message := parser.feed(line)) is not None:
                        self.messages.append(message)
            except httpx.TransportError:
                if not self._stop:  # closed, then the server went away with the test session: no failure
                    raise

    def wait_for(self, pred, timeout: float = 30) -> tuple[str, dict[str, Any]]:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            for m in list(self.messages):
                if pred(*m):
                    return m
            assert time.monotonic() < deadline, f"no such event; got {self.messages}"
            time.sleep(0.05)

    def close(self) -> None:
        self._stop = True


def test_event_stream_of_a_group_shows_state_changes(corral: CorralServer) -> None:
    client = corral.client()
    name = "events-one"
    other = "events-other"
    stream = SseReader(client, client.group_path(RG, name) + "/events")
    try:
        put(client, RG, other, group(container("o", ["sleep", "3600"])), wait=False)
        put(client, RG, name, group(container("ev", ["sh", "-c", "sleep 1; exit 4"]), restartPolicy="Never"))
        stream.wait_for(lambda k, d: k == "container" and d["container"] == "ev" and d["state"] == "Running")
        stream.wait_for(lambda k, d: k == "event" and d["container"] == "ev" and d["event"]["name"] == "Started")
        stream.wait_for(lambda k, d: k == "container" and d["state"] == "Terminated" and d["exitCode"] == 4)
        stream.wait_for(lambda k, d: k == "group" and d["state"] == "Failed")
        delete(client, RG, name)
        stream.wait_for(lambda k, d: k == "deleted" and d["name"] == name)
        assert all(d["name"] == name for _, d in stream.messages), "the stream only shows its own group"
    finally:
        stream.close()
        delete(client, RG, name)
        delete(client, RG, other)


def test_event_stream_of_a_resource_group(corral: CorralServer) -> None:
    client = corral.client()
    rg = "it-access-watch"
    stream = SseReader(client, f"/subscriptions/{client.sub}/resourceGroups/{rg}/providers/"
                               "Microsoft.ContainerInstance/events")
    try:
        put(client, rg, "w1", group(container("a", ["sleep", "3600"])), wait=False)
        put(client, RG, "not-watched", group(container("b", ["sleep", "3600"])), wait=False)
        put(client, rg, "w2", group(container("c", ["sleep", "3600"])), wait=False)
        for n in ("w1", "w2"):
            stream.wait_for(lambda k, d, n=n: k == "group" and d["name"] == n and d["state"] == "Running")
        assert {d["name"] for _, d in stream.messages} <= {"w1", "w2"}
    finally:
        stream.close()
        for n in ("w1", "w2"):
            delete(client, rg, n)
        delete(client, RG, "not-watched")
