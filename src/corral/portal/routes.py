"""The portal's routes: the page and its assets (public), login and logout, the session (its CSRF token),
and the nodes view (older than the API's ``/providers/Corral/nodes``, which could serve it). Everything else
the page shows comes from the API itself (groups, events, logs, exec, metrics, usage), authenticated by the
session cookie."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from corral.config import DEFAULT_SUBSCRIPTION
from corral.model.records import GROUPS, NODES, GroupRecord, NodeInfo
from corral.portal import session
from corral.scheduler.allocation import loads

STATIC = Path(__file__).parent / "static"
BUILT = STATIC / "vendor" / ".built"
# The page loads only its own scripts and styles and talks only to its own origin (HTTPS, websockets).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
NOT_BUILT = """<!doctype html><title>Corral portal</title><h1>The portal is not built</h1>
<p>Its front-end libraries come from npm: run <code>make portal</code> (or <code>make run</code>) in the
Corral checkout, then reload.</p>"""

router = APIRouter()


class Login(BaseModel):
    token: str = Field(min_length=1, description="the installation token or a JWT Corral issued")


def _authorize(request: Request) -> None:
    session.authorize(request.headers, request.method, request.app.state.plane.token)


@router.get("/portal", include_in_schema=False)
def portal_root() -> RedirectResponse:
    return RedirectResponse("/portal/", status_code=308)


@router.get("/portal/", include_in_schema=False)
def page() -> Response:
    if not BUILT.exists():
        return HTMLResponse(NOT_BUILT, status_code=503, headers=SECURITY_HEADERS)
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=SECURITY_HEADERS)


@router.post("/portal/login")
def login(body: Login, request: Request) -> JSONResponse:
    """Check the token and keep a session JWT in a secure, httpOnly, SameSite=Strict cookie."""
    value, expires_on = session.login(body.token, request.app.state.plane.token)
    resp = JSONResponse({"expiresOn": expires_on})
    resp.set_cookie(session.COOKIE, value, max_age=session.max_age(expires_on), path="/", httponly=True,
                    secure=request.url.scheme == "https", samesite="strict")
    return resp


@router.post("/portal/logout")
def logout(request: Request) -> Response:
    resp = Response(status_code=204)
    resp.delete_cookie(session.COOKIE, path="/", httponly=True, secure=request.url.scheme == "https",
                       samesite="strict")
    return resp


@router.get("/portal/session")
def current_session(request: Request) -> dict[str, Any]:
    """Who the page is logged in as: the CSRF token its changes must carry, and the subscription."""
    _authorize(request)
    plane = request.app.state.plane
    value = session.session_cookie(request.headers)
    claims = session.session_claims(value, plane.token) if value else {}
    return {"csrfToken": claims.get("jti"), "expiresOn": claims.get("exp"), "subscription": DEFAULT_SUBSCRIPTION,
            "location": plane.location}


@router.get("/portal/api/nodes")
def nodes(request: Request) -> dict[str, Any]:
    """Every node with what it offers, what its groups request, and its readiness."""
    _authorize(request)
    store = request.app.state.plane.store
    infos = [NodeInfo.model_validate(r.value) for r in store.list(NODES)]
    groups = [GroupRecord.model_validate(r.value) for r in store.list(GROUPS)]
    return {"value": [
        {**load.node.model_dump(mode="json"), "allocated": {"cpu": round(load.cpu, 3),
                                                           "memoryGB": round(load.memoryGB, 3),
                                                           "groups": load.groups}}
        for load in loads(infos, groups).values()
    ]}


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/portal/static", StaticFiles(directory=STATIC, check_dir=False), name="portal-static")
