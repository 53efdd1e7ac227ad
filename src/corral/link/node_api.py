"""A remote agent's own API: its ``NodeClient`` (logs, exec, attach, port-forward, image cache) over HTTPS.

Served by `corral agent` with mutual TLS: only a client certificate the cluster CA issued
for TLS *client* use (the servers') is accepted; node certificates are TLS server only, so
one node cannot call another. The servers proxy these to API clients as they proxy the
in-process node of `corral up` (``corral.link.node_http.RemoteNodeClient`` is the other end).

Streams (log follow, attach) are NDJSON: ``{"line": "..."}`` per line, ``{}`` as a keepalive
every second so the server notices a client that left. A pty and a port-forward are websockets: binary
frames both ways; for a pty a text frame ``{"resize": [rows, cols]}`` resizes it and the exit
code comes in the close reason (``{"exitCode": N}``); a session that cannot start sends one text frame
``{"error": {...}}`` and closes.
"""

from __future__ import annotations

import base64
import json
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
from fastapi import APIRouter, FastAPI, Query, Request, WebSocket
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from starlette.websockets import WebSocketDisconnect

from corral.api.duplex import close_socket, duplex, ended_by_itself, pump_out
from corral.errors import CorralError
from corral.link.protocol import NodeClient
from corral.serving import stream_threads

NODE_PREFIX = "/node/v1"
KEEPALIVE = 1.0
READ_WAKE = 0.5  # seconds a pty or stream read waits before the loop looks around again
router = APIRouter(prefix=NODE_PREFIX)


def _node(request: Request | WebSocket) -> NodeClient:
    return request.app.state.node


class ExecCall(BaseModel):
    uid: str
    container: str
    argv: list[str] = Field(min_length=1)
    timeout: float | None = None


@router.get("/logs")
def logs(request: Request, uid: str, container: str, tail: int | None = None, timestamps: bool = False) -> Any:
    return {"content": _node(request).logs(uid, container, tail, timestamps)}


def _ndjson(make: Callable[[Callable[[], bool]], Iterator[str]]) -> StreamingResponse:
    """Stream a blocking line iterator as NDJSON with keepalives; the iterator stops once the client is gone."""
    stopped = threading.Event()
    it = make(stopped.is_set)  # raises here (before the 200) when the container is not there
    lines: queue.Queue[str | None] = queue.Queue(maxsize=1024)

    def pump() -> None:
        try:
            for line in it:
                lines.put(line)
                if stopped.is_set():
                    break
        finally:
            lines.put(None)

    threading.Thread(target=pump, name="node-stream", daemon=True).start()

    async def body() -> AsyncIterator[bytes]:
        try:
            while True:
                try:
                    line = await anyio.to_thread.run_sync(lines.get, True, KEEPALIVE, limiter=stream_threads())
                except queue.Empty:
                    yield b"{}\n"
                    continue
                if line is None:
                    return
                yield (json.dumps({"line": line}) + "\n").encode()
        finally:
            stopped.set()

    return StreamingResponse(body(), media_type="application/x-ndjson")


@router.get("/logs/follow")
def follow(request: Request, uid: str, container: str, tail: int | None = None,
           timestamps: bool = False) -> StreamingResponse:
    node = _node(request)
    return _ndjson(lambda stop: node.follow_logs(uid, container, timestamps, stop, tail))


@router.get("/attach")
def attach(request: Request, uid: str, container: str, tail: int | None = 0) -> StreamingResponse:
    node = _node(request)
    return _ndjson(lambda stop: node.attach(uid, container, stop, tail))


@router.post("/exec")
def exec_(request: Request, body: ExecCall) -> Any:
    code, out, err = _node(request).exec(body.uid, body.container, body.argv, body.timeout)
    return {"exitCode": code, "stdout": base64.b64encode(out).decode(), "stderr": base64.b64encode(err).decode()}


@router.get("/images")
def images(request: Request) -> Any:
    return {"images": _node(request).cached_images()}


async def _refuse(websocket: WebSocket, exc: CorralError) -> None:
    """A session that cannot start: one text frame says why (output frames are binary), then the close."""
    await websocket.send_text(json.dumps({"error": {"code": exc.code, "message": exc.message, "status": exc.status}}))
    await close_socket(websocket, 1011)


async def _pipe(websocket: WebSocket, read: Callable[[], bytes | None], write: Callable[[bytes], None],
                control: Callable[[dict[str, Any]], None] | None = None) -> bool:
    """Binary frames out of ``read`` and into ``write`` until either side ends; text frames go to ``control``.
    True when the node's side ended by itself."""
    async def input_() -> None:
        while True:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("text") is not None:
                if control is not None:
                    control(json.loads(msg["text"]))
                continue
            try:
                await anyio.to_thread.run_sync(write, msg.get("bytes") or b"", limiter=stream_threads())
            except OSError:
                return

    return ended_by_itself(await duplex(pump_out(read, websocket.send_bytes), input_()))


@router.websocket("/pty")
async def pty(websocket: WebSocket, uid: str, container: str, argv: str = Query(...), rows: int = 24,
              cols: int = 80) -> None:
    await websocket.accept()
    try:
        session = await anyio.to_thread.run_sync(_node(websocket).exec_pty, uid, container, json.loads(argv),
                                                 rows, cols)
    except CorralError as exc:
        await _refuse(websocket, exc)
        return

    def resize(msg: dict[str, Any]) -> None:
        if msg.get("resize"):
            session.resize(int(msg["resize"][0]), int(msg["resize"][1]))

    try:
        if await _pipe(websocket, lambda: session.read(65536, READ_WAKE), session.write, resize):
            code = await anyio.to_thread.run_sync(session.wait, 5.0)
            await close_socket(websocket, 1000, json.dumps({"exitCode": code}))
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        await anyio.to_thread.run_sync(session.close)


@router.websocket("/port-forward")
async def port_forward(websocket: WebSocket, uid: str, port: int) -> None:
    await websocket.accept()
    try:
        stream = await anyio.to_thread.run_sync(_node(websocket).port_forward, uid, port)
    except CorralError as exc:
        await _refuse(websocket, exc)
        return
    try:
        if await _pipe(websocket, lambda: stream.read(65536, READ_WAKE), stream.write):
            await close_socket(websocket, 1000, json.dumps({"closed": True}))
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        await anyio.to_thread.run_sync(stream.close)


def node_app(node: NodeClient) -> FastAPI:
    from corral.api.errors import install

    app = FastAPI(title="Corral node", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.node = node
    install(app)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(router)
    return app
