"""A small client for the OCI distribution API (pull and push), over httpx.

Auth: anonymous, HTTP basic, and bearer tokens (a `WWW-Authenticate: Bearer
realm=...,service=...,scope=...` challenge is answered by fetching a token from
the realm, with basic credentials if any were given). Plain HTTP is used only
for loopback registries and hosts listed in CORRAL_INSECURE_REGISTRIES.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

from corral.errors import ImageError, RegistryAuthError
from corral.node.images import mediatypes
from corral.node.images.content import CHUNK
from corral.node.images.models import RegistryCredential

_HUB_ENDPOINT = "registry-1.docker.io"
_HUB_NAMES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
INSECURE_ENV = "CORRAL_INSECURE_REGISTRIES"


def _split_host(host: str) -> str:
    """Hostname without port (handles [v6]:port)."""
    if host.startswith("["):
        return host[1:host.index("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_insecure(host: str) -> bool:
    """Plain HTTP for loopback registries and for hosts the operator listed explicitly."""
    name = _split_host(host)
    if name == "localhost":
        return True
    try:
        if ipaddress.ip_address(name).is_loopback:
            return True
    except ValueError:
        pass
    listed = {h.strip() for h in os.environ.get(INSECURE_ENV, "").split(",") if h.strip()}
    return host in listed or name in listed


def server_host(server: str) -> str:
    """Normalize a credential's server ("https://host:port/path") to "host:port"."""
    s = server.strip()
    if "://" in s:
        s = s.split("://", 1)[1]
    s = s.split("/", 1)[0]
    return "docker.io" if s in _HUB_NAMES else s


def match_credential(registry: str, credentials: list[RegistryCredential] | tuple[RegistryCredential, ...]
                     ) -> RegistryCredential | None:
    for cred in credentials:
        if server_host(cred.server) == registry:
            return cred
    return None


def _registry_message(resp: httpx.Response) -> str:
    try:
        errors = resp.json().get("errors") or []
        if errors:
            return "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors)
    except (ValueError, AttributeError):
        pass
    return resp.text[:200] or resp.reason_phrase


class RegistryClient:
    """Talks to one registry on behalf of one repository operation."""

    def __init__(self, registry: str, credential: RegistryCredential | None = None,
                 endpoint: str | None = None, timeout: float = 30.0) -> None:
        self.registry = registry
        host = endpoint or (_HUB_ENDPOINT if registry == "docker.io" else registry)
        self.host = host
        scheme = "http" if is_insecure(host) else "https"
        self.base = f"{scheme}://{host}"
        self.credential = credential
        self._basic = False
        self._tokens: dict[str, str] = {}
        # Loopback registries must not be sent through an environment proxy.
        self._http = httpx.Client(timeout=httpx.Timeout(timeout, connect=5.0), follow_redirects=True,
                                  trust_env=not is_insecure(host))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def where(self) -> str:
        return self.registry if self.host == self.registry else f"{self.registry} (via {self.host})"

    # --- auth -------------------------------------------------------------------------------

    def _auth_headers(self, scope: str) -> dict[str, str]:
        if scope in self._tokens:
            return {"Authorization": f"Bearer {self._tokens[scope]}"}
        return {}

    def _basic_auth(self) -> httpx.BasicAuth | None:
        if self._basic and self.credential and self.credential.username is not None:
            return httpx.BasicAuth(self.credential.username, self.credential.password or "")
        return None

    def _answer_challenge(self, resp: httpx.Response, scope: str) -> None:
        header = resp.headers.get("www-authenticate", "")
        kind = header.split(" ", 1)[0].lower()
        have_creds = self.credential is not None and self.credential.username is not None
        if kind == "basic":
            if not have_creds:
                raise RegistryAuthError(
                    f"registry {self.where} requires a username and password; add imageRegistryCredentials "
                    f"for server {self.registry}")
            if self._basic:
                raise RegistryAuthError(
                    f"registry {self.where} rejected the credentials for user {self.credential.username!r}"  # type: ignore[union-attr]
                )
            self._basic = True
            return
        if kind == "bearer":
            params = dict(_CHALLENGE_PARAM.findall(header))
            realm = params.get("realm")
            if not realm:
                raise ImageError(f"registry {self.where} sent a bearer challenge without a realm")
            if scope in self._tokens:
                raise RegistryAuthError(f"registry {self.where} refused the token it issued for {scope}")
            query = {"service": params.get("service", ""), "scope": scope}
            auth = (httpx.BasicAuth(self.credential.username, self.credential.password or "")  # type: ignore[union-attr]
                    if have_creds else None)
            try:
                tok = self._http.get(realm, params={k: v for k, v in query.items() if v}, auth=auth)
            except httpx.HTTPError as exc:
                raise ImageError(f"could not reach the token service {realm} of {self.where}: {exc}") from exc
            if tok.status_code in (401, 403):
                who = f"user {self.credential.username!r}" if have_creds else "anonymous access"  # type: ignore[union-attr]
                raise RegistryAuthError(f"registry {self.where} token service refused {who} for {scope}")
            if tok.status_code != 200:
                raise ImageError(f"token service {realm} answered {tok.status_code}: "
                                 f"{_registry_message(tok)}")
            body = tok.json()
            token = body.get("token") or body.get("access_token")
            if not token:
                raise ImageError(f"token service {realm} returned no token")
            self._tokens[scope] = token
            return
        raise ImageError(f"registry {self.where} asks for unsupported authentication {header!r}")

    def request(self, method: str, url: str, scope: str, *, headers: dict[str, str] | None = None,
                content: Callable[[], Any] | None = None, stream: bool = False) -> httpx.Response:
        """Send, answering at most one auth challenge. `content` is a factory so retries can resend it."""
        if not url.startswith("http"):
            url = self.base + url
        for _attempt in range(3):
            hdrs = {**(headers or {}), **self._auth_headers(scope)}
            req = self._http.build_request(method, url, headers=hdrs,
                                           content=content() if content else None)
            auth = self._basic_auth()
            try:
                resp = self._http.send(req, auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
                                       stream=stream)
            except httpx.HTTPError as exc:
                raise ImageError(f"could not reach registry {self.where} at {self.base}: {exc}") from exc
            if resp.status_code != 401:
                return resp
            if stream:
                resp.close()
            self._answer_challenge(resp, scope)
        raise RegistryAuthError(f"registry {self.where} keeps refusing the credentials for {scope}")

    # --- pull -------------------------------------------------------------------------------

    def get_manifest(self, repository: str, reference: str) -> tuple[bytes, str]:
        scope = f"repository:{repository}:pull"
        resp = self.request("GET", f"/v2/{repository}/manifests/{reference}", scope,
                            headers={"Accept": mediatypes.ACCEPT})
        if resp.status_code == 404:
            raise ImageError(f"manifest {repository}:{reference} was not found in registry {self.where}")
        if resp.status_code == 403:
            raise RegistryAuthError(f"registry {self.where} denied access to {repository}")
        if resp.status_code != 200:
            raise ImageError(f"registry {self.where} answered {resp.status_code} for manifest "
                             f"{repository}:{reference}: {_registry_message(resp)}")
        media_type = resp.headers.get("content-type", "").split(";")[0].strip()
        return resp.content, media_type

    @contextmanager
    def open_blob(self, repository: str, digest: str) -> Iterator[tuple[Iterator[bytes], int | None]]:
        scope = f"repository:{repository}:pull"
        resp = self.request("GET", f"/v2/{repository}/blobs/{digest}", scope, stream=True)
        try:
            if resp.status_code != 200:
                resp.read()
                raise ImageError(f"blob {digest} of {repository} could not be fetched from {self.where}: "
                                 f"{resp.status_code} {_registry_message(resp)}")
            length = resp.headers.get("content-length")

            def chunks() -> Iterator[bytes]:
                try:
                    yield from resp.iter_bytes(CHUNK)
                except httpx.HTTPError as exc:
                    raise ImageError(f"download of blob {digest} from {self.where} failed: {exc}") from exc

            yield chunks(), int(length) if length else None
        finally:
            resp.close()

    # --- push -------------------------------------------------------------------------------

    def has_blob(self, repository: str, digest: str) -> bool:
        scope = f"repository:{repository}:pull,push"
        resp = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", scope)
        if resp.status_code == 403:
            raise RegistryAuthError(f"registry {self.where} denied push access to {repository}")
        return resp.status_code == 200

    def upload_blob(self, repository: str, digest: str, path: Path) -> None:
        scope = f"repository:{repository}:pull,push"
        start = self.request("POST", f"/v2/{repository}/blobs/uploads/", scope)
        if start.status_code == 403:
            raise RegistryAuthError(f"registry {self.where} denied push access to {repository}")
        if start.status_code not in (201, 202) or "location" not in start.headers:
            raise ImageError(f"registry {self.where} refused to start an upload to {repository}: "
                             f"{start.status_code} {_registry_message(start)}")
        location = urljoin(self.base + "/", start.headers["location"])
        url = httpx.URL(location).copy_merge_params({"digest": digest})
        size = path.stat().st_size

        def body() -> Iterator[bytes]:
            with open(path, "rb") as fh:
                yield from iter(lambda: fh.read(CHUNK), b"")

        resp = self.request("PUT", str(url), scope, content=body,
                            headers={"Content-Type": "application/octet-stream",
                                     "Content-Length": str(size)})
        if resp.status_code != 201:
            raise ImageError(f"upload of blob {digest} to {self.where}/{repository} failed: "
                             f"{resp.status_code} {_registry_message(resp)}")

    def put_manifest(self, repository: str, reference: str, body: bytes, media_type: str) -> str | None:
        scope = f"repository:{repository}:pull,push"
        resp = self.request("PUT", f"/v2/{repository}/manifests/{reference}", scope,
                            content=lambda: body, headers={"Content-Type": media_type})
        if resp.status_code == 403:
            raise RegistryAuthError(f"registry {self.where} denied push access to {repository}")
        if resp.status_code not in (200, 201):
            raise ImageError(f"registry {self.where} refused manifest {repository}:{reference}: "
                             f"{resp.status_code} {_registry_message(resp)}")
        return resp.headers.get("docker-content-digest")
