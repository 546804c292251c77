"""A small HTTPS endpoint: /health over TLS with a given certificate, for TLS-02 (and the tests).

    python -m acgs_verify.sandbox.tls_server CERT KEY PORT       # on 127.0.0.1 until SIGTERM

The handshake happens in each connection's own thread, so a client that connects and says nothing (or
rejects the certificate) holds up no one else.
"""

from __future__ import annotations

import json
import signal
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from acgs_verify.sandbox.constants import CONSTITUTIONAL_HASH as HASH


class HealthHandler(BaseHTTPRequestHandler):
    timeout = 10

    def do_GET(self):  # noqa: N802 (http.server's naming)
        body = json.dumps({"status": "healthy", "constitutional_hash": HASH}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Constitutional-Hash", HASH)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client that rejected our certificate is what some checks are about, not an error here


def make_server(cert: Path, key: Path, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    httpd = _Server((host, port), HealthHandler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
    return httpd


def main(argv: list[str]) -> int:
    if len(argv) != 3 or not argv[2].isdigit():
        print(__doc__, file=sys.stderr)
        return 2
    httpd = make_server(Path(argv[0]), Path(argv[1]), "127.0.0.1", int(argv[2]))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening on 127.0.0.1:{argv[2]}", flush=True)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
