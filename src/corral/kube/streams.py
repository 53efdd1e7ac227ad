"""kubelet's streaming protocols over websockets, bridged to Corral's exec, attach and port-forward sessions.

Exec and attach speak the channel protocol (``v5.channel.k8s.io`` .. ``channel.k8s.io``): every binary
message starts with its channel byte, 0 stdin, 1 stdout, 2 stderr, 3 error (a metav1 Status as JSON at the
end, with the exit code), 4 resize (``{"Width","Height"}``), and in v5 255 close (stdin ended).
Port-forward (``v4.channel.k8s.io`` / ``portforward.k8s.io``) opens two channels per ``port`` query value,
data ``2i`` and error ``2i+1``, each starting with the port number (little-endian uint16).
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from typing import Any

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from corral.kube.corral_api import CorralApi, CorralRefused, CorralUnavailable

log = logging.getLogger(__name__)

EXEC_PROTOCOLS = ["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io",
                  "channel.k8s.io"]
PORT_FORWARD_PROTOCOLS = ["v4.channel.k8s.io", "portforward.k8s.io", "channel.k8s.io"]
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def _offered(websocket: WebSocket) -> list[str]:
    raw = websocket.headers.get("sec-websocket-protocol", "")
    return [p.strip() for p in raw.split(",") if p.strip()]


def choose(offered: list[str], supported: list[str]) -> str | None:
    return next((p for p in supported if p in offered), None)


def status(code: int | None, message: str | None = None) -> bytes:
    """The metav1 Status kubectl reads from the error channel (v4+)."""
    if code == 0 and message is None:
        return json.dumps({"metadata": {}, "status": "Success"}).encode()
    if code is None:
        return json.dumps({"metadata": {}, "status": "Failure", "message": message or "error",
                           "reason": "InternalError"}).encode()
    return json.dumps({"metadata": {}, "status": "Failure",
                       "message": message or f"command terminated with non-zero exit code: exit status {code}",
                       "reason": "NonZeroExitCode",
                       "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}).encode()


def _flag(websocket: WebSocket, name: str) -> bool:
    return websocket.query_params.get(name) in ("1", "true", "True")


async def _open_corral(corral: CorralApi, gname: str, what: str, body: dict[str, Any]) -> ClientConnection:
    uri, password = await corral.session(gname, what, body)
    ctx: ssl.SSLContext | None = corral.ssl if uri.startswith("wss://") else None
    if uri.startswith("wss://") and ctx is None:
        ctx = ssl.create_default_context()
    ws = await connect(uri, ssl=ctx, open_timeout=10, max_size=None, proxy=None)
    await ws.send(password)
    return ws


async def _send(websocket: WebSocket, channel: int, data: bytes) -> None:
    await websocket.send_bytes(bytes([channel]) + data)


async def exec_session(websocket: WebSocket, corral: CorralApi, gname: str, container: str) -> None:
    proto = choose(_offered(websocket), EXEC_PROTOCOLS)
    await websocket.accept(subprotocol=proto)
    argv = websocket.query_params.getlist("command")
    tty, stdin = _flag(websocket, "tty"), _flag(websocket, "stdin")
    v4 = proto in ("v5.channel.k8s.io", "v4.channel.k8s.io")
    try:
        if not argv:
            raise CorralRefused(400, "BadRequest", "you must specify at least one command for the container")
        if not tty and not stdin:
            # Nothing to type: run to completion, with separate stdout and stderr and the real exit code.
            res = await corral.exec_sync(gname, container, argv, None)
            if res["stdout"]:
                await _send(websocket, STDOUT, res["stdout"].encode())
            if res["stderr"]:
                await _send(websocket, STDERR, res["stderr"].encode())
            await _send(websocket, ERROR, status(res["exitCode"]) if v4 else b"")
            return
        rows, cols = 24, 80
        ws = await _open_corral(corral, gname, f"{container}/exec",
                                {"command": argv, "terminalSize": {"rows": rows, "cols": cols}})
        await _bridge_exec(websocket, ws, v4)
    except (CorralRefused, CorralUnavailable) as exc:
        msg = exc.message if isinstance(exc, CorralRefused) else str(exc)
        try:
            await _send(websocket, ERROR, status(None, msg) if v4 else msg.encode())
        except (WebSocketDisconnect, RuntimeError):
            pass
    finally:
        try:
            await websocket.close()
        except RuntimeError:
            pass


async def _bridge_exec(websocket: WebSocket, ws: ClientConnection, v4: bool) -> None:
    async def from_corral() -> int | None:
        try:
            async for msg in ws:
                data = msg.encode() if isinstance(msg, str) else msg
                if data.startswith(b"error: "):
                    raise CorralRefused(409, "ExecFailed", data[7:].decode(errors="replace").strip())
                await _send(websocket, STDOUT, data)
        except ConnectionClosed:
            pass
        reason = ws.close_reason or ""
        try:
            return json.loads(reason).get("exitCode")
        except ValueError:
            return None

    async def from_client() -> None:
        while True:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                return
            data = msg.get("bytes") or (msg.get("text") or "").encode()
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == STDIN and payload:
                await ws.send(payload)
            elif channel == RESIZE and payload:
                try:
                    size = json.loads(payload)
                    await ws.send(f"\x1b[8;{int(size['Height'])};{int(size['Width'])}t")
                except (ValueError, KeyError, TypeError):
                    continue
            elif channel == CLOSE:
                await ws.send(b"\x04")  # stdin ended: end-of-file on the terminal

    out, inp = asyncio.create_task(from_corral()), asyncio.create_task(from_client())
    try:
        await asyncio.wait({out, inp}, return_when=asyncio.FIRST_COMPLETED)
        if out.done():
            code = out.result()
            await _send(websocket, ERROR, status(code if code is not None else 0) if v4 else b"")
    finally:
        for t in (out, inp):
            t.cancel()
        await asyncio.gather(out, inp, return_exceptions=True)
        await ws.close()


async def attach_session(websocket: WebSocket, corral: CorralApi, gname: str, container: str) -> None:
    proto = choose(_offered(websocket), EXEC_PROTOCOLS)
    await websocket.accept(subprotocol=proto)
    v4 = proto in ("v5.channel.k8s.io", "v4.channel.k8s.io")
    try:
        ws = await _open_corral(corral, gname, f"{container}/attach", {})
        try:
            async for msg in ws:
                data = msg.encode() if isinstance(msg, str) else msg
                await _send(websocket, STDOUT, data.replace(b"\r\n", b"\n"))
        except ConnectionClosed:
            pass
        await _send(websocket, ERROR, status(0) if v4 else b"")
    except (CorralRefused, CorralUnavailable) as exc:
        msg = exc.message if isinstance(exc, CorralRefused) else str(exc)
        await _send(websocket, ERROR, status(None, msg) if v4 else msg.encode())
    finally:
        try:
            await websocket.close()
        except RuntimeError:
            pass


async def port_forward_session(websocket: WebSocket, corral: CorralApi, gname: str) -> None:
    proto = choose(_offered(websocket), PORT_FORWARD_PROTOCOLS)
    ports = [int(p) for v in websocket.query_params.getlist("port") for p in v.split(",") if p.strip().isdigit()]
    await websocket.accept(subprotocol=proto)
    if not ports:
        await websocket.close(code=1008, reason="query parameter 'port' is required")
        return
    lock = asyncio.Lock()

    async def send(channel: int, data: bytes) -> None:
        async with lock:
            await _send(websocket, channel, data)

    for i, port in enumerate(ports):
        for ch in (2 * i, 2 * i + 1):
            await send(ch, port.to_bytes(2, "little"))
    conns: dict[int, ClientConnection] = {}
    pumps: list[asyncio.Task[None]] = []

    async def pump(i: int, ws: ClientConnection) -> None:
        try:
            async for msg in ws:
                if isinstance(msg, str):
                    if msg.startswith("error: "):
                        await send(2 * i + 1, msg[7:].strip().encode())
                    continue
                await send(2 * i, msg)
        except ConnectionClosed:
            pass

    for i, port in enumerate(ports):
        try:
            ws = await _open_corral(corral, gname, "portForward", {"port": port})
        except (CorralRefused, CorralUnavailable) as exc:
            await send(2 * i + 1, (exc.message if isinstance(exc, CorralRefused) else str(exc)).encode())
            continue
        conns[i] = ws
        pumps.append(asyncio.create_task(pump(i, ws)))
    try:
        while True:
            msg = await websocket.receive()
            if msg["type"] == "websocket.disconnect":
                return
            data = msg.get("bytes") or b""
            if len(data) < 1:
                continue
            channel, payload = data[0], data[1:]
            i, is_error = divmod(channel, 2)
            if not is_error and i in conns and payload:
                await conns[i].send(payload)
    finally:
        for t in pumps:
            t.cancel()
        for ws in conns.values():
            await ws.close()
        await asyncio.gather(*pumps, return_exceptions=True)
