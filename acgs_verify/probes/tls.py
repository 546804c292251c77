"""Certificates: PEM files (TLS-01) and live TLS endpoints (TLS-02), with `cryptography` and `ssl`, no openssl.

>>> chain = certificate_file("/etc/ssl/acgs/cert.pem", host_files(pool, proxy_1))   # read on proxy-1
>>> [(c.subject, round(c.days_left())) for c in chain]
[('CN=acgs.internal', 61), ('CN=ACGS Internal CA', 3641)]
>>> ep = endpoint("https://acgs.internal:443", ca_file=None, timeout=3)
>>> ep.verified, ep.error, ep.leaf.days_left()
(False, 'certificate verify failed: certificate has expired', -2.1)
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from acgs_verify.errors import ProbeError
from acgs_verify.hosts import reach
from acgs_verify.probes.bounded import read_regular
from acgs_verify.probes.hostfiles import Files, local_files
from acgs_verify.redact import one_line

MAX_PEM_BYTES = 1 << 20
MAX_CA_BYTES = 8 << 20  # a CA bundle: the system's is ~200 KiB


@dataclass(frozen=True)
class CertInfo:
    subject: str
    issuer: str
    not_after: dt.datetime
    names: tuple[str, ...]  # subjectAltName DNS names and IP addresses

    def days_left(self, now: dt.datetime | None = None) -> float:
        return (self.not_after - (now or dt.datetime.now(dt.UTC))).total_seconds() / 86400

    def describe(self) -> str:
        return f"{self.subject} (Not After {self.not_after:%Y-%m-%d %H:%M} UTC, {self.days_left():.1f} days left)"


def _info(cert) -> CertInfo:
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(str(n) for n in san.get_values_for_type(x509.DNSName)) + tuple(
            str(n) for n in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        names = ()
    return CertInfo(cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), cert.not_valid_after_utc, names)


def certificate_file(path: str | Path, files: Files | None = None) -> list[CertInfo]:
    """Every certificate in a PEM file, leaf first (the chain after it), read on the host `files` reads (this
    machine when None). ProbeError if there is none."""
    from cryptography import x509

    path = Path(path)
    # the profile names the file, so a symlink to it is followed; a FIFO or a device is refused, never read
    data = (files or local_files()).read(str(path), MAX_PEM_BYTES)
    if not data.strip():
        raise ProbeError(f"{path} is empty: no certificate to read an expiry from")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ProbeError(f"{path}: no readable PEM certificate ({one_line(exc)})") from None
    if not certs:  # nothing read is no evidence of a valid certificate
        raise ProbeError(f"{path}: no PEM certificate in the file")
    return [_info(c) for c in certs]


def soonest(chain: list[CertInfo]) -> tuple[int, CertInfo]:
    """The certificate of a chain that expires first, and its position (0 = the leaf)."""
    i = min(range(len(chain)), key=lambda k: chain[k].not_after)
    return i, chain[i]


@dataclass
class Endpoint:
    url: str
    verified: bool
    error: str | None  # why verification failed (expired, untrusted, name mismatch), None when it passed
    leaf: CertInfo
    version: str


def endpoint(url: str, ca_file: str | None, timeout: float) -> Endpoint:
    """Handshake with url's host:port, verifying the chain (system CAs, or ca_file) and the name.

    When verification fails the handshake is made again without it, only to read the certificate that was
    served (so the message can say what it was and when it expires). ProbeError if nothing answers TLS.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or 443
    reach.gate(host, port, kind="tls", target=url)  # a host found down: at once, not after the handshake's timeout
    try:
        ctx = ssl.create_default_context(cadata=_ca_der(ca_file)) if ca_file else ssl.create_default_context()
    except (OSError, ssl.SSLError) as exc:
        raise ProbeError(f"cannot load the CA file {ca_file}: {exc}") from None
    try:
        der, version = _handshake(ctx, host, port, timeout)
        error = None
    except ssl.SSLCertVerificationError as exc:
        error = f"certificate verify failed: {exc.verify_message}"
        bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        bare.check_hostname = False
        bare.verify_mode = ssl.CERT_NONE
        try:
            der, version = _handshake(bare, host, port, timeout)
        except (OSError, ssl.SSLError) as again:
            raise ProbeError(f"{host}:{port}: {error}; and then: {again}") from None
    except ssl.SSLError as exc:
        raise ProbeError(f"{host}:{port}: TLS handshake failed: {exc.reason or exc}") from None
    except OSError as exc:
        raise ProbeError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
    from cryptography import x509

    return Endpoint(url, error is None, error, _info(x509.load_der_x509_certificate(der)), version)


def _ca_der(ca_file: str) -> bytes:
    """The CA file's certificates as DER, read here rather than by OpenSSL, which would open a FIFO and wait for
    a writer forever, or read a device without end."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    data = read_regular(ca_file, MAX_CA_BYTES)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ProbeError(f"cannot load the CA file {ca_file}: no readable PEM certificate ({one_line(exc)})") from None
    return b"".join(c.public_bytes(Encoding.DER) for c in certs)


def _handshake(ctx: ssl.SSLContext, host: str, port: int, timeout: float) -> tuple[bytes, str]:
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        with ctx.wrap_socket(sock, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
            if not der:
                raise ssl.SSLError("the server sent no certificate")
            return der, tls.version() or "?"
