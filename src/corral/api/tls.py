"""A private CA and a server certificate for the API, made on first start."""

from __future__ import annotations

from pathlib import Path

from corral import pki


def _write_key(path: Path, key: pki.PrivateKey) -> None:
    path.write_bytes(pki.key_pem(key))
    path.chmod(0o600)


def ensure_certificates(directory: Path, hosts: list[str]) -> tuple[Path, Path, Path]:
    """Return (ca_cert, server_cert, server_key), creating what is missing.

    The server certificate is re-issued when it does not cover ``hosts``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = directory / "ca.pem", directory / "ca-key.pem"
    if not ca_cert.exists() or not ca_key.exists():
        cert, key = pki.new_ca()
        _write_key(ca_key, key)
        ca_cert.write_bytes(pki.cert_pem(cert))
        (directory / "server.pem").unlink(missing_ok=True)
    return ensure_server_certificate(directory, pki.load_cert(ca_cert.read_bytes()),
                                     pki.load_key(ca_key.read_bytes()), hosts)


def ensure_server_certificate(directory: Path, ca: pki.x509.Certificate, ca_key: pki.PrivateKey,
                              hosts: list[str]) -> tuple[Path, Path, Path]:
    """(ca_cert, server_cert, server_key) in ``directory``: the CA's certificate is written there,
    the server certificate (re)issued from the CA unless one covering ``hosts`` is already there."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_path, srv_cert, srv_key = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    if not ca_path.exists() or ca_path.read_bytes() != pki.cert_pem(ca):
        ca_path.write_bytes(pki.cert_pem(ca))
        srv_cert.unlink(missing_ok=True)
    if srv_cert.exists() and srv_key.exists() and pki.covers(pki.load_cert(srv_cert.read_bytes()), hosts):
        return ca_path, srv_cert, srv_key
    key = pki.new_key()
    cert = pki.issue(ca, ca_key, key.public_key(), hosts[0], hosts)
    _write_key(srv_key, key)
    srv_cert.write_bytes(pki.cert_pem(cert))
    return ca_path, srv_cert, srv_key
