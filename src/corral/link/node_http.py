"""``NodeClient`` over HTTPS with mutual TLS: how a server reaches a remote agent (``corral.link.node_api``).

Logs and exec are plain requests; log follow and attach NDJSON streams; a pty and a
port-forward websockets (``RemoteTerminal``, ``RemoteStream``).
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from corral.errors import error_from
from corral.link.http import raise_for
from corral.link.node_api import NODE_PREFIX
from corral.link.protocol import NodeUnavailable

TIMEOUT = 30.0
STREAM_READ = 5.0  # > the node's keepalive interval: a silent stream means the node is gone


class RemoteStream:
    """A ``PortStream`` on a remote node's websocket: binary frames both ways."""

    def __init__(self, ws: ClientConnection, pending: bytes | None = None) -> None:
        self._ws = ws
        self._pending = pending  # output read while checking that the session started
        self._closed = threading.Event()

    def _ended(self, exc: ConnectionClosed) -> None:
        self._closed.set()

    def read(self, size: int = 65536, timeout: float | None = None) -> bytes | None:
        if self._pending is not None:
            data, self._pending = self._pending, None
            return data
        if self._closed.is_set():
            return b""
        try:
            data = self._ws.recv(timeout=timeout)
        except TimeoutError:
            return None
        except ConnectionClosed as exc:
            self._ended(exc)
            return b""
        return data if isinstance(data, bytes) else data.encode()

    def write(self, data: bytes) -> None:
        try:
            self._ws.send(data)
        except ConnectionClosed as exc:
            raise OSError("the other side has closed") from exc

    def close(self) -> None:
        self._ws.close()
        self._closed.set()


class RemoteTerminal(RemoteStream):
    """A ``TerminalSession`` on a remote node's pty websocket; the exit code comes in the close reason."""

    def __init__(self, ws: ClientConnection, pending: bytes | None = None) -> None:
        super().__init__(ws, pending)
        self._code: int | None = None

    def _ended(self, exc: ConnectionClosed) -> None:
        try:
            self._code = json.loads(exc.rcvd.reason).get("exitCode") if exc.rcvd and exc.rcvd.reason else None
        except ValueError:
            self._code = None
        super()._ended(exc)

    def resize(self, rows: int, cols: int) -> None:
        try:
            self._ws.send(json.dumps({"resize": [rows, cols]}))
        except ConnectionClosed:
            pass

    def wait(self, timeout: float | None = None) -> int | None:
        self._closed.wait(timeout)
        return self._code


class RemoteNodeClient:
    def __init__(self, name: str, endpoint: str, ca: Path, cert: Path, key: Path) -> None:
        self.name, self.endpoint = name, endpoint.rstrip("/")
        self._ssl = ssl.create_default_context(cafile=str(ca))
        self._ssl.load_cert_chain(str(cert), str(key))
        self._http = httpx.Client(base_url=self.endpoint + NODE_PREFIX, verify=self._ssl,
                                  timeout=httpx.Timeout(TIMEOUT, connect=3.0))

    def close(self) -> None:
        self._http.close()

    def _unavailable(self, exc: Exception) -> NodeUnavailable:
        return NodeUnavailable(f"node '{self.name}' does not answer at {self.endpoint}: {exc}")

    def _get(self, path: str, params: dict[str, object]) -> httpx.Response:
        try:
            resp = self._http.get(path, params={k: v for k, v in params.items() if v is not None})
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from None
        raise_for(resp)
        return resp

    def _lines(self, path: str, params: dict[str, object], stop: Callable[[], bool]) -> Iterator[str]:
        query = {k: v for k, v in params.items() if v is not None}
        try:
            cm = self._http.stream("GET", path, params=query, timeout=httpx.Timeout(TIMEOUT, read=STREAM_READ))
            resp = cm.__enter__()
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from None
        if resp.status_code >= 400:
            resp.read()
            cm.__exit__(None, None, None)
            raise_for(resp)

        def lines() -> Iterator[str]:
            try:
                for raw in resp.iter_lines():
                    if stop():
                        return
                    if raw:
                        item = json.loads(raw)
                        if "line" in item:
                            yield item["line"]
            except httpx.HTTPError:
                return  # the node went away: the stream ends
            finally:
                cm.__exit__(None, None, None)

        return lines()

    # NodeClient --------------------------------------------------------------
    def logs(self, uid: str, container: str, tail: int | None, timestamps: bool) -> str:
        return self._get("/logs", {"uid": uid, "container": container, "tail": tail,
                                   "timestamps": timestamps}).json()["content"]

    def follow_logs(self, uid: str, container: str, timestamps: bool, stop: Callable[[], bool],
                    tail: int | None = None) -> Iterator[str]:
        return self._lines("/logs/follow", {"uid": uid, "container": container, "tail": tail,
                                            "timestamps": timestamps}, stop)

    def attach(self, uid: str, container: str, stop: Callable[[], bool], tail: int | None = 0) -> Iterator[str]:
        return self._lines("/attach", {"uid": uid, "container": container, "tail": tail}, stop)

    def exec(self, uid: str, container: str, argv: list[str], timeout: float | None) -> tuple[int, bytes, bytes]:
        try:
            resp = self._http.post("/exec", json={"uid": uid, "container": container, "argv": argv, "timeout": timeout},
                                   timeout=httpx.Timeout((timeout or TIMEOUT) + 10, connect=3.0))
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from None
        raise_for(resp)
        data = resp.json()
        return data["exitCode"], base64.b64decode(data["stdout"]), base64.b64decode(data["stderr"])

    def _socket(self, path: str, query: dict[str, object], kind: type[RemoteStream]) -> RemoteStream:
        url = self.endpoint.replace("https://", "wss://", 1) + f"{NODE_PREFIX}{path}?{urllib.parse.urlencode(query)}"
        try:
            # legacy=True: a connection held for a session's life; proxy=None: straight to the node.
            ws = connect(url, ssl=self._ssl, open_timeout=5, max_size=None, proxy=None, legacy=True)
        except (OSError, TimeoutError) as exc:
            raise self._unavailable(exc) from None
        try:
            # The first output, nothing yet, or one text frame naming why the session could not start.
            first = ws.recv(timeout=0.2)
        except TimeoutError:
            return kind(ws)
        except ConnectionClosed as exc:
            stream = kind(ws)
            stream._ended(exc)
            return stream
        if isinstance(first, str):
            err = json.loads(first).get("error") or {}
            ws.close()
            raise error_from(err.get("code", "Error"), int(err.get("status", 500)), err.get("message", first))
        return kind(ws, pending=first)

    def exec_pty(self, uid: str, container: str, argv: list[str], rows: int, cols: int) -> RemoteTerminal:
        query = {"uid": uid, "container": container, "argv": json.dumps(argv), "rows": rows, "cols": cols}
        term = self._socket("/pty", query, RemoteTerminal)
        assert isinstance(term, RemoteTerminal)
        return term

    def port_forward(self, uid: str, port: int) -> RemoteStream:
        return self._socket("/port-forward", {"uid": uid, "port": port}, RemoteStream)

    def cached_images(self) -> list[str]:
        return list(self._get("/images", {}).json()["images"])
