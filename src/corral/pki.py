"""Certificates: a private CA, the certificates it signs, and the PEM forms they travel in.

One module for every certificate Corral makes: the API's server certificate (``api/tls.py``),
the cluster CA kept in the store, a node's certificate signed from its request at join, and
the client certificate a server presents to node agents (mTLS).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey


def new_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_key(pem: bytes | str) -> PrivateKey:
    key = serialization.load_pem_private_key(pem.encode() if isinstance(pem, str) else pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_cert(pem: bytes | str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)


def fingerprint(cert_or_pem: x509.Certificate | bytes | str) -> str:
    """SHA-256 of the certificate's DER form, hex: what a join token pins the cluster CA by."""
    cert = cert_or_pem if isinstance(cert_or_pem, x509.Certificate) else load_cert(cert_or_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_ca(name: str = "Corral CA", days: int = 3650) -> tuple[x509.Certificate, PrivateKey]:
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _san(hosts: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for h in hosts:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return out


def issue(ca_cert: x509.Certificate, ca_key: PrivateKey, public_key: ec.EllipticCurvePublicKey, common_name: str,
          hosts: list[str] | None = None, *, server: bool = True, client: bool = False,
          days: int = 825) -> x509.Certificate:
    """A certificate for ``public_key`` signed by the CA: a TLS server (``hosts`` in its SANs), a TLS client, or both.

    The extended key usage is exact: a node's server certificate cannot double as a client
    certificate, so one node cannot pose as a control-plane server to another.
    """
    usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
    usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject).public_key(public_key).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(_san(hosts)), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def signing_request(key: PrivateKey, common_name: str) -> bytes:
    """A CSR (PEM) for ``key``: the private key never leaves the machine that asks."""
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
           .sign(key, hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM)


def requested_key(csr_pem: bytes | str) -> ec.EllipticCurvePublicKey:
    """The public key of a CSR whose signature holds (the asker owns the key); ValueError otherwise."""
    csr = x509.load_pem_x509_csr(csr_pem.encode() if isinstance(csr_pem, str) else csr_pem)
    if not csr.is_signature_valid:
        raise ValueError("the certificate signing request's signature does not verify")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("the certificate signing request must carry an EC (P-256) key")
    return key


def covers(cert: x509.Certificate, hosts: list[str]) -> bool:
    """Whether the certificate's SANs name every one of ``hosts``."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = {str(v) for v in san.get_values_for_type(x509.IPAddress)} | set(san.get_values_for_type(x509.DNSName))
    return set(hosts) <= have


def issued_by(cert: x509.Certificate, ca: x509.Certificate, days: int = 0) -> bool:
    """Whether ``ca`` signed ``cert`` and it stays valid ``days`` more days."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return cert.not_valid_after_utc >= _now() + dt.timedelta(days=days)
