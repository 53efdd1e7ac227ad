"""The API application: ARM-compatible routes behind path canonicalization and token auth."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from corral.api import (
    access,
    arm,
    capacity,
    deployments,
    errors,
    events,
    groups,
    identity,
    loadbalancers,
    lro,
    monitor,
    network,
    ngroups,
    nodes,
    peerings,
    profiles,
    prometheus,
    provider,
    routetables,
    standbypools,
    usage,
)
from corral.api.auth import PUBLIC_PREFIXES
from corral.api.paths import canonical_path
from corral.api.readcache import RenderedGroups
from corral.control.plane import ControlPlane
from corral.errors import CsrfTokenInvalid, Unauthorized
from corral.link import routes as link_routes
from corral.portal import routes as portal
from corral.portal.session import authorize


class CanonicalizeAndAuthenticate:
    """ARM paths are case-insensitive: route on the canonical form; every non-public HTTP
    request needs the bearer token. Plain ASGI (not BaseHTTPMiddleware), which would
    re-stream every response through a task and a memory channel."""

    def __init__(self, app: ASGIApp, plane: ControlPlane) -> None:
        self.app, self.plane = app, plane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = canonical_path(scope["path"])
        # In place: the request-metrics middleware outside reads the route the router records in the scope.
        scope.update(path=path, raw_path=path.encode())
        headers = Headers(scope=scope)
        if not path.startswith(PUBLIC_PREFIXES) and not prometheus.scrape_authorized(path, headers,
                                                                                        self.plane.scrape_token):
            try:
                authorize(headers, scope["method"], self.plane.token)  # bearer token, or the portal's cookie
            except (Unauthorized, CsrfTokenInvalid) as exc:
                response = JSONResponse(
                    status_code=exc.status, content=errors.error_body(exc.code, exc.message),
                    headers={"WWW-Authenticate": 'Bearer realm="corral"'} if exc.status == 401 else None,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(plane: ControlPlane) -> FastAPI:
    app = FastAPI(title="Corral", version="0.1.0", docs_url=None, redoc_url=None)
    app.state.plane = plane
    app.state.rendered_groups = RenderedGroups()
    errors.install(app)
    app.add_middleware(CanonicalizeAndAuthenticate, plane=plane)
    app.add_middleware(prometheus.RequestMetrics)  # added last: outermost

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(groups.router)
    app.include_router(lro.router)
    app.include_router(provider.router)
    app.include_router(network.router)
    app.include_router(peerings.router)
    app.include_router(routetables.router)
    app.include_router(access.router)
    app.include_router(access.sessions)
    app.include_router(events.router)
    app.include_router(usage.router)
    app.include_router(monitor.router)
    app.include_router(prometheus.router)
    portal.install(app)
    app.include_router(arm.router)
    app.include_router(identity.router)
    app.include_router(capacity.router)
    app.include_router(nodes.router)
    app.include_router(link_routes.router)
    for orchestration in (profiles, ngroups, loadbalancers, standbypools, deployments):
        app.include_router(orchestration.router)
    return app
