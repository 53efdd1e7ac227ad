"""Bearer-token authentication: one token per installation, made on first start.

A request authenticates with either the installation token itself or a short-lived
JWT (HS256) that Corral's token endpoint issued (``api/identity.py``, for the Azure
CLI). The JWT's signing key is derived from the installation token, so only this
installation can mint tokens it accepts, and rotating the token revokes them all.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from corral.errors import Unauthorized

# Routes a client must reach before it has a token (cloud metadata discovery).
PUBLIC_PREFIXES = ("/metadata/endpoints", "/healthz")
# Exec/attach websockets authenticate by their one-time password (api/access.py).
PUBLIC_PREFIXES += ("/sessions/",)
# The managed-identity token endpoint authenticates by its identity header (api/identity.py).
PUBLIC_PREFIXES += ("/metadata/identity/",)
# The portal's page and assets; its data routes authenticate themselves (corral.portal.routes).
PUBLIC_PREFIXES += ("/portal",)
# The agent link authenticates by node tokens (link/routes.py), never by the operator's token.
PUBLIC_PREFIXES += ("/link/",)

# The resource (token audience) Corral's management API answers to; the cloud metadata advertises it.
AUDIENCE = "https://management.corral.local/"
ISSUER = "https://corral.local/"
JWT_ALG = "HS256"
JWT_LIFETIME = 3600


def load_or_create_token(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(token)
    tmp.chmod(0o600)
    tmp.replace(path)
    return token


@lru_cache(maxsize=8)
def _derive(token: str, purpose: bytes) -> bytes:
    # Separate keys per purpose: a JWT signature never doubles as the tenant id, and neither reveals the token.
    return hmac.new(token.encode(), b"corral/" + purpose, hashlib.sha256).digest()


def tenant_id(token: str) -> str:
    """The installation's tenant id: stable for a token, a UUID as ARM clients expect."""
    return str(uuid.UUID(bytes=_derive(token, b"tenant-id")[:16], version=4))


def same_audience(a: str, b: str) -> bool:
    return a.rstrip("/").lower() == b.rstrip("/").lower()


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_on: int
    not_before: int


def issue_jwt(token: str, *, audience: str = AUDIENCE, lifetime: int = JWT_LIFETIME,
              now: int | None = None) -> IssuedToken:
    """An HS256 JWT for the operator's identity, valid ``lifetime`` seconds."""
    now = int(time.time()) if now is None else now
    tid = tenant_id(token)
    claims = {
        "aud": audience, "iss": ISSUER, "iat": now, "nbf": now, "exp": now + lifetime,
        "tid": tid, "oid": tid, "sub": tid, "idtyp": "app", "jti": secrets.token_hex(8),
    }
    header = {"alg": JWT_ALG, "typ": "JWT"}
    signing_input = ".".join(_b64encode(json.dumps(p, separators=(",", ":")).encode()) for p in (header, claims))
    signature = hmac.new(_derive(token, b"jwt-signing-key"), signing_input.encode(), hashlib.sha256).digest()
    return IssuedToken(f"{signing_input}.{_b64encode(signature)}", now + lifetime, now)


def verify_jwt(value: str, token: str, *, audience: str = AUDIENCE, now: float | None = None) -> dict[str, Any]:
    """The claims of a JWT this installation signed, if it is still valid; Unauthorized otherwise."""
    parts = value.split(".")
    if len(parts) != 3:
        raise Unauthorized("the bearer token is not a JWT (expected three dot-separated parts)")
    try:
        header = json.loads(_b64decode(parts[0]))
        claims = json.loads(_b64decode(parts[1]))
        signature = _b64decode(parts[2])
    except (ValueError, binascii.Error) as exc:
        raise Unauthorized(f"the bearer token is not a well-formed JWT ({exc})") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise Unauthorized("the bearer token is not a well-formed JWT (header and claims must be JSON objects)")
    # Checked before the signature: "none" or an asymmetric alg must never reach the HMAC comparison.
    if header.get("alg") != JWT_ALG:
        raise Unauthorized(f"the bearer token's algorithm {header.get('alg')!r} is not accepted (only {JWT_ALG})")
    expected = hmac.new(_derive(token, b"jwt-signing-key"), f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256)
    if not hmac.compare_digest(signature, expected.digest()):
        raise Unauthorized("the bearer token was not issued by this Corral installation (bad signature)")
    now = time.time() if now is None else now
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    if not isinstance(exp, int | float) or not isinstance(nbf, int | float):
        raise Unauthorized("the bearer token has no valid 'exp'/'nbf' claims")
    if now >= exp:
        raise Unauthorized(f"the bearer token expired at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(exp))}; "
                           "get a new one from the token endpoint (az does this by itself)")
    if now < nbf:
        raise Unauthorized("the bearer token is not valid yet (nbf is in the future)")
    if not isinstance(claims.get("aud"), str) or not same_audience(claims["aud"], audience):
        raise Unauthorized(f"the bearer token is for {claims.get('aud')!r}, not for this API ({audience})")
    return claims


# JWTs this installation verified, with their validity window: a client sends the same one on
# every request until it expires, and checking it again (decode, HMAC) costs more than a cached GET.
_VERIFIED: dict[tuple[str, str], tuple[float, float]] = {}
_VERIFIED_MAX = 1024


def _verify_cached(value: str, token: str) -> None:
    now = time.time()
    window = _VERIFIED.get((value, token))
    if window is not None and window[0] <= now < window[1]:
        return
    claims = verify_jwt(value, token, now=now)  # raises for an expired or not yet valid one too
    if len(_VERIFIED) >= _VERIFIED_MAX:
        _VERIFIED.clear()
    _VERIFIED[value, token] = (float(claims.get("nbf", 0)), float(claims["exp"]))


def check(header: str | None, token: str) -> None:
    if not header:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>' (see the client config)")
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer":
        raise Unauthorized("the bearer token is not valid for this Corral installation")
    # The installation token is URL-safe base64 (no dots); a dotted value can only be a JWT.
    if "." in value:
        _verify_cached(value, token)
        return
    if not hmac.compare_digest(value.encode(), token.encode()):
        raise Unauthorized("the bearer token is not valid for this Corral installation")
