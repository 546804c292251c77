"""A real HTTPS health endpoint on loopback with a certificate from a throwaway CA (cryptography)."""

from __future__ import annotations

import threading
from pathlib import Path

from acgs_verify.sandbox.certs import issue, make_ca, write_key, write_pem
from acgs_verify.sandbox.tls_server import make_server


def make_ca_and_cert(dirpath: Path, host: str = "127.0.0.1", days: int = 90) -> tuple[Path, Path, Path]:
    """(ca.pem, cert.pem with the chain, key.pem) for `host`, valid for `days`."""
    ca, ca_key = make_ca("acgs-verify test CA", days=days + 10)
    cert, key = issue(ca, ca_key, [host], days=days)
    ca_pem, cert_pem, key_pem = dirpath / "ca.pem", dirpath / "cert.pem", dirpath / "key.pem"
    write_pem(ca_pem, ca)
    write_pem(cert_pem, cert, ca)
    write_key(key_pem, key)
    return ca_pem, cert_pem, key_pem


class TlsHealthServer:
    """`with TlsHealthServer(cert, key) as port:` an HTTPS /health on 127.0.0.1."""

    def __init__(self, cert: Path, key: Path, host: str = "127.0.0.1"):
        self.httpd = make_server(cert, key, host)
        self.port = self.httpd.server_address[1]

    def __enter__(self) -> int:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self.port

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
