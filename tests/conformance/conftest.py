"""The official Azure SDK, pointed at the session's Corral over HTTPS."""

from __future__ import annotations

import time

import pytest
from azure.core.credentials import AccessToken
from azure.mgmt.containerinstance import ContainerInstanceManagementClient


class CorralToken:
    """A TokenCredential that hands out Corral's bearer token."""

    def __init__(self, token: str) -> None:
        self.token = token

    def get_token(self, *scopes: str, **kwargs: object) -> AccessToken:
        return AccessToken(self.token, int(time.time()) + 3600)


@pytest.fixture(scope="session")
def aci(corral) -> ContainerInstanceManagementClient:  # type: ignore[no-untyped-def]
    cfg = corral.config
    return ContainerInstanceManagementClient(
        CorralToken(cfg.token), cfg.subscription, base_url=cfg.endpoint,
        connection_verify=cfg.ca_cert, polling_interval=1, retry_total=0,
    )
