"""Node credentials: a join token traded once for a node's own token and certificate.

An agent joins with the cluster's join token, its node name and a certificate signing
request. It gets back a node token (``<node>/<secret>``, the bearer of every link call it
makes; the store keeps only its SHA-256) and a certificate for its own API (TLS server
only), signed by the cluster CA. With the token, the link routes know which node calls and
let it read only its own assignments and write only its own status and heartbeat.

Joining again under the same name (a machine re-installed) replaces the old credentials.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from corral import pki
from corral.control.secrets import ClusterSecrets
from corral.errors import InvalidRequest, Unauthorized
from corral.fileio import atomic_write
from corral.link.join import JoinAnswer, JoinRequest
from corral.model.records import NODE_CREDENTIALS
from corral.store.base import Store

_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,61}[a-z0-9])?$")
CACHE_SECONDS = 5.0  # a revoked token stops working within this long on every server


def check_node_name(name: str) -> str:
    if not _NODE_NAME.match(name):
        raise InvalidRequest(f"node name {name!r} must be 1-63 lowercase letters, digits, '-' or '.', starting and "
                             "ending with a letter or digit", target="name")
    return name


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class NodeCredentials:
    def __init__(self, store: Store, cluster: ClusterSecrets) -> None:
        self.store = store
        self.cluster = cluster
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[str, float]] = {}  # token digest -> (node, verified until)

    def join(self, req: JoinRequest) -> JoinAnswer:
        if not self.cluster.check_join_token(req.joinToken):
            raise Unauthorized("the join token is not this cluster's (see `corral server`'s output or its "
                               "join-token file)")
        name = check_node_name(req.name)
        if not req.addresses:
            raise InvalidRequest("addresses: the node must say where its API is reached", target="addresses")
        try:
            public_key = pki.requested_key(req.csr)
        except ValueError as exc:
            raise InvalidRequest(f"csr: {exc}", target="csr") from None
        cert = pki.issue(self.cluster.ca, self.cluster.ca_key, public_key, name, req.addresses, server=True)
        token = f"{name}/{secrets.token_urlsafe(32)}"
        self.store.put(NODE_CREDENTIALS + name, {"node": name, "sha256": _digest(token),
                                                 "issuedAt": datetime.now(UTC).isoformat()})
        with self._lock:
            self._cache.clear()
        return JoinAnswer(nodeToken=token, certificate=pki.cert_pem(cert).decode(), caCert=self.cluster.caCert)

    def verify(self, authorization: str | None) -> str:
        """The node a bearer node token belongs to; Unauthorized for anything else."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or "/" not in token:
            raise Unauthorized("node credentials required: 'Authorization: Bearer <node token>' (an agent gets "
                               "one by joining with the cluster's join token)")
        digest = _digest(token)
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            return hit[0]
        name = token.rsplit("/", 1)[0]
        rec = self.store.get(NODE_CREDENTIALS + name)
        if rec is None or not hmac.compare_digest(str(rec.value.get("sha256", "")), digest):
            raise Unauthorized(f"the node token is not valid for node '{name}' (revoked, or replaced by a new join)")
        with self._lock:
            self._cache[digest] = (name, now + CACHE_SECONDS)
        return name

    def revoke(self, name: str) -> None:
        self.store.delete(NODE_CREDENTIALS + name)
        with self._lock:
            self._cache.clear()


class ServerIdentity(BaseModel):
    """A server's certificates: its API's (TLS server), and the client certificate it shows node agents."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path


def server_identity(directory: Path, cluster: ClusterSecrets, hosts: list[str], name: str) -> ServerIdentity:
    """Write this server's certificates, issued from the cluster CA, under ``directory``."""
    from corral.api.tls import ensure_server_certificate

    ca, cert, key = ensure_server_certificate(directory, cluster.ca, cluster.ca_key, hosts)
    client_cert, client_key = directory / "client.pem", directory / "client-key.pem"
    if not client_cert.exists() or not pki.issued_by(pki.load_cert(client_cert.read_bytes()), cluster.ca, days=30):
        k = pki.new_key()
        c = pki.issue(cluster.ca, cluster.ca_key, k.public_key(), f"corral-server:{name}", server=False, client=True)
        atomic_write(client_key, pki.key_pem(k), mode=0o600)
        atomic_write(client_cert, pki.cert_pem(c))
    return ServerIdentity(ca=ca, cert=cert, key=key, client_cert=client_cert, client_key=client_key)
