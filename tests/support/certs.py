"""Certificates a test makes for itself: a CA, a server certificate, client certificates.

Everything is X.509 v3 with the extensions a real PKI would set (basicConstraints,
keyUsage, extendedKeyUsage, subjectAltName on the server's): the SDK's Rust core (rustls)
refuses v1 certificates outright ("UnsupportedCertVersion"), so a shortcut here would test
nothing. Keys are EC P-256: quick to make, and accepted by both nginx (OpenSSL) and rustls.

Usage::

    pki = Pki.create(tmp_path / "pki")
    pki.ca.cert                 # PEM path of the trusted CA
    pki.server.cert, .key       # SAN localhost and 127.0.0.1, signed by the CA
    pki.client.cert, .key       # clientAuth, signed by the CA
    pki.stranger.cert, .key     # clientAuth, signed by another CA nobody trusts
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_FOR = timedelta(days=2)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key as PEM files, and the objects to sign others with."""

    cert: Path
    key: Path
    certificate: x509.Certificate
    private_key: ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "selfheal tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not ca, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                         encipher_only=False, decipher_only=False)


def _issue(directory: Path, stem: str, common_name: str, issuer: Issued | None, *, ca: bool = False,
           usage: x509.ObjectIdentifier | None = None, sans: list[x509.GeneralName] | None = None) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    subject = _name(common_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.certificate.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # a little clock skew between signer and checker
        .not_valid_after(now + VALID_FOR)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
        .add_extension(_key_usage(ca=ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.private_key.public_key()), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    certificate = builder.sign(issuer.private_key if issuer else key, hashes.SHA256())

    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return Issued(cert_path, key_path, certificate, key)


@dataclass(frozen=True)
class Pki:
    ca: Issued
    server: Issued
    client: Issued
    stranger_ca: Issued
    stranger: Issued  # a client certificate from a CA the server does not trust

    @classmethod
    def create(cls, directory: Path) -> "Pki":
        ca = _issue(directory, "ca", "selfheal test CA", None, ca=True)
        server = _issue(directory, "server", "localhost", ca, usage=ExtendedKeyUsageOID.SERVER_AUTH,
                        sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        client = _issue(directory, "client", "selfheal-worker", ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
        stranger_ca = _issue(directory, "stranger-ca", "someone else's CA", None, ca=True)
        stranger = _issue(directory, "stranger", "selfheal-worker", stranger_ca, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
        return cls(ca, server, client, stranger_ca, stranger)
