"""Transport security by default: an endpoint the run cannot verify fails, unless the profile trusts its CA;
turning verification off takes an explicit profile field and prints a warning line."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli
from tests.tlsserver import TlsHealthServer, make_ca_and_cert


@pytest.fixture(scope="module")
def https_service(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    ca, cert, key = make_ca_and_cert(d)
    with TlsHealthServer(cert, key) as port:
        yield port, ca


def run_health(tmp_path, port, tls: str = ""):
    profile = tmp_path / "p.yaml"
    profile.write_text(f"hosts: [{{name: h}}]\nservices: [{{name: api, port: {port}, scheme: https}}]\n{tls}")
    res = run_cli("run", "--profile", str(profile), "--report-dir", str(tmp_path / "r"), "--", "-k", "SVC-01")
    summary = json.loads((tmp_path / "r" / "latest" / "summary.json").read_text())
    (c,) = summary["checks"]
    return res, c


def test_untrusted_certificate_fails_by_default(tmp_path, https_service):
    res, c = run_health(tmp_path, https_service[0])
    assert res.returncode == 2 and c["outcome"] == "failed"
    assert "certificate verify failed" in c["message"].lower(), c["message"]
    assert "WARNING" not in res.stderr


def test_profile_ca_file_makes_it_trusted(tmp_path, https_service):
    port, ca = https_service
    res, c = run_health(tmp_path, port, f"tls: {{ca_file: {ca}}}\n")
    assert res.returncode == 0 and c["outcome"] == "passed", c


def test_turning_verification_off_is_explicit_and_warned(tmp_path, https_service):
    res, c = run_health(tmp_path, https_service[0], "tls: {verify: false}\n")
    assert res.returncode == 0 and c["outcome"] == "passed"
    warnings = [line for line in res.stderr.splitlines() if line.startswith("acgs-verify: WARNING:")]
    assert len(warnings) == 1 and "tls.verify" in warnings[0], res.stderr
