"""Getting at running containers: ACI exec/attach over websockets, port-forward, streaming log follow,
one-container restart.

ACI's exec and attach answer a POST with ``{"webSocketUri", "password"}``; the
client opens the websocket, sends the password as its first frame, then raw
input. The password is the only credential of the websocket (the bearer token
checked on every other route is not sent by ACI clients), so it is random,
bound to one session, single-use and short-lived.
"""

from __future__ import annotations

import asyncio
import codecs
import hmac
import json
import re
import secrets
import shlex
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field, field_validator
from starlette.websockets import WebSocketDisconnect, WebSocketState

from corral.api.deps import api_version, service
from corral.api.duplex import client_frames as _client_frames
from corral.api.duplex import close_socket as _close
from corral.api.duplex import duplex as _duplex
from corral.api.duplex import ended_by_itself as _ended
from corral.api.duplex import pump_out
from corral.api.groups import P, json_body
from corral.control.groups import GroupService, GroupView
from corral.control.nodes import NodeDirectory
from corral.errors import Conflict, CorralError, NotFound
from corral.link.protocol import NodeClient, PortStream, TerminalSession
from corral.model.records import GroupRecord
from corral.serving import stream_threads
from corral.store.base import Store

router = APIRouter(dependencies=[Depends(api_version)])
# Websockets carry no api-version nor bearer token: the one-time password authenticates them.
sessions = APIRouter()

SESSION_PREFIX = "/sessions/"
PASSWORD_TTL = 60.0  # seconds a password stays redeemable
PASSWORD_WAIT = 30.0  # seconds a connected client has to send the password
READ_WAKE = 0.5  # seconds a pty read waits before the loop looks around again
END_CHECK = 1.0  # seconds between "has the group ended?" checks of a log follow
# xterm's "resize window" control sequence, CSI 8 ; rows ; cols t, sent alone in a frame: a resize request.
RESIZE = re.compile(rb"\x1b\[8;(\d{1,4});(\d{1,4})t")

# one-time session tickets ------------------------------------------------------------------------------------------
@dataclass
class Ticket:
    kind: Literal["exec", "attach", "portforward"]
    node: str
    uid: str
    container: str
    argv: list[str] = field(default_factory=list)
    rows: int = 24
    cols: int = 80
    port: int = 0
    password: str = ""
    expires: float = 0.0


class TicketBook:
    """Pending websocket sessions by id; a ticket is removed when redeemed or expired."""

    def __init__(self, ttl: float = PASSWORD_TTL) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._tickets: dict[str, Ticket] = {}

    def issue(self, ticket: Ticket) -> tuple[str, str]:
        sid, ticket.password = secrets.token_urlsafe(16), secrets.token_urlsafe(32)
        now = time.monotonic()
        ticket.expires = now + self.ttl
        with self._lock:
            for k in [k for k, t in self._tickets.items() if t.expires < now]:
                del self._tickets[k]
            self._tickets[sid] = ticket
        return sid, ticket.password

    def redeem(self, sid: str, password: str) -> Ticket | None:
        """The ticket if ``password`` is its password and it has not expired; it cannot be redeemed again."""
        with self._lock:
            ticket = self._tickets.get(sid)
            if ticket is None or not hmac.compare_digest(ticket.password.encode(), password.encode()):
                return None  # a wrong guess does not burn the ticket of the real client
            del self._tickets[sid]
        return ticket if ticket.expires >= time.monotonic() else None


def tickets(app: Any) -> TicketBook:
    book = getattr(app.state, "access_tickets", None)
    if book is None:
        book = app.state.access_tickets = TicketBook()
    return book


# request bodies ----------------------------------------------------------------------------------------------------
class TerminalSize(BaseModel):
    rows: int = Field(default=24, ge=1, le=1000)
    cols: int = Field(default=80, ge=1, le=1000)


class ExecRequest(BaseModel):
    """ACI's ContainerExecRequest; ``command`` is a command line (ACI) or an argv list (Corral)."""

    command: str | list[str]
    terminalSize: TerminalSize | None = None

    @field_validator("command")
    @classmethod
    def _not_empty(cls, v: str | list[str]) -> str | list[str]:
        argv = shlex.split(v) if isinstance(v, str) else v
        if not argv or not argv[0]:
            raise ValueError("command must name a program to run, e.g. \"/bin/sh\"")
        return v

    def argv(self) -> list[str]:
        return shlex.split(self.command) if isinstance(self.command, str) else list(self.command)


# helpers -----------------------------------------------------------------------------------------------------------
def _view_with_container(svc: GroupService, sub: str, rg: str, name: str, container: str) -> GroupView:
    view = svc.get(sub, rg, name)
    if container not in {c.name for c in view.record.spec.properties.containers}:
        raise NotFound(f"container '{container}' is not part of container group '{name}'")
    return view


def _require_running(view: GroupView, container: str) -> str:
    """The node the container runs on; 409 when it does not run now."""
    st = view.status.containers.get(container) if view.status else None
    node = view.record.meta.node
    if node is None or st is None or st.currentState.state != "Running":
        state = st.currentState.state if st else "Waiting"
        raise Conflict(f"container '{container}' is not running (it is {state}); wait for it or start the group")
    return node


def socket_uri(request: Request, sid: str) -> str:
    """Same host and port as the request; wss when the API is served over HTTPS."""
    scheme = "wss" if request.url.scheme == "https" else "ws"
    host = request.headers.get("host") or request.url.netloc
    return f"{scheme}://{host}{SESSION_PREFIX}{sid}"


def _session_answer(request: Request, ticket: Ticket) -> dict[str, str]:
    sid, password = tickets(request.app).issue(ticket)
    return {"webSocketUri": socket_uri(request, sid), "password": password}


# ARM routes --------------------------------------------------------------------------------------------------------
@router.post(P + "/containers/{container}/exec")
def exec_(
    sub: str, rg: str, name: str, container: str, request: Request, body: dict[str, Any] = Depends(json_body),
    svc: GroupService = Depends(service),
) -> Any:
    """ACI exec: a one-time websocket session running ``command`` on a pty in the container."""
    req = ExecRequest.model_validate(body)
    view = _view_with_container(svc, sub, rg, name, container)
    node = _require_running(view, container)
    size = req.terminalSize or TerminalSize()
    ticket = Ticket("exec", node, view.record.meta.uid, container, req.argv(), size.rows, size.cols)
    return _session_answer(request, ticket)


@router.post(P + "/containers/{container}/attach")
def attach(sub: str, rg: str, name: str, container: str, request: Request, svc: GroupService = Depends(service)) -> Any:
    """ACI attach: a one-time websocket session streaming the container's output."""
    view = _view_with_container(svc, sub, rg, name, container)
    node = _require_running(view, container)
    return _session_answer(request, Ticket("attach", node, view.record.meta.uid, container))


class PortForwardRequest(BaseModel):
    port: int = Field(ge=1, le=65535)


@router.post(P + "/portForward")
def port_forward(
    sub: str, rg: str, name: str, request: Request, body: dict[str, Any] = Depends(json_body),
    svc: GroupService = Depends(service),
) -> Any:
    """Corral extension: a one-time websocket session carrying one TCP connection to ``port`` of the group."""
    req = PortForwardRequest.model_validate(body)
    view = svc.get(sub, rg, name)
    node = view.record.meta.node
    state = view.status.state if view.status else "Pending"
    if node is None or state != "Running" or view.record.meta.deleting:
        raise Conflict(f"container group '{name}' is not running (it is {state}); wait for it or start it")
    return _session_answer(request, Ticket("portforward", node, view.record.meta.uid, "", port=req.port))


@router.post(P + "/containers/{container}/restart")
def restart_container(sub: str, rg: str, name: str, container: str, svc: GroupService = Depends(service)) -> Response:
    """Corral extension: restart only this container of the group."""
    svc.restart_container(sub, rg, name, container)
    return Response(status_code=204)


# log follow --------------------------------------------------------------------------------------------------------
class _GroupEnded:
    """True once the group is gone (deleted or replaced) or has finished: a follow then ends.

    Looked up at most every END_CHECK seconds; called from the follow's thread.
    """

    def __init__(self, store: Store, key: str, uid: str) -> None:
        self.store, self.key, self.uid = store, key, uid
        self._next = time.monotonic() + END_CHECK
        self._ended = False

    def __call__(self) -> bool:
        if self._ended or time.monotonic() < self._next:
            return self._ended
        self._next = time.monotonic() + END_CHECK
        rec = self.store.get(self.key)
        if rec is None or rec.value.get("meta", {}).get("uid") != self.uid:
            self._ended = True
            return True
        record = GroupRecord.model_validate(rec.value)
        st = self.store.get(f"/status/{self.uid}")
        state = (st.value.get("state") if st else None) or "Pending"
        self._ended = record.meta.deleting or state in ("Succeeded", "Failed", "Stopped")
        return self._ended


async def _lines(make: Callable[[Callable[[], bool]], Iterator[str]], ended: Callable[[], bool]) -> AsyncIterator[str]:
    """Drive a blocking line iterator in a thread; closing this generator (client gone) stops it."""
    stopped = threading.Event()
    it = make(lambda: stopped.is_set() or ended())
    try:
        while True:
            # Abandoning is safe: once ``stopped`` is set the iterator ends by itself within its wake interval.
            line = await anyio.to_thread.run_sync(next, it, None, abandon_on_cancel=True, limiter=stream_threads())
            if line is None:
                return
            yield line
    finally:
        stopped.set()


def follow_response(
    svc: GroupService, view: GroupView, node: NodeClient, container: str, tail: int | None, timestamps: bool
) -> StreamingResponse:
    """Corral extension: ``logs?follow=true`` streams the log as chunked text, existing lines then new ones."""
    ended = _GroupEnded(svc.store, view.key, view.record.meta.uid)
    uid = view.record.meta.uid

    def make(stop: Callable[[], bool]) -> Iterator[str]:
        return node.follow_logs(uid, container, timestamps, stop, tail)

    return StreamingResponse(
        _lines(make, ended), media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


# websocket sessions ------------------------------------------------------------------------------------------------
@sessions.websocket(SESSION_PREFIX + "{sid}")
async def session_socket(websocket: WebSocket, sid: str) -> None:
    await websocket.accept()
    try:
        first = await asyncio.wait_for(websocket.receive(), PASSWORD_WAIT)
    except TimeoutError:
        await websocket.close(1008, "no password received")
        return
    if first["type"] == "websocket.disconnect":
        return
    password = first.get("text") or (first.get("bytes") or b"").decode(errors="replace")
    ticket = tickets(websocket.app).redeem(sid, password.strip())
    if ticket is None:
        await websocket.close(1008, "invalid or expired password: ask for a new session")
        return
    directory: NodeDirectory = websocket.app.state.plane.nodes
    try:
        node = directory.get(ticket.node)
        if ticket.kind == "exec":
            await _exec_session(websocket, node, ticket)
        elif ticket.kind == "portforward":
            await _port_forward_session(websocket, node, ticket)
        else:
            await _attach_session(websocket, node, ticket)
    except CorralError as exc:
        await _fail(websocket, exc.message)
    except WebSocketDisconnect:
        pass


async def _fail(websocket: WebSocket, message: str) -> None:
    if websocket.client_state == WebSocketState.CONNECTED:
        try:
            await websocket.send_text(f"error: {message}\r\n")
            await websocket.close(1011, message[:120])
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass


async def _exec_session(websocket: WebSocket, node: NodeClient, ticket: Ticket) -> None:
    session: TerminalSession = await anyio.to_thread.run_sync(
        node.exec_pty, ticket.uid, ticket.container, ticket.argv, ticket.rows, ticket.cols
    )
    decoder = codecs.getincrementaldecoder("utf-8")("replace")

    async def send(data: bytes) -> None:
        # Text frames: ACI's own clients print what they receive as text. The decoder keeps split characters whole.
        text = decoder.decode(data)
        if text:
            await websocket.send_text(text)

    async def input_() -> None:
        async for data in _client_frames(websocket):
            if m := RESIZE.fullmatch(data):
                session.resize(int(m[1]), int(m[2]))
                continue
            try:
                await anyio.to_thread.run_sync(session.write, data, limiter=stream_threads())
            except OSError:
                return  # the process is gone: the output side sees the end

    try:
        # Both directions are awaited before the pty is closed (the reader thread's fd number could be reused).
        out_task = await _duplex(pump_out(lambda: session.read(65536, READ_WAKE), send), input_())
        if _ended(out_task):
            code = await anyio.to_thread.run_sync(session.wait, 5.0)
            # The exit code travels in the close reason, invisible to clients that only print frames.
            await _close(websocket, 1000, json.dumps({"exitCode": code}))
    finally:
        await anyio.to_thread.run_sync(session.close)
    exc = out_task.exception() if out_task.done() and not out_task.cancelled() else None
    if exc is not None and not isinstance(exc, WebSocketDisconnect | OSError | RuntimeError):
        raise exc


async def _attach_session(websocket: WebSocket, node: NodeClient, ticket: Ticket) -> None:
    def make(stop: Callable[[], bool]) -> Iterator[str]:
        return node.attach(ticket.uid, ticket.container, stop, 0)

    # Fails here, before streaming, when the container is not running.
    stopped = threading.Event()
    it = await anyio.to_thread.run_sync(make, stopped.is_set)

    async def output() -> None:
        while True:
            line = await anyio.to_thread.run_sync(next, it, None, abandon_on_cancel=True, limiter=stream_threads())
            if line is None:
                return
            await websocket.send_text(line.replace("\n", "\r\n"))

    async def input_() -> None:
        # Output only (the container has no stdin pipe): read frames just to notice the client leaving.
        async for _ in _client_frames(websocket):
            pass

    try:
        if _ended(await _duplex(output(), input_())):
            await _close(websocket, 1000, json.dumps({"exited": True}))
    finally:
        stopped.set()


async def _port_forward_session(websocket: WebSocket, node: NodeClient, ticket: Ticket) -> None:
    """Bytes both ways between the socket's binary frames and a TCP connection the node opened."""
    stream: PortStream = await anyio.to_thread.run_sync(node.port_forward, ticket.uid, ticket.port)

    async def input_() -> None:
        async for data in _client_frames(websocket):
            try:
                await anyio.to_thread.run_sync(stream.write, data, limiter=stream_threads())
            except OSError:
                return

    try:
        if _ended(await _duplex(pump_out(lambda: stream.read(65536, READ_WAKE), websocket.send_bytes), input_())):
            await _close(websocket, 1000, json.dumps({"closed": True}))
    finally:
        await anyio.to_thread.run_sync(stream.close)
