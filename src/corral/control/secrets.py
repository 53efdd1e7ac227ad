"""The cluster's own secrets, kept in the store so every server of a cluster shares them.

One record (``/cluster/secrets``), made by the first server that starts on an empty store:
the operator's API token, the join token's secret, and the cluster CA that signs server and
node certificates. The store is the control plane's trusted core (it holds groups' secure
environment values too): whoever can read it can act as the control plane.
"""

from __future__ import annotations

import hmac
import secrets

from pydantic import BaseModel

from corral import pki
from corral.errors import VersionConflict
from corral.link.join import make_join_token
from corral.model.records import CLUSTER
from corral.store.base import ABSENT, Store

SECRETS_KEY = CLUSTER + "secrets"


class ClusterSecrets(BaseModel):
    token: str  # the operator's bearer token (`corral server` writes it into the client config)
    joinSecret: str
    caCert: str  # PEM
    caKey: str  # PEM

    @property
    def join_token(self) -> str:
        return make_join_token(self.joinSecret, self.caCert)

    def check_join_token(self, token: str) -> bool:
        secret, _, _ = token.partition(".")
        return hmac.compare_digest(secret.encode(), self.joinSecret.encode())

    @property
    def ca(self) -> pki.x509.Certificate:
        return pki.load_cert(self.caCert)

    @property
    def ca_key(self) -> pki.PrivateKey:
        return pki.load_key(self.caKey)


def cluster_secrets(store: Store, token: str | None = None) -> ClusterSecrets:
    """The cluster's secrets, created on first use (``token``: the operator token to adopt, else a new one)."""
    for _ in range(5):
        rec = store.get(SECRETS_KEY)
        if rec is not None:
            return ClusterSecrets.model_validate(rec.value)
        cert, key = pki.new_ca("Corral cluster CA")
        made = ClusterSecrets(token=token or secrets.token_urlsafe(32), joinSecret=secrets.token_urlsafe(24),
                              caCert=pki.cert_pem(cert).decode(), caKey=pki.key_pem(key).decode())
        try:
            store.put(SECRETS_KEY, made.model_dump(), expect_version=ABSENT)
            return made
        except VersionConflict:
            continue  # another server made them first: use theirs
    raise VersionConflict("the cluster secrets could not be read nor created; retry")
