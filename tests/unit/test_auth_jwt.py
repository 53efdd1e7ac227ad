"""The HS256 JWTs Corral's token endpoint issues and its bearer check accepts (api/auth.py)."""

from __future__ import annotations

import base64
import json

import pytest

from corral.api.auth import AUDIENCE, check, issue_jwt, tenant_id, verify_jwt
from corral.errors import Unauthorized

TOKEN = "installation-token"


def _b64(obj: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_round_trip_and_claims() -> None:
    issued = issue_jwt(TOKEN, lifetime=600, now=1_000_000)
    claims = verify_jwt(issued.access_token, TOKEN, now=1_000_100)
    assert claims["tid"] == tenant_id(TOKEN) and claims["aud"] == AUDIENCE
    assert claims["exp"] == issued.expires_on == 1_000_600
    assert tenant_id(TOKEN) != tenant_id("another")
    check(f"Bearer {issue_jwt(TOKEN).access_token}", TOKEN)
    check(f"Bearer {TOKEN}", TOKEN)  # the installation token still works


@pytest.mark.parametrize("when, words", [(1_000_600, "expired"), (999_999, "not valid yet")])
def test_time_limits(when: int, words: str) -> None:
    issued = issue_jwt(TOKEN, lifetime=600, now=1_000_000)
    with pytest.raises(Unauthorized, match=words):
        verify_jwt(issued.access_token, TOKEN, now=when)


def test_forgeries_are_refused() -> None:
    head, claims, sig = issue_jwt(TOKEN).access_token.split(".")
    with pytest.raises(Unauthorized, match="not issued by this Corral"):
        verify_jwt(issue_jwt("other-installation").access_token, TOKEN)
    with pytest.raises(Unauthorized, match="bad signature"):
        payload = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
        verify_jwt(f"{head}.{_b64({**payload, 'exp': payload['exp'] + 10**6})}.{sig}", TOKEN)
    with pytest.raises(Unauthorized, match="algorithm 'none'"):
        verify_jwt(f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{claims}.", TOKEN)
    with pytest.raises(Unauthorized, match="not for this API"):
        verify_jwt(issue_jwt(TOKEN, audience="https://graph.microsoft.com/").access_token, TOKEN)
    for bad in ("a.b", "!!.??.**", f"{_b64({'alg': 'HS256'})}.W10.{sig}"):
        with pytest.raises(Unauthorized):
            verify_jwt(bad, TOKEN)
    with pytest.raises(Unauthorized):
        check("Bearer not-the-token", TOKEN)


def test_a_verified_jwt_is_remembered_only_until_it_expires() -> None:
    import time

    issued = issue_jwt(TOKEN, lifetime=1)
    header = f"Bearer {issued.access_token}"
    check(header, TOKEN)
    check(header, TOKEN)  # from the cache
    with pytest.raises(Unauthorized, match="not issued by this Corral"):
        check(header, "another-installation")  # remembered per installation token
    time.sleep(max(0.0, issued.expires_on - time.time()) + 0.05)
    with pytest.raises(Unauthorized, match="expired"):
        check(header, TOKEN)
