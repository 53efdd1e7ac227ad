"""Portal sessions: the token (or an issued JWT) a user logs in with becomes a JWT in a secure, httpOnly,
SameSite=Strict cookie, which then authenticates API requests like a bearer token.

CSRF: a request that changes something (POST, PUT, PATCH, DELETE) authenticated by the cookie must also send
``X-CSRF-Token`` with the session's CSRF token (the JWT's ``jti``, which the page reads from
``GET /portal/session``; another site can neither read the cookie nor that answer).
"""

from __future__ import annotations

import hmac
import time
from http.cookies import SimpleCookie
from typing import Any

from starlette.datastructures import Headers

from corral.api.auth import check, issue_jwt, verify_jwt
from corral.errors import CsrfTokenInvalid, Unauthorized

COOKIE = "corral_session"
CSRF_HEADER = "x-csrf-token"
LIFETIME = 12 * 3600  # seconds a session made from the installation token lasts
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def session_cookie(headers: Headers) -> str | None:
    raw = headers.get("cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:  # a malformed cookie header from some other app on the host: ignore it
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel and morsel.value else None


def session_claims(value: str, token: str) -> dict[str, Any]:
    """The claims of a session cookie's JWT; Unauthorized (expired, not ours) otherwise."""
    try:
        return verify_jwt(value, token)
    except Unauthorized as exc:
        raise Unauthorized(f"the portal session is no longer valid ({exc.message}); log in again") from None


def authorize(headers: Headers, method: str, token: str) -> None:
    """Authenticate a request by its bearer token, else by the portal session cookie (with its CSRF token
    for a change). Unauthorized / CsrfTokenInvalid otherwise."""
    header = headers.get("authorization")
    value = None if header else session_cookie(headers)
    if value is None:
        check(header, token)
        return
    claims = session_claims(value, token)
    if method.upper() in UNSAFE:
        sent = headers.get(CSRF_HEADER) or ""
        if not hmac.compare_digest(sent.encode(), str(claims.get("jti", "")).encode()):
            raise CsrfTokenInvalid("this change came from the portal without its CSRF token (X-CSRF-Token); "
                                   "reload the page")


def login(credential: str, token: str) -> tuple[str, int]:
    """The session JWT for a user's token (the installation token or a JWT this installation issued) and its
    expiry (epoch seconds). An issued JWT is kept as it is; the installation token is never put in a cookie."""
    credential = credential.strip()
    try:
        check(f"Bearer {credential}", token)
    except Unauthorized as exc:
        if "." in credential:
            raise  # a JWT: its own reason (expired, not ours, ...)
        raise Unauthorized("the token is not valid for this Corral installation: use \"token\" from the client "
                           "config `corral up` wrote, or a JWT from its token endpoint") from exc
    if "." in credential:
        return credential, int(verify_jwt(credential, token)["exp"])
    issued = issue_jwt(token, lifetime=LIFETIME)
    return issued.access_token, issued.expires_on


def max_age(expires_on: int) -> int:
    return max(0, expires_on - int(time.time()))
