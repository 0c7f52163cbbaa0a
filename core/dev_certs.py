"""A development CA and the certificates a stack needs (`recsys tls init`; the tests make theirs with it).

One directory, five PEM files:
    ca.pem                    the CA: clients verify servers with it, servers verify client certificates
    server.pem, server.key    one certificate for every service of the stack, its SANs naming every host
                              they are reached at (IP addresses as IP SANs: no name override needed)
    client.pem, client.key    what the stack's clients present under mutual TLS
The CA's private key is not kept: nothing else can ever be signed with it; to add a host, run it again.
Keys are ECDSA P-256 (small, fast handshakes); for production, use your organisation's CA instead.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("localhost", "127.0.0.1")
FILES = ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")


@dataclass(frozen=True)
class DevCerts:
    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def server_cert(self) -> Path:
        return self.dir / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.dir / "server.key"

    @property
    def client_cert(self) -> Path:
        return self.dir / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.dir / "client.key"

    def env(self, client_auth: bool = False) -> dict[str, str]:
        """The RECSYS_TLS_* variables of a stack using these files (core/config.py)."""
        return {"RECSYS_TLS_CERT_FILE": str(self.server_cert), "RECSYS_TLS_KEY_FILE": str(self.server_key),
                "RECSYS_TLS_CA_FILE": str(self.ca), "RECSYS_TLS_CLIENT_AUTH": "require" if client_auth else "off",
                "RECSYS_TLS_CLIENT_CERT_FILE": str(self.client_cert),
                "RECSYS_TLS_CLIENT_KEY_FILE": str(self.client_key)}


def make_dev_certs(out: Path, hosts: Sequence[str] = DEFAULT_HOSTS, days: int = 825,
                   overwrite: bool = False) -> DevCerts:
    """Write a new CA, a server certificate for `hosts` and a client certificate into `out`."""
    certs = DevCerts(out)
    names = [_subject_alt_name(h) for h in dict.fromkeys(h.strip() for h in hosts)]
    if not names:
        raise ValueError("--host: at least one host name or IP address the services are reached at")
    if days < 1:
        raise ValueError(f"--days {days}: at least 1")
    existing = [name for name in FILES if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds {', '.join(existing)}: use another --dir, or --force to "
                              "replace them")
    out.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "recsys development CA")])
    ca = (_builder(ca_name, ca_name, ca_key.public_key(), days)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(_key_usage(cert_sign=True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    _write(certs.ca, ca.public_bytes(serialization.Encoding.PEM))
    for cert, key, common_name, usage, sans in (
            (certs.server_cert, certs.server_key, names[0].value, ExtendedKeyUsageOID.SERVER_AUTH, names),
            (certs.client_cert, certs.client_key, "recsys client", ExtendedKeyUsageOID.CLIENT_AUTH, [])):
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(common_name))])
        builder = (_builder(subject, ca_name, leaf_key.public_key(), days)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(_key_usage(cert_sign=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                                  critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        _write(cert, builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        _write(key, leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()), private=True)
    return certs


def _subject_alt_name(host: str) -> x509.GeneralName:
    if not host:
        raise ValueError("--host: an empty host name")
    try:
        return x509.IPAddress(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return x509.DNSName(host)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey,
             days: int) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))  # another machine's clock a little behind
            .not_valid_after(now + timedelta(days=days)))


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
                         encipher_only=False, decipher_only=False)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    """A key is readable by its owner only, from its creation on."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
