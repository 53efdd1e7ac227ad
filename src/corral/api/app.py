"""The API application: ARM-compatible routes behind path canonicalization and token auth."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from corral.api import access, errors, events, groups, lro, network, provider, usage
from corral.api.auth import PUBLIC_PREFIXES, check
from corral.api.paths import canonical_path
from corral.control.plane import ControlPlane
from corral.errors import Unauthorized


def create_app(plane: ControlPlane) -> FastAPI:
    app = FastAPI(title="Corral", version="0.1.0", docs_url=None, redoc_url=None)
    app.state.plane = plane
    errors.install(app)

    @app.middleware("http")
    async def canonicalize_and_authenticate(request: Request, call_next):  # type: ignore[no-untyped-def]
        path = canonical_path(request.scope["path"])
        request.scope["path"] = path
        request.scope["raw_path"] = path.encode()
        if not path.startswith(PUBLIC_PREFIXES):
            try:
                check(request.headers.get("authorization"), plane.token)
            except Unauthorized as exc:
                return JSONResponse(
                    status_code=401, content=errors.error_body(exc.code, exc.message),
                    headers={"WWW-Authenticate": 'Bearer realm="corral"'},
                )
        return await call_next(request)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(groups.router)
    app.include_router(lro.router)
    app.include_router(provider.router)
    app.include_router(network.router)
    app.include_router(access.router)
    app.include_router(access.sessions)
    app.include_router(events.router)
    app.include_router(usage.router)
    return app
