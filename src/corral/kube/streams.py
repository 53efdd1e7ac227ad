"""kubelet's streaming protocols (exec, attach, port-forward), bridged to Corral's sessions.

What a session does is the same whatever carries it; the client side is a ``Peer`` (channels 0 stdin,
1 stdout, 2 stderr, 3 error, 4 resize, 255 stdin closed). Two transports, as kubelet serves them:

- websockets (here): ``v5.channel.k8s.io`` .. ``channel.k8s.io``, every binary message starts with its
  channel byte; the error channel carries a metav1 Status as JSON at the end (v4+, with the exit code),
  resize ``{"Width","Height"}``, and in v5 255 says stdin ended. Port-forward (``v4.channel.k8s.io`` /
  ``portforward.k8s.io``) opens two channels per ``port`` query value, data ``2i`` and error ``2i+1``,
  each starting with the port number (little-endian uint16).
- SPDY/3.1 (``spdy_streams``): one SPDY stream per channel, named by its ``streamType`` header.

The query is kubelet's (``command``, ``input``, ``output``, ``error``, ``tty`` = 1, as the API server
sends them); ``stdin``/``stdout``/``stderr`` and ``true`` are accepted too. Corral runs interactive
commands in a terminal, so with stdin but no tty the output still comes through one (merged, echoed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import WebSocket
from starlette.datastructures import QueryParams
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from corral.kube.corral_api import CorralApi, CorralRefused, CorralUnavailable

log = logging.getLogger(__name__)

EXEC_PROTOCOLS = ["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io",
                  "channel.k8s.io"]
STATUS_PROTOCOLS = {"v5.channel.k8s.io", "v4.channel.k8s.io"}  # the error channel carries a JSON Status
PORT_FORWARD_PROTOCOLS = ["v4.channel.k8s.io", "portforward.k8s.io", "channel.k8s.io"]
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
FIRST_SIZE_WAIT = 1.0  # a tty client sends its terminal's size first; the terminal starts at that size


def choose(offered: list[str], supported: list[str]) -> str | None:
    """The first protocol the client offers that we speak (the client's order, as kubelet negotiates)."""
    return next((p for p in offered if p in supported), None)


@dataclass(frozen=True)
class ExecOptions:
    command: list[str]
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool

    @classmethod
    def from_query(cls, q: QueryParams) -> ExecOptions:
        def flag(*names: str) -> bool:
            return any(q.get(n) in ("1", "true", "True") for n in names)

        tty = flag("tty")
        # As kubelet: a terminal has no separate stderr.
        return cls(q.getlist("command"), flag("input", "stdin"), flag("output", "stdout"),
                   flag("error", "stderr") and not tty, tty)


def status(code: int | None, message: str | None = None) -> bytes:
    """The metav1 Status kubectl reads from the error channel (v4+)."""
    if code == 0 and message is None:
        return json.dumps({"metadata": {}, "status": "Success"}).encode()
    if code is None:
        return json.dumps({"metadata": {}, "status": "Failure", "message": message or "error",
                           "reason": "InternalError", "code": 500}).encode()
    return json.dumps({"metadata": {}, "status": "Failure",
                       "message": message or f"command terminated with non-zero exit code: exit status {code}",
                       "reason": "NonZeroExitCode",
                       "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}).encode()


def error_report(code: int | None, message: str | None, json_status: bool) -> bytes:
    """What the error channel carries at the end: the Status (v4+), else only a failure's text (v1-v3)."""
    if json_status:
        return status(code, message)
    if code == 0 and message is None:
        return b""
    return (message or f"command terminated with non-zero exit code: exit status {code}").encode()


# The client went away mid-session (peers raise ConnectionError; Corral's side raises ConnectionClosed).
GONE = (ConnectionError, ConnectionClosed)


def _message(exc: CorralRefused | CorralUnavailable) -> str:
    return exc.message if isinstance(exc, CorralRefused) else str(exc)


class Peer(Protocol):
    """The client's end of an exec or attach session."""

    async def send(self, channel: int, data: bytes) -> None: ...

    def receive(self) -> AsyncIterator[tuple[int, bytes]]:
        """(channel, payload) from the client: STDIN data, RESIZE JSON, CLOSE once stdin ended; the
        iteration ends when the client is gone."""
        ...


async def _first(*coros: Coroutine[Any, Any, Any]) -> tuple[int, Any]:
    """Run until one finishes (the others are cancelled and awaited): its index and result (or exception)."""
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    index = next(i for i, t in enumerate(tasks) if t in done)
    return index, tasks[index].result()


async def _open_corral(corral: CorralApi, gname: str, what: str, body: dict[str, Any]) -> ClientConnection:
    uri, password = await corral.session(gname, what, body)
    ctx: ssl.SSLContext | None = corral.ssl if uri.startswith("wss://") else None
    if uri.startswith("wss://") and ctx is None:
        ctx = ssl.create_default_context()
    ws = await connect(uri, ssl=ctx, open_timeout=10, max_size=None, proxy=None)
    await ws.send(password)
    return ws


def _size(payload: bytes) -> tuple[int, int] | None:
    try:
        size = json.loads(payload)
        return int(size["Height"]), int(size["Width"])
    except (ValueError, KeyError, TypeError):
        return None


async def run_exec(peer: Peer, corral: CorralApi, gname: str, container: str, opts: ExecOptions,
                   json_status: bool) -> None:
    """Run the command in the container; the exit code (or why it could not run) ends on the error channel."""
    try:
        if not opts.command:
            raise CorralRefused(400, "BadRequest", "you must specify at least one command for the container")
        if not opts.tty and not opts.stdin:
            # Nothing to type: run to completion, with separate stdout and stderr and the real exit code.
            res = await corral.exec_sync(gname, container, opts.command, None)
            if res["stdout"] and opts.stdout:
                await peer.send(STDOUT, res["stdout"].encode())
            if res["stderr"] and opts.stderr:
                await peer.send(STDERR, res["stderr"].encode())
            await peer.send(ERROR, error_report(res["exitCode"], None, json_status))
            return
        events: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()
        pump = asyncio.create_task(_pump(peer, events))
        try:
            rows, cols, pending = 24, 80, []
            if opts.tty:
                with contextlib.suppress(TimeoutError):
                    first = await asyncio.wait_for(events.get(), FIRST_SIZE_WAIT)
                    size = _size(first[1]) if first is not None and first[0] == RESIZE else None
                    if size is not None:
                        rows, cols = size
                    else:
                        pending.append(first)
            ws = await _open_corral(corral, gname, f"{container}/exec",
                                    {"command": opts.command, "terminalSize": {"rows": rows, "cols": cols}})
            try:
                which, code = await _first(_exec_output(peer, ws), _exec_input(events, pending, ws))
            finally:
                await ws.close()
        finally:
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        if which == 0:  # the command ended (not the client)
            await peer.send(ERROR, error_report(code, None if code is not None else
                                                "the command's session ended without an exit code", json_status))
    except (CorralRefused, CorralUnavailable) as exc:
        with contextlib.suppress(*GONE):
            await peer.send(ERROR, error_report(None, _message(exc), json_status))
    except GONE:
        pass


async def _pump(peer: Peer, events: asyncio.Queue[tuple[int, bytes] | None]) -> None:
    try:
        async for event in peer.receive():
            events.put_nowait(event)
    finally:
        events.put_nowait(None)


async def _exec_output(peer: Peer, ws: ClientConnection) -> int | None:
    try:
        async for msg in ws:
            data = msg.encode() if isinstance(msg, str) else msg
            if data.startswith(b"error: "):
                raise CorralRefused(409, "ExecFailed", data[7:].decode(errors="replace").strip())
            await peer.send(STDOUT, data)
    except ConnectionClosed:
        pass
    try:
        return json.loads(ws.close_reason or "").get("exitCode")
    except (ValueError, AttributeError):
        return None


async def _exec_input(events: asyncio.Queue[tuple[int, bytes] | None], pending: list[Any],
                      ws: ClientConnection) -> None:
    while True:
        event = pending.pop(0) if pending else await events.get()
        if event is None:
            return  # the client is gone
        channel, payload = event
        try:
            if channel == STDIN and payload:
                await ws.send(payload)
            elif channel == RESIZE and (size := _size(payload)) is not None:
                await ws.send(f"\x1b[8;{size[0]};{size[1]}t")
            elif channel == CLOSE:
                await ws.send(b"\x04")  # stdin ended: end-of-file on the terminal
        except ConnectionClosed:
            await asyncio.Event().wait()  # the command ended: the output side reports how


async def run_attach(peer: Peer, corral: CorralApi, gname: str, container: str, json_status: bool) -> None:
    """The container's output as it comes (Corral containers have no stdin pipe: input is dropped)."""
    async def output(ws: ClientConnection) -> None:
        try:
            async for msg in ws:
                data = msg.encode() if isinstance(msg, str) else msg
                await peer.send(STDOUT, data.replace(b"\r\n", b"\n"))
        except ConnectionClosed:
            pass

    async def drain() -> None:
        async for _ in peer.receive():
            pass

    try:
        ws = await _open_corral(corral, gname, f"{container}/attach", {})
        try:
            which, _ = await _first(output(ws), drain())
        finally:
            await ws.close()
        if which == 0:
            await peer.send(ERROR, error_report(0, None, json_status))
    except (CorralRefused, CorralUnavailable) as exc:
        with contextlib.suppress(*GONE):
            await peer.send(ERROR, error_report(None, _message(exc), json_status))
    except GONE:
        pass


async def forward(corral: CorralApi, gname: str, port: int, incoming: AsyncIterator[bytes],
                  send: Callable[[bytes], Awaitable[None]], gone: asyncio.Event) -> str | None:
    """One TCP connection to ``port`` of the group through Corral's port-forward session, until the pod
    closes it or the client is ``gone``. ``incoming`` ending is a half-close: the answer may still come.
    Returns why it failed, or None."""
    try:
        ws = await _open_corral(corral, gname, "portForward", {"port": port})
    except (CorralRefused, CorralUnavailable) as exc:
        return _message(exc)
    errors: list[str] = []

    async def output() -> None:
        try:
            async for msg in ws:
                if isinstance(msg, str):
                    if msg.startswith("error: "):
                        errors.append(msg[7:].strip())
                    continue
                await send(msg)
        except ConnectionClosed:
            pass

    async def input_() -> None:
        with contextlib.suppress(ConnectionClosed):  # the pod closed: output() sees the end
            async for data in incoming:
                await ws.send(data)
        await gone.wait()

    try:
        await _first(output(), input_())
    except GONE:
        pass
    finally:
        await ws.close()
    return errors[0] if errors else None


# websockets ----------------------------------------------------------------------------------------------------
def offered(websocket: WebSocket) -> list[str]:
    raw = websocket.headers.get("sec-websocket-protocol", "")
    return [p.strip() for p in raw.split(",") if p.strip()]


class WebSocketPeer:
    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket

    async def send(self, channel: int, data: bytes) -> None:
        try:
            await self.websocket.send_bytes(bytes([channel]) + data)
        except (WebSocketDisconnect, RuntimeError) as exc:  # starlette: RuntimeError once closed
            raise ConnectionError("the client closed the websocket") from exc

    async def receive(self) -> AsyncIterator[tuple[int, bytes]]:
        while True:
            msg = await self.websocket.receive()
            if msg["type"] == "websocket.disconnect":
                return
            data = msg.get("bytes") or (msg.get("text") or "").encode()
            if data:
                yield data[0], data[1:]


async def _close(websocket: WebSocket) -> None:
    with contextlib.suppress(RuntimeError):
        await websocket.close()


async def exec_session(websocket: WebSocket, corral: CorralApi, gname: str, container: str) -> None:
    proto = choose(offered(websocket), EXEC_PROTOCOLS)
    await websocket.accept(subprotocol=proto)
    try:
        await run_exec(WebSocketPeer(websocket), corral, gname, container,
                       ExecOptions.from_query(websocket.query_params), proto in STATUS_PROTOCOLS)
    finally:
        await _close(websocket)


async def attach_session(websocket: WebSocket, corral: CorralApi, gname: str, container: str) -> None:
    proto = choose(offered(websocket), EXEC_PROTOCOLS)
    await websocket.accept(subprotocol=proto)
    try:
        await run_attach(WebSocketPeer(websocket), corral, gname, container, proto in STATUS_PROTOCOLS)
    finally:
        await _close(websocket)


def forward_error(port: int, pod: str, message: str) -> bytes:
    return f"error forwarding port {port} to pod {pod}: {message}".encode()


async def port_forward_session(websocket: WebSocket, corral: CorralApi, gname: str, pod: str) -> None:
    proto = choose(offered(websocket), PORT_FORWARD_PROTOCOLS)
    ports = [int(p) for v in websocket.query_params.getlist("port") for p in v.split(",") if p.strip().isdigit()]
    await websocket.accept(subprotocol=proto)
    if not ports:
        await websocket.close(code=1008, reason="query parameter 'port' is required")
        return
    lock, peer = asyncio.Lock(), WebSocketPeer(websocket)

    async def send(channel: int, data: bytes) -> None:
        async with lock:
            await peer.send(channel, data)

    for i, port in enumerate(ports):
        for ch in (2 * i, 2 * i + 1):
            await send(ch, port.to_bytes(2, "little"))
    queues: list[asyncio.Queue[bytes]] = [asyncio.Queue() for _ in ports]
    gone = asyncio.Event()

    async def from_client() -> None:
        try:
            async for channel, payload in peer.receive():
                i, is_error = divmod(channel, 2)
                if not is_error and i < len(ports) and payload:
                    queues[i].put_nowait(payload)
        finally:
            gone.set()
            for q in queues:
                q.put_nowait(b"")

    async def incoming(q: asyncio.Queue[bytes]) -> AsyncIterator[bytes]:
        while data := await q.get():
            yield data

    async def one(i: int, port: int) -> None:
        error = await forward(corral, gname, port, incoming(queues[i]), lambda d: send(2 * i, d), gone)
        if error is not None:
            await send(2 * i + 1, forward_error(port, pod, error))

    async def all_ports() -> None:
        await asyncio.gather(*(one(i, port) for i, port in enumerate(ports)))

    try:
        await _first(from_client(), all_ports())
    except GONE:
        pass
    finally:
        await _close(websocket)
