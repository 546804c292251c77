"""Certificates the services name or the runbook's folder holds, the CA among them, and the TLS ports that hand
out one of them.

>>> find_certificates(reader, services)   # reader.found.certificates, .tls_ca, .tls_endpoints
"""

from __future__ import annotations

import re
import socket
import ssl

from acgs_verify.discover.cmdline import HTTP_TIMEOUT, bracket, connect_address
from acgs_verify.discover.model import Item
from acgs_verify.discover.reader import HostReader
from acgs_verify.hosts.commands import operand

CERT_DIR, HTTPS_PORT = "/etc/ssl/acgs", 443


def find_certificates(reader: HostReader, services: list) -> None:
    found = reader.found
    named: dict[str, str] = {}
    for s in services:
        env = reader.proc_details(s.proc.pid)["env"]
        if isinstance(env, dict):
            for k, v in env.items():
                path = reader.absolute(s.proc.pid, v)
                if path and v.endswith((".pem", ".crt")) and not path.startswith(("/etc/ssl/certs", "/usr/")):
                    named.setdefault(path, f"{k} of pid {s.proc.pid}")
    for d in dict.fromkeys(([reader.prefix + CERT_DIR] if reader.prefix else []) + [CERT_DIR]):
        for p in sorted(reader.names("find", operand(d), "-maxdepth", 1, "-type", "f", "(", "-name", "*.pem", "-o",
                                     "-name", "*.crt", ")", "-print0")):
            named.setdefault(p, f"found under {d}")
    leaves: dict[str, bytes] = {}
    for path, why in named.items():
        der, is_ca = _first_cert(reader, path)
        if der is None:
            continue
        if is_ca:
            if found.tls_ca is None:
                found.tls_ca = Item({"ca_file": path}, [f"a CA certificate ({why})"])
            continue
        leaves[path] = der
        found.certificates.append(Item({"path": path}, [f"a server certificate ({why})"]))
    _tls_endpoints(reader, leaves)


def _first_cert(reader: HostReader, path: str) -> tuple[bytes | None, bool]:
    rc, text = reader.sh("head", "-c", 65536, "--", operand(path), sudo=True)
    m = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.S) if rc == 0 else None
    if not m:
        return None, False
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(m.group(0).encode())
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        from cryptography.hazmat.primitives.serialization import Encoding

        return cert.public_bytes(Encoding.DER), is_ca
    except ValueError:
        return None, False


def _tls_endpoints(reader: HostReader, leaves: dict[str, bytes]) -> None:
    """A port serves TLS here when its owner's command line names one of the certificate files (or it is the
    runbook's 443) and the certificate it hands out is that file's."""
    if not leaves:
        return
    for lis in reader.listeners():
        port, owners = lis.port, lis.owners
        if not (any(p in o.args for o in owners for p in leaves) or port == HTTPS_PORT + reader.offset):
            continue
        address = connect_address(lis.addresses) if reader.host.backend == "local" else reader.host.address
        served = served_cert(address, port)
        match = next((p for p, der in leaves.items() if der == served), None)
        if match:
            owner = f"pid {owners[0].pid} " if owners else ""
            reader.found.tls_endpoints.append(Item({"url": f"https://{bracket(address)}:{port}"},
                                                   [f"{owner}serves {match} on {port}"]))


def served_cert(address: str, port: int) -> bytes | None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((address, port), timeout=HTTP_TIMEOUT) as raw, \
                ctx.wrap_socket(raw, server_hostname=address) as tls:
            return tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
