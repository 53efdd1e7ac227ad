"""Joining a cluster: the join token, its wire format, and where an agent keeps its credentials.

A join token is ``<secret>.<the first 32 hex digits of the cluster CA's SHA-256>``: the agent
fetches the CA from a server unverified, trusts it only if it matches the pin, and then
trades the token (over TLS checked against that CA) for its node token and certificate.
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import httpx
from pydantic import BaseModel

from corral import pki
from corral.errors import ControlPlaneUnavailable, InvalidRequest, Unauthorized
from corral.fileio import atomic_write
from corral.link.http import raise_for
from corral.link.protocol import LINK_PREFIX

CA_PIN_LEN = 32


def make_join_token(secret: str, ca_pem: str) -> str:
    return f"{secret}.{pki.fingerprint(ca_pem)[:CA_PIN_LEN]}"


def split_join_token(token: str) -> tuple[str, str]:
    """(secret, CA pin) of a join token; ValueError when it is not one."""
    secret, sep, pin = token.strip().partition(".")
    if not sep or not secret or len(pin) != CA_PIN_LEN or any(c not in "0123456789abcdef" for c in pin):
        raise ValueError("a join token looks like '<secret>.<32 hex digits>' (`corral server` prints it)")
    return secret, pin


class JoinRequest(BaseModel):
    joinToken: str
    name: str
    csr: str  # PEM
    addresses: list[str]  # where the node's API is reached: its certificate names them


class JoinAnswer(BaseModel):
    nodeToken: str
    certificate: str  # PEM, the node's API server certificate
    caCert: str  # PEM


class NodeCredentialFiles(BaseModel):
    """Where an agent keeps what it got by joining (``<data-dir>/agent/credentials/``)."""

    directory: Path

    @property
    def token(self) -> Path:
        return self.directory / "node-token"

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def cert(self) -> Path:
        return self.directory / "node.pem"

    @property
    def key(self) -> Path:
        return self.directory / "node-key.pem"

    @property
    def identity(self) -> Path:
        return self.directory / "identity.json"

    def exists(self, name: str) -> bool:
        if not all(p.exists() for p in (self.token, self.ca, self.cert, self.key, self.identity)):
            return False
        return json.loads(self.identity.read_text()).get("name") == name


def join(servers: list[str], join_token: str, name: str, addresses: list[str], files: NodeCredentialFiles) -> None:
    """Trade the join token for node credentials, written to ``files``."""
    try:
        _, pin = split_join_token(join_token)
    except ValueError as exc:
        raise InvalidRequest(f"--join-token: {exc}") from None
    key = pki.new_key()
    body = {"joinToken": join_token, "name": name, "csr": pki.signing_request(key, name).decode(),
            "addresses": addresses}
    last: Exception | None = None
    for server in servers:
        base = server.rstrip("/") + LINK_PREFIX
        try:
            # The CA is fetched unverified, then trusted only if it is the one the join token pins.
            ca_pem = httpx.get(base + "/ca", verify=False, timeout=5).raise_for_status().text
            if pki.fingerprint(ca_pem)[: len(pin)] != pin:
                raise Unauthorized(f"server {server} presents another cluster's CA than the join token names: "
                                   "refusing to join it")
            files.directory.mkdir(parents=True, exist_ok=True)
            atomic_write(files.ca, ca_pem)
            resp = httpx.post(base + "/join", json=body, verify=ssl.create_default_context(cafile=str(files.ca)),
                              timeout=10)
            raise_for(resp)
        except httpx.HTTPError as exc:
            last = exc
            continue
        answer = resp.json()
        atomic_write(files.key, pki.key_pem(key), mode=0o600)
        atomic_write(files.cert, answer["certificate"])
        atomic_write(files.token, answer["nodeToken"], mode=0o600)
        atomic_write(files.identity, json.dumps({"name": name, "servers": servers}))
        return
    raise ControlPlaneUnavailable(f"could not join: no server answered ({', '.join(servers)}): {last}")
