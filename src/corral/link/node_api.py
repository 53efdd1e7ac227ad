"""A remote agent's own API: its ``NodeClient`` (logs, exec, attach, image cache) over HTTPS, for the servers.

Served by `corral agent` with mutual TLS: only a client certificate the cluster CA issued
for TLS *client* use (the servers') is accepted; node certificates are TLS server only, so
one node cannot call another. The servers proxy these to API clients as they proxy the
in-process node of `corral up` (``corral.link.node_http.RemoteNodeClient`` is the other end).

Streams (log follow, attach) are NDJSON: ``{"line": "..."}`` per line, ``{}`` as a keepalive
every second so the server notices a client that left. A pty is a websocket: binary frames
both ways, a text frame ``{"resize": [rows, cols]}`` to resize, and the exit code in the
close reason (``{"exitCode": N}``); a session that cannot start sends one text frame
``{"error": {...}}`` and closes.
"""

from __future__ import annotations

import asyncio
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

from corral.errors import CorralError
from corral.link.protocol import NodeClient

NODE_PREFIX = "/node/v1"
KEEPALIVE = 1.0
router = APIRouter(prefix=NODE_PREFIX)
_limiter: anyio.CapacityLimiter | None = None


def _threads() -> anyio.CapacityLimiter:
    global _limiter
    if _limiter is None:
        _limiter = anyio.CapacityLimiter(256)
    return _limiter


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
                    line = await anyio.to_thread.run_sync(lines.get, True, KEEPALIVE, limiter=_threads())
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


@router.websocket("/pty")
async def pty(websocket: WebSocket, uid: str, container: str, argv: str = Query(...), rows: int = 24,
              cols: int = 80) -> None:
    await websocket.accept()
    node = _node(websocket)
    try:
        session = await anyio.to_thread.run_sync(node.exec_pty, uid, container, json.loads(argv), rows, cols)
    except CorralError as exc:  # one text frame says why (output frames are binary), then the close
        await websocket.send_text(json.dumps({"error": {"code": exc.code, "message": exc.message,
                                                        "status": exc.status}}))
        await websocket.close(1011)
        return

    async def output() -> None:
        while True:
            data = await anyio.to_thread.run_sync(session.read, 65536, 0.5, limiter=_threads())
            if data is None:
                continue
            if not data:
                return
            await websocket.send_bytes(data)

    async def input_() -> None:
        while True:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                return
            if msg.get("text") is not None:
                rows_cols = json.loads(msg["text"]).get("resize")
                if rows_cols:
                    session.resize(int(rows_cols[0]), int(rows_cols[1]))
                continue
            try:
                await anyio.to_thread.run_sync(session.write, msg.get("bytes") or b"", limiter=_threads())
            except OSError:
                return

    out_task, in_task = asyncio.create_task(output()), asyncio.create_task(input_())
    try:
        await asyncio.wait({out_task, in_task}, return_when=asyncio.FIRST_COMPLETED)
        if out_task.done() and not out_task.cancelled() and out_task.exception() is None:
            code = await anyio.to_thread.run_sync(session.wait, 5.0)
            await websocket.close(1000, json.dumps({"exitCode": code}))
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        for task in (out_task, in_task):
            task.cancel()
        await asyncio.gather(out_task, in_task, return_exceptions=True)
        await anyio.to_thread.run_sync(session.close)


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
