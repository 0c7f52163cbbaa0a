"""TLS on every server and its clients, from PEM files in the settings (docs/security.md).

A server serves TLS when tls_cert_file (with tls_key_file) is set; with tls_client_auth=require it
accepts only clients presenting a certificate signed by tls_ca_file (mutual TLS). A client speaks TLS
when any TLS file is set: it verifies the server against tls_ca_file (the system's roots when empty)
and presents tls_client_cert_file / tls_client_key_file when set. The files are read and checked when a
server or a channel is made, so a wrong setting stops the process with one line naming the variable
and the file, instead of failing every handshake later with a vague UNAVAILABLE.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from core.config import Settings
from core.service_auth import is_loopback

log = logging.getLogger(__name__)

CLIENT_AUTH_MODES = ("off", "require")
ENV = {  # setting -> its environment variable, for the messages
    "tls_cert_file": "RECSYS_TLS_CERT_FILE",
    "tls_key_file": "RECSYS_TLS_KEY_FILE",
    "tls_ca_file": "RECSYS_TLS_CA_FILE",
    "tls_client_cert_file": "RECSYS_TLS_CLIENT_CERT_FILE",
    "tls_client_key_file": "RECSYS_TLS_CLIENT_KEY_FILE",
}
Options = Sequence[tuple[str, Any]] | None


class TlsConfigError(ValueError):
    """A TLS setting that cannot work; the message names the variable and the file."""


@dataclass(frozen=True)
class ServerTls:
    credentials: grpc.ServerCredentials
    client_auth: bool  # client certificates required


def configured(settings: Settings) -> bool:
    """Whether any TLS file is set: clients then speak TLS."""
    return any(getattr(settings, name) for name in ENV)


def check(settings: Settings) -> None:
    """The settings' combination is one that can work (the files themselves are read when used)."""
    if settings.tls_client_auth not in CLIENT_AUTH_MODES:
        raise TlsConfigError(f"RECSYS_TLS_CLIENT_AUTH={settings.tls_client_auth!r}: use off or require")
    _both(settings, "tls_cert_file", "tls_key_file")
    _both(settings, "tls_client_cert_file", "tls_client_key_file")
    if settings.tls_client_auth == "require":
        for name, why in (("tls_ca_file", "the CA that must have signed a client's certificate"),
                          ("tls_cert_file", "client certificates are checked over TLS only"),
                          ("tls_client_cert_file", "the stack's own clients (the orchestrator, health checks, "
                                                   "the CLI) present it")):
            if not getattr(settings, name):
                raise TlsConfigError(f"RECSYS_TLS_CLIENT_AUTH=require needs {ENV[name]} ({why})")


def server_tls(settings: Settings) -> ServerTls | None:
    """A server's TLS credentials; None = plaintext (no TLS file set). Raises TlsConfigError."""
    check(settings)
    if not settings.tls_cert_file:
        given = next((name for name in ENV if getattr(settings, name)), None)
        if given is not None:  # its clients would speak TLS to a plaintext server: nothing would connect
            raise TlsConfigError(f"{ENV[given]}={getattr(settings, given)} is set but RECSYS_TLS_CERT_FILE is not: "
                                 "a server needs RECSYS_TLS_CERT_FILE and RECSYS_TLS_KEY_FILE to serve TLS")
        return None
    chain, key = _pair(settings, "tls_cert_file", "tls_key_file")
    require = settings.tls_client_auth == "require"
    roots = _certificates(settings, "tls_ca_file") if require else None
    return ServerTls(grpc.ssl_server_credentials([(key, chain)], root_certificates=roots,
                                                 require_client_auth=require), require)


def channel_credentials(settings: Settings) -> grpc.ChannelCredentials | None:
    """A client's TLS credentials; None = plaintext. Raises TlsConfigError."""
    check(settings)
    if not configured(settings):
        return None
    roots = _certificates(settings, "tls_ca_file") if settings.tls_ca_file else None
    chain = key = None
    if settings.tls_client_cert_file:
        chain, key = _pair(settings, "tls_client_cert_file", "tls_client_key_file")
    return grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=chain)


def channel(addr: str, settings: Settings, options: Options = None) -> grpc.Channel:
    """A blocking channel to addr: TLS when the settings configure it, plaintext otherwise."""
    credentials = channel_credentials(settings)
    if credentials is None:
        return grpc.insecure_channel(addr, options=options)
    return grpc.secure_channel(addr, credentials, options=options)


def aio_channel(addr: str, settings: Settings, options: Options = None,
                interceptors: Sequence[grpc.aio.ClientInterceptor] | None = None) -> grpc.aio.Channel:
    """An asyncio channel to addr: TLS when the settings configure it, plaintext otherwise."""
    credentials = channel_credentials(settings)
    if credentials is None:
        return grpc.aio.insecure_channel(addr, options=options, interceptors=interceptors)
    return grpc.aio.secure_channel(addr, credentials, options=options, interceptors=interceptors)


class AddressInUse(RuntimeError):
    """A server cannot bind its address (another process listens there)."""


def listen(server: grpc.aio.Server, addr: str, tls: ServerTls | None) -> None:
    """Bind addr, with TLS when given, and say in the log which it is."""
    if tls is None:
        port = server.add_insecure_port(addr)
        if port and not is_loopback(addr):
            log.warning("plaintext gRPC on %s, which is not a loopback address: API keys, the service token and "
                        "every answer cross the network unencrypted (set RECSYS_TLS_CERT_FILE and "
                        "RECSYS_TLS_KEY_FILE, docs/security.md)", addr)
    else:
        port = server.add_secure_port(addr, tls.credentials)
        if port:
            log.info("TLS on %s (client certificates %s)", addr, "required" if tls.client_auth else "not required")
    if port == 0:
        raise AddressInUse(f"cannot listen on {addr}: address in use?")


def _both(settings: Settings, cert: str, key: str) -> None:
    for given, missing in ((cert, key), (key, cert)):
        if getattr(settings, given) and not getattr(settings, missing):
            raise TlsConfigError(f"{ENV[given]}={getattr(settings, given)} is set but {ENV[missing]} is not: "
                                 "set both (a certificate chain and its private key, PEM)")


def _read(settings: Settings, name: str) -> bytes:
    path = getattr(settings, name)
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"{ENV[name]}={path}: cannot read it ({exc.strerror or exc})") from None


def _certificates(settings: Settings, name: str) -> bytes:
    data = _read(settings, name)
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TlsConfigError(f"{ENV[name]}={getattr(settings, name)}: no PEM certificate in it") from None
    return data


def _pair(settings: Settings, cert: str, key: str) -> tuple[bytes, bytes]:
    """(certificate chain, private key), checked to belong together: gRPC would only fail the handshakes."""
    chain = _certificates(settings, cert)
    data = _read(settings, key)
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):  # TypeError: it is encrypted
        raise TlsConfigError(f"{ENV[key]}={getattr(settings, key)}: not an unencrypted PEM private key") from None
    leaf = x509.load_pem_x509_certificates(chain)[0]  # the first certificate is the server's (or client's) own
    if _public_der(leaf.public_key()) != _public_der(private.public_key()):
        raise TlsConfigError(f"{ENV[key]}={getattr(settings, key)}: not the key of the certificate in "
                             f"{ENV[cert]}={getattr(settings, cert)}")
    return chain, data


def _public_der(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
