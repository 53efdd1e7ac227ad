"""Pydantic models at the image store's edges (re-exported from store.py)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from corral.errors import ImageError


class ImageConfig(BaseModel):
    """The runnable part of an image config blob (its `config` object)."""

    entrypoint: list[str] = Field(default_factory=list)
    cmd: list[str] = Field(default_factory=list)
    env: list[str] = Field(default_factory=list)
    working_dir: str = ""
    user: str = ""
    exposed_ports: list[str] = Field(default_factory=list)

    @classmethod
    def from_blob(cls, blob: dict[str, Any]) -> ImageConfig:
        c = blob.get("config") or {}
        return cls(
            entrypoint=list(c.get("Entrypoint") or []),
            cmd=list(c.get("Cmd") or []),
            env=list(c.get("Env") or []),
            working_dir=c.get("WorkingDir") or "",
            user=c.get("User") or "",
            exposed_ports=sorted((c.get("ExposedPorts") or {}).keys()),
        )

    def to_blob_config(self) -> dict[str, Any]:
        """The Docker/OCI `config` object for this config (empty fields left out)."""
        out: dict[str, Any] = {}
        if self.entrypoint:
            out["Entrypoint"] = self.entrypoint
        if self.cmd:
            out["Cmd"] = self.cmd
        if self.env:
            out["Env"] = self.env
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.user:
            out["User"] = self.user
        if self.exposed_ports:
            out["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        return out


class Image(BaseModel):
    reference: str  # canonical reference it was stored under
    digest: str  # manifest digest
    config: ImageConfig
    layers: list[str]  # layer diff ids (sha256:...) bottom to top
    size: int  # bytes of compressed layers
    created: datetime | None = None
    # Internal bookkeeping, needed to push and garbage-collect: the manifest's media type,
    # its config blob digest and its layer blob digests (bottom to top).
    media_type: str = ""
    config_digest: str = ""
    layer_blobs: list[str] = Field(default_factory=list)


class RegistryCredential(BaseModel):
    """Mirrors ACI imageRegistryCredentials: `server` is a host[:port], optionally with a scheme."""

    server: str
    username: str | None = None
    password: str | None = None


def parse_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise ImageError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ImageError(f"{what} is not a JSON object")
    return obj


def parse_created(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.replace("Z", "+00:00")
    # Go emits nanoseconds; Python 3.11 takes at most microseconds.
    if "." in text:
        head, _, rest = text.partition(".")
        n = len(rest) - len(rest.lstrip("0123456789"))
        frac, tz = rest[:n], rest[n:]
        text = f"{head}.{frac[:6]}{tz}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None
