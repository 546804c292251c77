"""Checks against servers that misbehave (HTTP services, a Redis answering garbage, a TLS handshake that stalls):
each is one failed check with a clear reason, ended by its timeout, with memory bounded; never a hang or a
traceback."""

from __future__ import annotations

import json
import resource
from contextlib import ExitStack

from tests.conftest import run_cli
from tests.hostile import HostileServer

# The timeout each check gets: about a dozen checks wait it out, so it is short, yet several times the slowest
# loopback answer seen on a loaded shared machine (the huge, badjson and redirect servers must answer within it),
# and a few times hostile.DRIP_INTERVAL: `drip` sends bytes all along, so only a deadline for the whole request ends it.
TIMEOUT = 0.6


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
        res = run_cli("run", "--profile", str(profile), "--report-dir", str(tmp_path / "r"), "--",
                      "-k", "SVC and not process and not port and not systemd and not error_rate", timeout=180)
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    summary = json.loads((tmp_path / "r" / "latest" / "summary.json").read_text())
    by = {(c["id"], c["target"].split("@")[0]): c for c in summary["checks"]}

    for m in ("hang", "drip", "tlsstall"):
        assert by[("SVC-01", m)]["outcome"] == "failed"
        assert f"timed out after {TIMEOUT:g} s" in by[("SVC-01", m)]["message"], by[("SVC-01", m)]
        # one unanswered sample decides latency: no p99 over it, could not measure
        assert by[("SVC-06", m)]["outcome"] == "error", by[("SVC-06", m)]
    assert "body larger than" in by[("SVC-02", "huge")]["message"]
    assert "body is not JSON" in by[("SVC-02", "badjson")]["message"]
    assert "HTTP 302" in by[("SVC-01", "redirect")]["message"]
    assert "redirect to /health" in by[("SVC-01", "redirect")]["message"]
    assert max(before, peak_kb) < 400_000, peak_kb  # KiB: the 1 GiB body was never buffered


def _one_check_against(tmp_path, mode: str, profile_text: str, check_id: str) -> dict:
    """Run only `check_id` with the profile `profile_text` (its `{port}` filled with the HostileServer in `mode`);
    assert the run failed (exit 2) without a traceback and return the one check's result, already failed."""
    with HostileServer(mode) as port:
        profile = tmp_path / "p.yaml"
        profile.write_text(profile_text.replace("{port}", str(port)))
        res = run_cli("run", "--profile", str(profile), "--report-dir", str(tmp_path / "r"), "--", "-k", check_id,
                      timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    (c,) = json.loads((tmp_path / "r" / "latest" / "summary.json").read_text())["checks"]
    assert c["id"] == check_id and c["outcome"] == "failed"
    return c


def test_redis_answering_garbage_is_one_clear_failure(tmp_path):
    c = _one_check_against(tmp_path, "garbage", "hosts: [{name: h}]\nredis: [{name: junk, url: "
                           "'redis://127.0.0.1:{port}/0'}]\nthresholds: {redis_timeout_seconds: 1}\n", "RD-01")
    assert "junk" in c["message"] and len(c["message"].splitlines()) == 1, c["message"]


def test_tls_endpoint_whose_handshake_stalls_fails_within_the_timeout(tmp_path):
    c = _one_check_against(tmp_path, "hang", "hosts: [{name: h}]\ntls_endpoints: ['https://127.0.0.1:{port}']\n"
                           f"thresholds: {{connect_timeout_seconds: {TIMEOUT}}}\n", "TLS-02")
    assert "timed out" in c["message"].lower(), c["message"]
