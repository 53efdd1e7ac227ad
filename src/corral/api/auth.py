"""Bearer-token authentication: one token per installation, made on first start."""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path

from corral.errors import Unauthorized

# Routes a client must reach before it has a token (cloud metadata discovery).
PUBLIC_PREFIXES = ("/metadata/endpoints", "/healthz")
# Exec/attach websockets authenticate by their one-time password (api/access.py).
PUBLIC_PREFIXES += ("/sessions/",)


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


def check(header: str | None, token: str) -> None:
    if not header:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>' (see the client config)")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
        raise Unauthorized("the bearer token is not valid for this Corral installation")
