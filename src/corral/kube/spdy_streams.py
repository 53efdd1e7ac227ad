"""kubelet's exec, attach and port-forward over SPDY/3.1 (what API servers and kubectl <= 1.29 speak).

Exec and attach (``X-Stream-Protocol-Version`` ``v5``/``v4``/``v3``/``v2.channel.k8s.io`` or
``channel.k8s.io``, v5 behaving as v4 as in kubelet): the client opens one stream per channel, named by
its ``streamType`` header (``error``, ``stdin``, ``stdout``, ``stderr``, ``resize``); the server waits for
those the query asks for (resize with a tty, from v3), runs the command, writes stdout and stderr on their
streams and, at the end, the Status (v4+, with the exit code) or a failure's text on the error stream.
Resize is a stream of JSON ``{"Width","Height"}`` objects.

Port-forward (``portforward.k8s.io``): every forwarded connection is a pair of streams with the same
``port`` and ``requestID`` headers, ``streamType`` ``error`` and ``data``; a data stream carries the bytes
of one TCP connection to the pod's port, its error stream why it failed. Streams without a valid
``port`` or ``streamType`` are refused (RST_STREAM), as kubelet does. kubectl 1.31+ may also send this
port-forward protocol inside a websocket (``SPDY/3.1+portforward.k8s.io``, the bytes in binary messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect

from corral.kube import streams
from corral.kube.corral_api import CorralApi
from corral.kube.spdy import Headers, SpdyConnection, SpdyStream
from corral.kube.streams import CLOSE, ERROR, RESIZE, STDERR, STDIN, STDOUT, ExecOptions

log = logging.getLogger(__name__)

EXEC_PROTOCOLS = streams.EXEC_PROTOCOLS
RESIZE_PROTOCOLS = {"v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io"}
PORT_FORWARD_PROTOCOLS = ["portforward.k8s.io"]
STREAM_WAIT = 30.0  # kubelet's stream creation timeout
_OUT = {STDOUT: "stdout", STDERR: "stderr", ERROR: "error"}


class SpdyPeer:
    """An exec or attach session's streams as a ``streams.Peer``."""

    def __init__(self, conn: SpdyConnection, named: dict[str, SpdyStream]) -> None:
        self.conn, self.named = conn, named

    async def send(self, channel: int, data: bytes) -> None:
        stream = self.named.get(_OUT.get(channel, ""))
        if stream is not None:  # a channel the client did not ask for is dropped, as kubelet drops it
            await stream.write(data)

    async def receive(self) -> AsyncIterator[tuple[int, bytes]]:
        events: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue()

        async def stdin(stream: SpdyStream) -> None:
            async for data in stream:
                events.put_nowait((STDIN, data))
            if not stream.gone.is_set():
                events.put_nowait((CLOSE, b""))

        async def resize(stream: SpdyStream) -> None:
            decoder, buf = json.JSONDecoder(), ""
            async for data in stream:
                buf += data.decode(errors="replace")
                while buf.strip():
                    try:
                        obj, end = decoder.raw_decode(buf.lstrip())
                    except ValueError:
                        break  # the rest of this object is still to come
                    buf = buf.lstrip()[end:]
                    events.put_nowait((RESIZE, json.dumps(obj).encode()))

        async def ended() -> None:
            await self.conn.ended.wait()
            events.put_nowait(None)

        readers = [asyncio.create_task(f(s)) for name, f in (("stdin", stdin), ("resize", resize))
                   if (s := self.named.get(name)) is not None]
        readers.append(asyncio.create_task(ended()))
        try:
            while (event := await events.get()) is not None:
                yield event
        finally:
            for t in readers:
                t.cancel()
            await asyncio.gather(*readers, return_exceptions=True)

    async def finish(self) -> None:
        for name in ("stdout", "stderr", "error"):
            if (stream := self.named.get(name)) is not None:
                await stream.close()


async def _collect(conn: SpdyConnection, wanted: set[str]) -> dict[str, SpdyStream] | None:
    """The streams the query asked for, as the client opens them; None if it did not in time or left."""
    named: dict[str, SpdyStream] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STREAM_WAIT
    while wanted - named.keys():
        try:
            stream = await asyncio.wait_for(conn.accept(), max(0.0, deadline - loop.time()))
        except TimeoutError:
            log.info("SPDY exec: timed out waiting for the client to create streams %s", sorted(wanted - named.keys()))
            return None
        if stream is None:
            return None
        kind = stream.header("streamtype")
        if kind in named or kind not in wanted:
            stream.discard()
            continue
        if kind != "stdin" and kind != "resize":
            stream.discard()  # the client sends nothing on the output streams
        named[kind] = stream
    return named


async def serve_remote_command(conn: SpdyConnection, kind: str, protocol: str, opts: ExecOptions,
                               corral: CorralApi, gname: str, container: str) -> None:
    """exec or attach on one upgraded connection, until the command ends or the client leaves."""
    wanted = {"error"} | {name for name, on in (("stdin", opts.stdin), ("stdout", opts.stdout),
                                                ("stderr", opts.stderr)) if on}
    if opts.tty and protocol in RESIZE_PROTOCOLS:
        wanted.add("resize")
    named = await _collect(conn, wanted)
    if named is None:
        return
    peer = SpdyPeer(conn, named)
    json_status = protocol in streams.STATUS_PROTOCOLS
    try:
        if kind == "exec":
            await streams.run_exec(peer, corral, gname, container, opts, json_status)
        else:
            await streams.run_attach(peer, corral, gname, container, json_status)
    finally:
        with contextlib.suppress(ConnectionError):
            await peer.finish()


def check_port_forward_stream(headers: Headers) -> str | None:
    """Why kubelet would refuse this port-forward stream, or None."""
    port = (headers.get("port") or [""])[0]
    if not port:
        return '"port" header is required'
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"unable to parse {port!r} as a port"
    kind = (headers.get("streamtype") or [""])[0]
    if kind not in ("error", "data"):
        return f'invalid stream type "{kind}"' if kind else '"streamType" header is required'
    return None


def _request_id(stream: SpdyStream) -> str:
    rid = stream.header("requestid")
    if rid:
        return rid
    # Clients older than the requestID header open the pair back to back: error N, then data N+2.
    return str(stream.id if stream.header("streamtype") == "error" else stream.id - 2)


async def serve_port_forward(conn: SpdyConnection, corral: CorralApi, gname: str, pod: str) -> None:
    """Every stream pair the client opens on this connection forwards one TCP connection to the pod."""
    pairs: dict[str, dict[str, SpdyStream]] = {}
    tasks: set[asyncio.Task[None]] = set()

    async def forward(data: SpdyStream, error: SpdyStream) -> None:
        port = int(data.header("port"))
        try:
            message = await streams.forward(corral, gname, port, aiter(data), data.write, data.gone)
            if message is not None:
                await error.write(streams.forward_error(port, pod, message))
        except ConnectionError:
            pass
        finally:
            data.discard()  # whatever still comes for the ended connection must not hold up the others
            await error.close()
            await data.close()

    async def expire(rid: str) -> None:
        await asyncio.sleep(STREAM_WAIT)
        pair = pairs.pop(rid, None)
        if pair is not None and (error := pair.get("error")) is not None:
            with contextlib.suppress(ConnectionError):
                await error.write(f"timed out waiting for the data stream of request {rid}".encode())
                await error.close()

    def spawn(coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    try:
        while (stream := await conn.accept()) is not None:
            rid, kind = _request_id(stream), stream.header("streamtype")
            if kind == "error":
                stream.discard()  # the client writes nothing on it
            pair = pairs.get(rid)
            if pair is None:
                pair = pairs[rid] = {}
                spawn(expire(rid))
            if kind in pair:
                with contextlib.suppress(ConnectionError):
                    await stream.reset()
                continue
            pair[kind] = stream
            if "data" in pair and "error" in pair:
                del pairs[rid]
                spawn(forward(pair["data"], pair["error"]))
    finally:
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# SPDY tunnelled in a websocket ---------------------------------------------------------------------------------
TUNNELED_PORT_FORWARD = "SPDY/3.1+portforward.k8s.io"  # kubectl 1.31+: SPDY frames in binary messages


class _WebSocketWriter:
    """The writing half SpdyConnection needs, on a websocket: each drained write is one binary message."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket, self._pending, self._closing = websocket, bytearray(), False

    def write(self, data: bytes) -> None:
        self._pending += data

    async def drain(self) -> None:
        if self._pending:
            data, self._pending = bytes(self._pending), bytearray()
            try:
                await self.websocket.send_bytes(data)
            except (WebSocketDisconnect, RuntimeError) as exc:
                raise ConnectionError("the client closed the websocket") from exc

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    async def wait_closed(self) -> None:
        with contextlib.suppress(RuntimeError):
            await self.websocket.close()


async def tunneled_port_forward(websocket: WebSocket, corral: CorralApi, gname: str, pod: str) -> None:
    """Port-forward as kubectl 1.31+ sends it to a websocket endpoint: the SPDY protocol above, its bytes
    carried in binary websocket messages."""
    await websocket.accept(subprotocol=TUNNELED_PORT_FORWARD)
    reader = asyncio.StreamReader()

    async def feed() -> None:
        try:
            while (msg := await websocket.receive())["type"] != "websocket.disconnect":
                if data := msg.get("bytes") or (msg.get("text") or "").encode():
                    reader.feed_data(data)
        finally:
            reader.feed_eof()

    conn = SpdyConnection(reader, _WebSocketWriter(websocket), check_port_forward_stream)  # type: ignore[arg-type]
    tasks = [asyncio.create_task(feed()), asyncio.create_task(conn.run())]
    try:
        await serve_port_forward(conn, corral, gname, pod)
    finally:
        await conn.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
