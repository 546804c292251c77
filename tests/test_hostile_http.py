"""Service checks against HTTP servers that misbehave: each is one failed check with a clear reason,
within its timeout, with memory bounded."""

from __future__ import annotations

import json
import resource
import time
from contextlib import ExitStack

from tests.conftest import run_cli
from tests.hostile import HostileServer

TIMEOUT = 1.5


def test_misbehaving_servers_fail_clearly_and_in_time(tmp_path):
    modes = {"hang": "http", "drip": "http", "huge": "http", "badjson": "http", "redirect": "http",
             "tlsstall": "https"}
    with ExitStack() as stack:
        ports = {m: stack.enter_context(HostileServer("hang" if m == "tlsstall" else m)) for m in modes}
        services = "\n".join(
            f"  - {{name: {m}, port: {ports[m]}, scheme: {scheme}, ready_path: /health/ready}}"
            for m, scheme in modes.items())
        profile = tmp_path / "hostile.yaml"
        profile.write_text(f"hosts: [{{name: h, address: 127.0.0.1}}]\nservices:\n{services}\n"
                           f"thresholds: {{health_timeout_seconds: {TIMEOUT}, latency_samples: 5}}\n")
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.monotonic()
        res = run_cli("run", "--profile", str(profile), "--report-dir", str(tmp_path / "r"), "--",
                      "-k", "SVC and not process and not port and not systemd and not error_rate")
        took = time.monotonic() - start
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    summary = json.loads((tmp_path / "r" / "latest" / "summary.json").read_text())
    by = {(c["id"], c["target"].split("@")[0]): c for c in summary["checks"]}

    for m in ("hang", "drip", "tlsstall"):
        assert by[("SVC-01", m)]["outcome"] == "failed"
        assert f"timed out after {TIMEOUT:g} s" in by[("SVC-01", m)]["message"], by[("SVC-01", m)]
        assert by[("SVC-01", m)]["duration"] < TIMEOUT + 1.0
        assert by[("SVC-06", m)]["duration"] < TIMEOUT + 1.0  # one unanswered sample decides latency
    assert "body larger than" in by[("SVC-02", "huge")]["message"]
    assert "body is not JSON" in by[("SVC-02", "badjson")]["message"]
    assert "HTTP 302" in by[("SVC-01", "redirect")]["message"]
    assert "redirect to /health" in by[("SVC-01", "redirect")]["message"]
    # six servers, four checks each, plus readiness: bounded by the timeouts, not by what the servers do
    assert took < 6 * 4 * (TIMEOUT + 0.5), took
    assert max(before, peak_kb) < 400_000, peak_kb  # KiB: the 1 GiB body was never buffered
