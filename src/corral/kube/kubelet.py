"""The kubelet API of the virtual node (port 10250, TLS), as the API server and metrics-server call it.

Routes (kubelet's paths): ``/containerLogs/{ns}/{pod}/{container}`` (tailLines, timestamps, follow,
limitBytes, previous), ``/exec/...`` and ``/attach/...`` and ``/portForward/{ns}/{pod}`` (over websockets,
see ``streams``, or SPDY/3.1, see ``spdy_streams``), ``/stats/summary``, ``/metrics/resource``, ``/pods``,
``/healthz``.
Every request is authenticated (client certificate of the cluster CA, else a TokenReview) and
authorised with a SubjectAccessReview (``authz``). Everything reaches containers through Corral's API.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.datastructures import Headers, QueryParams
from uvicorn.protocols.http.h11_impl import H11Protocol

from corral.kube import logs, spdy_streams, streams
from corral.kube.authz import Authorizer, Forbidden, Unauthenticated, User, attributes, user_from_certificate
from corral.kube.corral_api import CorralApi, CorralRefused, CorralUnavailable
from corral.kube.mapping import group_name
from corral.kube.metrics import PodMetrics
from corral.kube.spdy import SpdyConnection

log = logging.getLogger(__name__)

# Users of verified client certificates, by the connection's remote address (uvicorn keeps TLS details out of
# the ASGI scope, so the protocol below records them when the connection is made).
PEERS: dict[tuple[str, int], User] = {}


SpdyHandler = Callable[[dict[str, Any], asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
SPDY = b"spdy/3.1"


class CertificateH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, plus: the client certificate's user, and ``Upgrade: SPDY/3.1`` handed
    to ``spdy`` with the connection (ASGI knows only websocket upgrades)."""

    def __init__(self, *args: Any, spdy: SpdyHandler | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spdy = spdy

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        user = user_from_certificate(transport.get_extra_info("peercert"))
        if self.client:
            addr = (self.client[0], self.client[1])
            if user is not None:
                PEERS[addr] = user
            else:  # never inherit the identity of an earlier connection from the same address and port
                PEERS.pop(addr, None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client:
            PEERS.pop((self.client[0], self.client[1]), None)
        super().connection_lost(exc)

    def _should_upgrade(self) -> bool:
        if self.spdy is not None and self._get_upgrade() == SPDY:
            return True
        return super()._should_upgrade()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        if self.spdy is None or self._get_upgrade() != SPDY:
            super().handle_websocket_upgrade(event)
            return
        # The connection leaves uvicorn's HTTP handling: from here on it is a byte stream of our own.
        self.connections.discard(self)
        reader = asyncio.StreamReader()
        protocol = asyncio.StreamReaderProtocol(reader)
        protocol.connection_made(self.transport)
        self.transport.set_protocol(protocol)
        writer = asyncio.StreamWriter(self.transport, protocol, reader, self.loop)
        early, _ = self.conn.trailing_data
        if early:
            reader.feed_data(early)
        client = self.client
        task = self.loop.create_task(self.spdy(self.scope, reader, writer))  # type: ignore[arg-type]
        _RUNNING.add(task)  # held until done (the loop keeps only weak references to tasks)
        task.add_done_callback(_RUNNING.discard)
        if client:  # connection_lost of this protocol will not run any more
            task.add_done_callback(lambda _: PEERS.pop((client[0], client[1]), None))


_RUNNING: set[asyncio.Task[None]] = set()
# /exec|attach/{ns}/{pod}[/{uid}]/{container}, /portForward/{ns}/{pod}[/{uid}]
_STREAM_ROUTE = re.compile(r"^/(exec|attach)/([^/]+)/([^/]+)/(?:[^/]+/)?([^/]+)$"
                           r"|^/(portForward)/([^/]+)/([^/]+)(?:/[^/]+)?$")


def _client(scope: dict[str, Any]) -> tuple[str, int] | None:
    c = scope.get("client")
    return (c[0], c[1]) if c else None


class KubeletApi:
    def __init__(self, corral: CorralApi, authorizer: Authorizer, node: str,
                 pods: Callable[[], list[Any]], metrics: PodMetrics) -> None:
        self.corral, self.authorizer, self.node = corral, authorizer, node
        self.pods = pods  # () -> the node's pods (lightkube models)
        self.metrics = metrics
        self.spdy_sessions: set[asyncio.Task[Any]] = set()

    async def check(self, scope: dict[str, Any], headers: Any) -> User:
        addr = _client(scope)
        user = PEERS.get(addr) if addr else None
        if user is None:
            auth = headers.get("authorization") or ""
            if not auth.lower().startswith("bearer "):
                raise Unauthenticated("no client certificate or bearer token")
            user = await self.authorizer.authenticate_token(auth[7:].strip())
        method = scope.get("method", "GET") if scope["type"] == "http" else "GET"
        attrs = attributes(method, scope["path"])
        if not await self.authorizer.authorize(user, attrs):
            raise Forbidden(f"User \"{user.name}\" cannot {attrs.verb} resource \"nodes/{attrs.subresource}\" "
                            f"on node \"{self.node}\"")
        return user

    async def container_logs(self, ns: str, pod: str, container: str, q: Any) -> Response:
        """kubelet's containerLogs: the current run (or ``previous``), tailLines, timestamps, limitBytes,
        sinceSeconds/sinceTime, follow."""
        gname = group_name(ns, pod)
        try:
            tail = int(q["tailLines"]) if q.get("tailLines") else None
            limit = int(q["limitBytes"]) if q.get("limitBytes") else None
            since = logs.since_time(q)
        except ValueError as exc:
            return PlainTextResponse(f"invalid query: {exc}", status_code=400)
        timestamps, previous = q.get("timestamps") in ("true", "1"), q.get("previous") in ("true", "1")
        try:
            window = logs.run_window(logs.container_view(await self.corral.get_group(gname), container), previous)
        except logs.NoPreviousRun:
            return PlainTextResponse(f'previous terminated container "{container}" in pod "{pod}" not found',
                                     status_code=400)
        except (CorralRefused, CorralUnavailable) as exc:
            return PlainTextResponse(str(exc), status_code=503)
        window = window.since(since)
        if q.get("follow") in ("true", "1") and not previous:
            chunks = self.corral.follow_logs(gname, container, tail, timestamps or not window.everything)
            if not window.everything:
                chunks = logs.select_stream(chunks, window, timestamps)
            return StreamingResponse(_limited(chunks, limit), media_type="text/plain")
        try:
            if window.everything:
                text = await self.corral.logs(gname, container, tail, timestamps)
            else:  # the whole log with its times, cut to the run (and tail) here
                text = logs.select(await self.corral.logs(gname, container, None, True), window, timestamps, tail)
        except CorralRefused as exc:
            return PlainTextResponse(exc.message, status_code=404 if exc.status == 404 else 400)
        except CorralUnavailable as exc:
            return PlainTextResponse(str(exc), status_code=503)
        data = text.encode()
        return Response(data[:limit] if limit else data, media_type="text/plain")

    def known(self, ns: str, pod: str) -> bool:
        return any(p.metadata and p.metadata.namespace == ns and p.metadata.name == pod for p in self.pods())

    async def serve_spdy(self, scope: dict[str, Any], reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        """One ``Upgrade: SPDY/3.1`` request: authorised and negotiated as kubelet does, then the session."""
        me = asyncio.current_task()
        assert me is not None
        self.spdy_sessions.add(me)
        try:
            await self._serve_spdy(scope, reader, writer)
        finally:
            self.spdy_sessions.discard(me)

    async def _serve_spdy(self, scope: dict[str, Any], reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        headers, path = Headers(scope=scope), scope["path"]
        try:
            await self.check(scope, headers)
        except Unauthenticated as exc:
            return await _refuse(writer, 401, f"Unauthorized: {exc}")
        except Forbidden as exc:
            return await _refuse(writer, 403, f"Forbidden ({exc})")
        m = _STREAM_ROUTE.match(path)
        if m is None:
            return await _refuse(writer, 404, f"404 page not found: {path}")
        kind, ns, pod, container = (m[1], m[2], m[3], m[4]) if m[1] else (m[5], m[6], m[7], "")
        if not self.known(ns, pod):
            return await _refuse(writer, 404, f"pod does not exist: {ns}/{pod}")
        offered = [p.strip() for v in headers.getlist("x-stream-protocol-version") for p in v.split(",") if p.strip()]
        supported = spdy_streams.PORT_FORWARD_PROTOCOLS if kind == "portForward" else spdy_streams.EXEC_PROTOCOLS
        protocol = streams.choose(offered, supported) if offered else ""
        if protocol is None:
            return await _refuse(writer, 403, f"unable to upgrade: unable to negotiate protocol: client supports "
                                 f"{offered}, server accepts {supported}",
                                 [("X-Accepted-Stream-Protocol-Versions", p) for p in supported])
        opts = streams.ExecOptions.from_query(QueryParams(scope.get("query_string", b"")))
        if kind != "portForward" and not (opts.stdin or opts.stdout or opts.stderr):
            return await _refuse(writer, 400, "you must specify at least 1 of stdin, stdout, stderr")
        answer = ["HTTP/1.1 101 Switching Protocols", "Connection: Upgrade", "Upgrade: SPDY/3.1"]
        if protocol:
            answer.append(f"X-Stream-Protocol-Version: {protocol}")
        writer.write(("\r\n".join(answer) + "\r\n\r\n").encode())
        check = spdy_streams.check_port_forward_stream if kind == "portForward" else None
        conn = SpdyConnection(reader, writer, check)
        frames = asyncio.create_task(conn.run())
        try:
            gname = group_name(ns, pod)
            if kind == "portForward":
                await spdy_streams.serve_port_forward(conn, self.corral, gname, f"{ns}/{pod}")
            else:
                await spdy_streams.serve_remote_command(conn, kind, protocol, opts, self.corral, gname, container)
        finally:
            await conn.close()
            frames.cancel()
            await asyncio.gather(frames, return_exceptions=True)

    def app(self) -> FastAPI:
        app = FastAPI(title="corral kubelet", docs_url=None, redoc_url=None, openapi_url=None)
        api = self

        @app.middleware("http")
        async def authenticate(request: Request, call_next):  # type: ignore[no-untyped-def]
            try:
                await api.check(request.scope, request.headers)
            except Unauthenticated as exc:
                return PlainTextResponse(f"Unauthorized: {exc}", status_code=401)
            except Forbidden as exc:
                return PlainTextResponse(f"Forbidden ({exc})", status_code=403)
            return await call_next(request)

        @app.get("/healthz")
        async def healthz() -> PlainTextResponse:
            return PlainTextResponse("ok")

        @app.get("/pods")
        async def pods() -> JSONResponse:
            return JSONResponse({"kind": "PodList", "apiVersion": "v1", "metadata": {},
                                 "items": [p.to_dict() for p in api.pods()]})

        @app.get("/containerLogs/{ns}/{pod}/{container}")
        async def container_logs(ns: str, pod: str, container: str, request: Request) -> Response:
            return await api.container_logs(ns, pod, container, request.query_params)

        @app.get("/stats/summary")
        async def summary() -> JSONResponse:
            return JSONResponse(await api.metrics.summary(api.pods()))

        @app.get("/metrics/resource")
        async def resource_metrics() -> PlainTextResponse:
            return PlainTextResponse(await api.metrics.prometheus(api.pods()),
                                     media_type="text/plain; version=0.0.4")

        async def ws_auth(websocket: WebSocket) -> bool:
            try:
                await api.check(websocket.scope, websocket.headers)
                return True
            except (Unauthenticated, Forbidden) as exc:
                await websocket.close(code=1008, reason=str(exc)[:120])
                return False

        for path in ("/exec/{ns}/{pod}/{container}", "/exec/{ns}/{pod}/{uid}/{container}"):
            @app.websocket(path)
            async def exec_(websocket: WebSocket, ns: str, pod: str, container: str) -> None:
                if await ws_auth(websocket):
                    await streams.exec_session(websocket, api.corral, group_name(ns, pod), container)

        for path in ("/attach/{ns}/{pod}/{container}", "/attach/{ns}/{pod}/{uid}/{container}"):
            @app.websocket(path)
            async def attach(websocket: WebSocket, ns: str, pod: str, container: str) -> None:
                if await ws_auth(websocket):
                    await streams.attach_session(websocket, api.corral, group_name(ns, pod), container)

        for path in ("/portForward/{ns}/{pod}", "/portForward/{ns}/{pod}/{uid}"):
            @app.websocket(path)
            async def port_forward(websocket: WebSocket, ns: str, pod: str) -> None:
                if not await ws_auth(websocket):
                    return
                if spdy_streams.TUNNELED_PORT_FORWARD in streams.offered(websocket):
                    await spdy_streams.tunneled_port_forward(websocket, api.corral, group_name(ns, pod), f"{ns}/{pod}")
                else:
                    await streams.port_forward_session(websocket, api.corral, group_name(ns, pod), f"{ns}/{pod}")

        @app.api_route("/{rest:path}", methods=["GET", "POST", "PUT"])
        async def other(rest: str, request: Request) -> PlainTextResponse:
            return PlainTextResponse(f"404 page not found: /{rest}", status_code=404)

        return app


async def _limited(chunks: AsyncIterator[bytes], limit: int | None) -> AsyncIterator[bytes]:
    sent = 0
    try:
        async for chunk in chunks:
            if limit is not None:
                chunk = chunk[: max(0, limit - sent)]
            sent += len(chunk)
            if chunk:
                yield chunk
            if limit is not None and sent >= limit:
                return
    except (CorralRefused, CorralUnavailable) as exc:
        yield f"\nerror: {exc}\n".encode()


async def _refuse(writer: asyncio.StreamWriter, code: int, message: str,
                  extra: list[tuple[str, str]] | None = None) -> None:
    """A plain HTTP answer to an upgrade request we do not take, then the connection is closed."""
    body = (message + "\n").encode()
    head = [f"HTTP/1.1 {code} {_REASONS.get(code, 'Error')}",
            "Content-Type: text/plain; charset=utf-8", f"Content-Length: {len(body)}", "Connection: close",
            *(f"{k}: {v}" for k, v in extra or [])]
    with contextlib.suppress(ConnectionError, OSError):
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        await writer.drain()
        writer.close()


_REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}


async def serve(api: KubeletApi, host: str, port: int, cert: str, key: str, client_ca: str | None) -> None:
    # CERT_OPTIONAL: a client certificate identifies the API server; without one, a bearer token is asked for.
    config = uvicorn.Config(api.app(), host=host, port=port, ssl_certfile=cert, ssl_keyfile=key,
                            ssl_ca_certs=client_ca, ssl_cert_reqs=ssl.CERT_OPTIONAL if client_ca else ssl.CERT_NONE,
                            http=functools.partial(CertificateH11, spdy=api.serve_spdy),  # type: ignore[arg-type]
                            ws="websockets-sansio", log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    try:
        await server.serve()
    finally:
        for task in list(api.spdy_sessions):
            task.cancel()


def now() -> datetime:
    return datetime.now(UTC)
