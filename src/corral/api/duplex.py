"""The shape of a websocket session that pipes bytes both ways (exec, port-forward), shared by the API's
sessions and a node's own API (``corral.link.node_api``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import anyio
from fastapi import WebSocket
from starlette.websockets import WebSocketState

from corral.serving import stream_threads


async def close_socket(websocket: WebSocket, code: int, reason: str = "") -> None:
    if websocket.client_state == WebSocketState.CONNECTED:
        try:
            await websocket.close(code, reason)
        except (RuntimeError, OSError):
            pass


async def client_frames(websocket: WebSocket) -> AsyncIterator[bytes]:
    """What the client sends, as bytes (text or binary frames), until it goes away."""
    while True:
        msg = await websocket.receive()
        if msg["type"] == "websocket.disconnect":
            return
        yield msg.get("bytes") or (msg.get("text") or "").encode()


async def pump_out(read: Callable[[], bytes | None], send: Callable[[bytes], Awaitable[None]]) -> None:
    """What a blocking ``read`` returns (None: nothing within its wait, b"": the end), read on a stream
    thread, to ``send``, until the end."""
    while True:
        data = await anyio.to_thread.run_sync(read, limiter=stream_threads())
        if data is None:
            continue
        if not data:
            return
        await send(data)


async def duplex(output: Coroutine[Any, Any, None], input_: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    """Run a session's two directions until either ends; both are cancelled and awaited before it returns the
    output's task."""
    out_task, in_task = asyncio.create_task(output), asyncio.create_task(input_)
    try:
        await asyncio.wait({out_task, in_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (out_task, in_task):
            task.cancel()
        await asyncio.gather(out_task, in_task, return_exceptions=True)
    return out_task


def ended_by_itself(task: asyncio.Task[None]) -> bool:
    """The output side ended by itself (the process or connection finished), not by a failure or the client."""
    return task.done() and not task.cancelled() and task.exception() is None
