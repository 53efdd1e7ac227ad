"""Test helper: run Debian's `docker-registry` on 127.0.0.1 for the length of a `with` block.

    with run_registry(tmp_path) as reg:                     # anonymous
        ...reg.host_port, reg.url
    with run_registry(tmp_path, users={"u": "p"}) as reg:   # htpasswd basic auth (bcrypt hashes)
    with run_registry(tmp_path, users={"u": "p"}, token_auth=True) as reg:
        # bearer tokens: the registry answers `WWW-Authenticate: Bearer realm=...` and a token
        # server on another loopback port (reg.token_url) issues JWTs for the users given
        # (anonymous pull/push when users is empty), signed by a self-signed cert the registry trusts.

The registry's storage, config and log live under tmp_path/registry-<port>/; the
process is stopped (and killed if it must be) when the block exits, even on error.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.server
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from ports import free_port

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"


@dataclass(frozen=True)
class RegistryInfo:
    host_port: str  # "127.0.0.1:PORT", the registry part of image references
    url: str  # "http://127.0.0.1:PORT"
    root: Path  # storage, config.yml and registry.log live here
    users: dict[str, str]
    token_url: str | None = None  # the token server's realm when token_auth=True


def _htpasswd(path: Path, users: dict[str, str]) -> None:
    import bcrypt  # the registry's htpasswd backend accepts bcrypt hashes only

    lines = [f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=4)).decode()}" for u, p in users.items()]
    path.write_text("\n".join(lines) + "\n")


def _config(root: Path, port: int, users: dict[str, str] | None, token: _TokenServer | None = None,
            host: str = "127.0.0.1") -> str:
    text = (
        "version: 0.1\n"
        "log:\n  level: warn\n"
        "storage:\n"
        f"  filesystem:\n    rootdirectory: {root / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {host}:{port}\n"
    )
    if token is not None:
        text += (f"auth:\n  token:\n    realm: {token.url}\n    service: {token.service}\n"
                 f"    issuer: {token.issuer}\n    rootcertbundle: {token.cert_path}\n")
    elif users:
        _htpasswd(root / "htpasswd", users)
        text += f"auth:\n  htpasswd:\n    realm: corral-test\n    path: {root / 'htpasswd'}\n"
    return text


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/v2/", timeout=1.0).status_code in (200, 401):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"docker-registry at {url} did not become ready: {log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _TokenServer:
    """Issues registry bearer tokens (RS256 JWTs with an x5c header) on a loopback port."""

    service = "corral-test-registry"
    issuer = "corral-test-token-issuer"

    def __init__(self, root: Path, users: dict[str, str]) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID

        self.users = users
        self.issued: list[dict[str, object]] = []
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "corral test token signer")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(self._key, hashes.SHA256()))
        self.cert_path = root / "token-signer.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self._x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                status, body = server.answer(self.path, self.headers.get("Authorization", ""))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/token"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def answer(self, path: str, authorization: str) -> tuple[int, dict[str, object]]:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        subject = ""
        if authorization.startswith("Basic "):
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            if self.users.get(user) != password:
                return 401, {"details": "bad credentials"}
            subject = user
        elif self.users:
            return 401, {"details": "credentials required"}
        access = []
        for scope in query.get("scope", []):
            kind, _, rest = scope.partition(":")
            repo, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": repo, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": subject, "aud": query.get("service", [""])[0],
                  "exp": now + 300, "nbf": now - 10, "iat": now, "jti": os.urandom(8).hex(), "access": access}
        self.issued.append(claims)
        return 200, {"token": self._sign(claims), "expires_in": 300}

    def _sign(self, claims: dict[str, object]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(signature)}"


@contextlib.contextmanager
def run_registry(tmp_path: Path, users: dict[str, str] | None = None,
                 token_auth: bool = False, host: str = "127.0.0.1") -> Iterator[RegistryInfo]:
    """``host``: the address it listens on (tests with hosts in network namespaces use a fabric address)."""
    base = Path(tmp_path)
    base.mkdir(parents=True, exist_ok=True)
    token = _TokenServer(base, dict(users or {})) if token_auth else None
    try:
        with _run(base, users, token, host) as info:
            yield info
    finally:
        if token is not None:
            token.close()


@contextlib.contextmanager
def _run(tmp_path: Path, users: dict[str, str] | None, token: _TokenServer | None,
         host: str = "127.0.0.1") -> Iterator[RegistryInfo]:
    for _attempt in range(5):  # another process may grab the port between probe and bind
        port = free_port(host)
        root = Path(tmp_path) / f"registry-{port}"
        root.mkdir(parents=True, exist_ok=True)
        (root / "config.yml").write_text(_config(root, port, users, token, host))
        log = root / "registry.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([REGISTRY_BIN, "serve", str(root / "config.yml")], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        url = f"http://{host}:{port}"
        try:
            try:
                _wait_ready(proc, url, log)
            except RuntimeError:
                if proc.poll() is not None and "address already in use" in log.read_text():
                    continue
                raise
            yield RegistryInfo(host_port=f"{host}:{port}", url=url, root=root, users=dict(users or {}),
                               token_url=token.url if token else None)
            return
        finally:
            _stop(proc)
    raise RuntimeError("could not find a free port for docker-registry")
