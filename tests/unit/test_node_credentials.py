"""Joining a cluster: the join token pins the CA, a node token names its node, certificates have exact uses."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from corral import pki
from corral.control.credentials import NodeCredentials
from corral.control.secrets import cluster_secrets
from corral.errors import InvalidRequest, NotAssigned, StaleBinding, Unauthorized, error_from
from corral.link.join import JoinRequest, split_join_token
from corral.net.dns.feed import dns_view
from corral.store.sqlite import SqliteStore


@pytest.fixture
def creds(tmp_path: Path) -> NodeCredentials:
    store = SqliteStore(tmp_path / "db")
    return NodeCredentials(store, cluster_secrets(store))


def request(creds: NodeCredentials, name: str = "node-1", token: str | None = None) -> JoinRequest:
    key = pki.new_key()
    return JoinRequest(joinToken=token or creds.cluster.join_token, name=name,
                       csr=pki.signing_request(key, name).decode(), addresses=["10.0.0.7"])


def test_secrets_are_made_once_and_shared(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db")
    first, again = cluster_secrets(store), cluster_secrets(store)
    assert first == again  # a second server of the cluster gets the same ones
    secret, pin = split_join_token(first.join_token)
    assert secret == first.joinSecret and pki.fingerprint(first.caCert).startswith(pin)
    with pytest.raises(ValueError):
        split_join_token("no-pin-here")


def test_join_gives_a_token_for_that_node_only(creds: NodeCredentials) -> None:
    answer = creds.join(request(creds))
    assert creds.verify(f"Bearer {answer.nodeToken}") == "node-1"
    for bad in (None, "Bearer nope", f"Bearer node-2/{answer.nodeToken.split('/')[1]}", f"Basic {answer.nodeToken}"):
        with pytest.raises(Unauthorized):
            creds.verify(bad)
    # Joining again replaces the credentials; the old token stops working.
    again = creds.join(request(creds))
    assert creds.verify(f"Bearer {again.nodeToken}") == "node-1"
    with pytest.raises(Unauthorized):
        creds.verify(f"Bearer {answer.nodeToken}")
    creds.revoke("node-1")
    with pytest.raises(Unauthorized):
        creds.verify(f"Bearer {again.nodeToken}")


def test_join_refuses_a_wrong_token_and_bad_requests(creds: NodeCredentials) -> None:
    with pytest.raises(Unauthorized):
        creds.join(request(creds, token="wrong." + "0" * 32))
    with pytest.raises(InvalidRequest):
        creds.join(request(creds, name="Not_A_Name"))
    bad = request(creds)
    bad.csr = "not a csr"
    with pytest.raises(InvalidRequest):
        creds.join(bad)


def test_a_node_certificate_serves_tls_and_cannot_be_a_client(creds: NodeCredentials) -> None:
    cert = pki.load_cert(creds.join(request(creds)).certificate)
    cert.verify_directly_issued_by(creds.cluster.ca)
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert pki.covers(cert, ["10.0.0.7"])


def test_errors_cross_the_link_as_their_own_class() -> None:
    assert isinstance(error_from("GroupNotAssignedToNode", 403, "m"), NotAssigned)
    assert isinstance(error_from("StaleGroupBinding", 409, "m"), StaleBinding)
    other = error_from("SomethingElse", 418, "teapot")
    assert (other.code, other.status, other.message) == ("SomethingElse", 418, "teapot")


def test_the_dns_feed_carries_no_secrets() -> None:
    group = {"meta": {"uid": "u", "name": "web", "resourceGroup": "rg", "node": "n1", "deleting": False},
             "spec": {"location": "local", "properties": {
                 "ipAddress": {"type": "Public", "dnsNameLabel": "web", "ports": [{"port": 80}]},
                 "containers": [{"name": "c", "properties": {"environmentVariables": [
                     {"name": "TOKEN", "secureValue": "s3cret"}]}}]}}}
    view = dns_view("/groups/sub/rg/web", group)
    assert "s3cret" not in repr(view)
    assert view == {"meta": {"uid": "u", "name": "web", "resourceGroup": "rg", "node": "n1", "deleting": False},
                    "spec": {"location": "local", "properties": {"ipAddress": {"type": "Public",
                                                                               "dnsNameLabel": "web"}}}}
    assert dns_view("/status/u", {"ip": "1.2.3.4", "privateIp": "10.0.0.2", "events": []}) == {
        "ip": "1.2.3.4", "privateIp": "10.0.0.2"}
    assert dns_view("/vnets/x", {"a": 1}) is None
