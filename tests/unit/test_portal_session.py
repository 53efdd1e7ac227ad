"""Portal sessions: login turns a token into a session JWT, the cookie authenticates, changes need the CSRF token."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from corral.api.auth import issue_jwt, verify_jwt
from corral.errors import CsrfTokenInvalid, Unauthorized
from corral.portal import session

TOKEN = "installation-token"


def test_login_keeps_a_jwt_never_the_installation_token() -> None:
    value, expires = session.login(f" {TOKEN} ", TOKEN)
    assert value != TOKEN and verify_jwt(value, TOKEN)["exp"] == expires
    issued = issue_jwt(TOKEN, lifetime=600).access_token
    assert session.login(issued, TOKEN)[0] == issued  # an issued JWT is kept with its own expiry
    with pytest.raises(Unauthorized, match="not valid for this Corral installation"):
        session.login("wrong", TOKEN)
    with pytest.raises(Unauthorized, match="not issued by this Corral"):
        session.login(issue_jwt("other").access_token, TOKEN)


def test_cookie_authenticates_and_changes_need_the_csrf_token() -> None:
    value, _ = session.login(TOKEN, TOKEN)
    jti = verify_jwt(value, TOKEN)["jti"]
    cookie = {"cookie": f"other=1; {session.COOKIE}={value}"}
    session.authorize(Headers(cookie), "GET", TOKEN)
    with pytest.raises(CsrfTokenInvalid):
        session.authorize(Headers(cookie), "DELETE", TOKEN)
    with pytest.raises(CsrfTokenInvalid):
        session.authorize(Headers({**cookie, "x-csrf-token": "guess"}), "PUT", TOKEN)
    session.authorize(Headers({**cookie, "x-csrf-token": jti}), "POST", TOKEN)
    # A bearer header is checked as such (API clients never need the CSRF token).
    session.authorize(Headers({**cookie, "authorization": f"Bearer {TOKEN}"}), "PUT", TOKEN)
    with pytest.raises(Unauthorized):
        session.authorize(Headers({**cookie, "authorization": "Bearer nope"}), "GET", TOKEN)
    with pytest.raises(Unauthorized, match="log in again"):
        session.authorize(Headers({"cookie": f"{session.COOKIE}={issue_jwt(TOKEN, now=1).access_token}"}), "GET",
                          TOKEN)
    with pytest.raises(Unauthorized):
        session.authorize(Headers({}), "GET", TOKEN)
