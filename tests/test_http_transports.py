"""What the HTTP probe does not load: httpx's command line (click, pygments, rich), and for a plain http:// GET the
verifying TLS context (the CA bundle, 30-150 ms), built at the first https:// GET, which still verifies against the
profile's CA or the default bundle."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from acgs_verify.probes.http import HttpProbe
from tests.servers import http_answering
from tests.tlsserver import TlsHealthServer, make_ca_and_cert

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def http_port():
    with http_answering({}, default=(200, b'{"status": "ok"}')) as port:
        yield port


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    ca, cert, key = make_ca_and_cert(tmp_path_factory.mktemp("tls"))
    with TlsHealthServer(cert, key) as port:
        yield ca, port


def test_a_plain_http_get_builds_no_verifying_context(http_port, tls):
    # in a process of its own, counting ssl.create_default_context calls (how httpx loads the CA bundle); httpx's
    # command line (click, pygments, rich) is not imported either
    _, tls_port = tls
    code = ("import ssl, sys\nfrom acgs_verify.probes.http import HttpProbe\n"
            "made = []\nreal = ssl.create_default_context\n"
            "ssl.create_default_context = lambda *a, **k: made.append(1) or real(*a, **k)\n"
            "probe = HttpProbe()\n"
            f"plain = probe.get('http://127.0.0.1:{http_port}/health', timeout=5)\n"
            "print(plain.status, len(made), 'click' in sys.modules, 'pygments' in sys.modules)\n"
            f"probe.get('https://127.0.0.1:{tls_port}/health', timeout=5)\n"
            f"probe.get('https://127.0.0.1:{tls_port}/health', timeout=5)\n"
            "print(len(made))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    # no context for http://, one at the first https://
    assert out.stdout.split() == ["200", "0", "False", "False", "1"], out.stdout + out.stderr


def test_an_https_get_verifies_against_the_ca_it_is_given(tls):
    ca, port = tls
    probe = HttpProbe(verify=str(ca))
    try:
        reply = probe.get(f"https://127.0.0.1:{port}/health", timeout=5)
    finally:
        probe.close()
    assert reply.error is None and reply.status == 200, reply.describe()


def test_an_https_get_refuses_a_certificate_from_an_unknown_ca(tls, http_port):
    _, port = tls
    probe = HttpProbe()  # the default bundle, which does not hold the test CA
    try:
        plain = probe.get(f"http://127.0.0.1:{http_port}/health", timeout=5)  # the plain transport first
        reply = probe.get(f"https://127.0.0.1:{port}/health", timeout=5)
    finally:
        probe.close()
    assert plain.status == 200, plain.describe()
    assert reply.status is None and "certificate verify failed" in reply.error, reply.describe()
