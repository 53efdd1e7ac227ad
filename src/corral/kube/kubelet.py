"""The kubelet API of the virtual node (port 10250, TLS), as the API server and metrics-server call it.

Routes (kubelet's paths): ``/containerLogs/{ns}/{pod}/{container}`` (tailLines, timestamps, follow,
limitBytes), ``/exec/...`` and ``/attach/...`` and ``/portForward/{ns}/{pod}`` (websocket channel
protocols, see ``streams``), ``/stats/summary``, ``/metrics/resource``, ``/pods``, ``/healthz``.
Every request is authenticated (client certificate of the cluster CA, else a TokenReview) and
authorised with a SubjectAccessReview (``authz``). Everything reaches containers through Corral's API.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import uvicorn
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from uvicorn.protocols.http.h11_impl import H11Protocol

from corral.kube import streams
from corral.kube.authz import Authorizer, Forbidden, Unauthenticated, User, attributes, user_from_certificate
from corral.kube.corral_api import CorralApi, CorralRefused, CorralUnavailable
from corral.kube.mapping import group_name
from corral.kube.metrics import PodMetrics

log = logging.getLogger(__name__)

# Users of verified client certificates, by the connection's remote address (uvicorn keeps TLS details out of
# the ASGI scope, so the protocol below records them when the connection is made).
PEERS: dict[tuple[str, int], User] = {}


class CertificateH11(H11Protocol):
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


def _client(scope: dict[str, Any]) -> tuple[str, int] | None:
    c = scope.get("client")
    return (c[0], c[1]) if c else None


class KubeletApi:
    def __init__(self, corral: CorralApi, authorizer: Authorizer, node: str,
                 pods: Callable[[], list[Any]], metrics: PodMetrics) -> None:
        self.corral, self.authorizer, self.node = corral, authorizer, node
        self.pods = pods  # () -> the node's pods (lightkube models)
        self.metrics = metrics

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
        async def logs(ns: str, pod: str, container: str, request: Request) -> Response:
            q = request.query_params
            tail = int(q["tailLines"]) if q.get("tailLines") else None
            timestamps = q.get("timestamps") in ("true", "1")
            limit = int(q["limitBytes"]) if q.get("limitBytes") else None
            gname = group_name(ns, pod)
            if q.get("previous") in ("true", "1"):
                return PlainTextResponse("previous logs are not kept on Corral (the log of the current and earlier "
                                         "runs is one stream)", status_code=400)
            if q.get("follow") in ("true", "1"):
                return StreamingResponse(_limited(api.corral.follow_logs(gname, container, tail, timestamps), limit),
                                         media_type="text/plain")
            try:
                text = await api.corral.logs(gname, container, tail, timestamps)
            except CorralRefused as exc:
                return PlainTextResponse(exc.message, status_code=404 if exc.status == 404 else 400)
            data = text.encode()
            return Response(data[:limit] if limit else data, media_type="text/plain")

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
                if await ws_auth(websocket):
                    await streams.port_forward_session(websocket, api.corral, group_name(ns, pod))

        @app.api_route("/{rest:path}", methods=["GET", "POST", "PUT"])
        async def other(rest: str, request: Request) -> PlainTextResponse:
            upgrade = request.headers.get("upgrade", "")
            if upgrade.lower().startswith("spdy"):
                return PlainTextResponse("SPDY streams are not supported by the Corral node; use a client that "
                                         "speaks the websocket protocols (see docs/kube.md)", status_code=400)
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


def tls_context(cert: str, key: str, client_ca: str | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    if client_ca:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL  # a certificate identifies the API server; else a bearer token
    return ctx


async def serve(api: KubeletApi, host: str, port: int, cert: str, key: str, client_ca: str | None) -> None:
    config = uvicorn.Config(api.app(), host=host, port=port, ssl_certfile=cert, ssl_keyfile=key,
                            ssl_ca_certs=client_ca, ssl_cert_reqs=ssl.CERT_OPTIONAL if client_ca else ssl.CERT_NONE,
                            http=CertificateH11, ws="websockets", log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    await server.serve()


def now() -> datetime:
    return datetime.now(UTC)
