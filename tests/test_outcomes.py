"""Outcomes that tell the truth: a check that could not measure is `error`, apart from `failed` (measured, and
wrong), in every output; its next step is the reach step for its target from the profile's own values, never the
runbook's repair; a reachability check whose own target refuses is a measured `failed`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from acgs_verify.check import outcome_of, reach_step_for
from acgs_verify.errors import ProbeError, Unreachable
from acgs_verify.profile import load_profile
from acgs_verify.report.allure import write_results
from acgs_verify.report.prometheus import render_metrics
from acgs_verify.results import CheckResult, RunResult
from acgs_verify.targets import TARGET_KINDS
from tests.conftest import run_cli
from tests.servers import closed_port


def _check(id_: str, target: str, outcome: str, severity: str = "P0", **kw) -> CheckResult:
    return CheckResult(nodeid=f"checks/test_x.py::t[{id_}-{target}]", id=id_, section="services", severity=severity,
                       title="t", target=target, outcome=outcome, **kw)


def _result(checks) -> RunResult:
    return RunResult("r1", "p", "compliance", "2026-01-01T00:00:00+00:00", duration=1.0, checks=checks)


# ------------------------------------------------------------------------- a run against real servers


def test_a_refused_redis_is_failed_for_rd01_and_could_not_measure_with_its_reach_step_for_the_others(tmp_path):
    with closed_port() as port:  # bound, not listening: refused at once
        profile = tmp_path / "p.yaml"
        profile.write_text(f"name: refused\nhosts: [{{name: app-1, roles: [cache]}}]\n"
                           f"redis: [{{name: gone, url: 'redis://127.0.0.1:{port}/0'}}]\n")
        res = run_cli("run", "--profile", str(profile), "--report-dir", str(tmp_path / "r"), "--",
                      "-k", "RD-01 or RD-02")
    summary = json.loads((tmp_path / "r" / "latest" / "summary.json").read_text())
    by = {c["id"]: c for c in summary["checks"]}
    # RD-01 is for Redis answering PING: a refusal is what it measures, and its step is the runbook's repair
    assert by["RD-01"]["outcome"] == "failed" and "refused" in by["RD-01"]["message"].lower(), by["RD-01"]
    assert "restore the connection" not in by["RD-01"]["next_step"], by["RD-01"]
    # RD-02 measures round trips: it could not measure, and its step restores the reach
    assert by["RD-02"]["outcome"] == "error", by["RD-02"]
    step = f"restore the connection to gone, then run again: `redis-cli -h 127.0.0.1 -p {port} ping`"
    assert by["RD-02"]["next_step"] == step and by["RD-02"]["message"].endswith(f"Next: {step}")
    assert (summary["totals"]["failed"], summary["totals"]["errors"]) == (1, 1) and res.returncode == 2
    last = res.stdout.strip().splitlines()[-1]
    assert "1 of 2 checks failed (P0: 1), 1 could not measure (" in last and " failed=1 errors=1 " in last, last
    assert "ERROR P2 RD-02[gone]" in res.stdout and "FAIL P0 RD-01[gone]" in res.stdout


# --------------------------------------------------------------------------------- the mapping, as data


@pytest.fixture(scope="module")
def targets(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("p") / "p.yaml"
    path.write_text("""
name: reach
hosts:
  - {name: app-2, address: 127.0.0.9, backend: ssh, user: acgs, port: 2222, roles: [app]}
  - {name: app-1, roles: [app]}
services:
  - {name: auth, port: 8016, health_path: "/health?probe=1&x=$(id)"}
databases:
  - {name: primary, dsn: "postgresql://acgs@127.0.0.7:6543/acgs_production"}
redis:
  - {name: cache, url: "rediss://127.0.0.8:6380/0"}
tls_endpoints: ["https://127.0.0.6:8443"]
""")
    profile = load_profile(str(path), resolve_secrets=False)
    found = {}
    for kind in ("service", "node", "database", "cache", "tls_endpoint"):
        for t in TARGET_KINDS[kind](profile):
            found[t.id] = t
    return found


def test_each_kind_of_target_gets_its_reach_step_from_the_profile_shell_quoted(targets):
    down = ProbeError("host unreachable: ssh: connect to host 127.0.0.9 port 2222: Connection timed out")
    assert reach_step_for(targets["app-2"], down).endswith("`ssh -v -p 2222 acgs@127.0.0.9`")
    assert reach_step_for(targets["auth@app-2"], down).endswith("`ssh -v -p 2222 acgs@127.0.0.9`")
    # the URL holds `&` and `$(id)`: quoted, so the step pasted into a shell runs curl on that URL and nothing else
    refused = ProbeError("connection refused")
    assert reach_step_for(targets["auth@app-1"], refused).endswith(
        "`curl -v 'http://127.0.0.1:8016/health?probe=1&x=$(id)'`")
    assert reach_step_for(targets["primary"], refused).endswith("`pg_isready -h 127.0.0.7 -p 6543`")
    assert reach_step_for(targets["cache"], refused).endswith("`redis-cli --tls -h 127.0.0.8 -p 6380 ping`")
    assert reach_step_for(targets["127.0.0.6:8443"], refused).endswith("`curl -v https://127.0.0.6:8443`")
    said = Unreachable("app-2", "127.0.0.9:2222 did not answer within 3 s", reach_step="`ssh -v acgs@127.0.0.9`")
    assert reach_step_for(targets["auth@app-2"], said) == \
        "restore the connection to app-2, then run again: `ssh -v acgs@127.0.0.9`"


def test_one_mapping_says_which_errors_a_reachability_check_measured(targets):
    refused = ProbeError("cannot connect: connection refused")
    assert outcome_of("DB-01", refused, targets["primary"]) == ("failed", None)
    assert outcome_of("DB-03", refused, targets["primary"]) == ("error", None)
    assert outcome_of("RD-01", ProbeError("answered garbage: b'HTTP/1.1'"), targets["cache"]) == ("failed", None)
    # the host is down: every check on it could not measure, the reachability checks too
    down = ProbeError("host unreachable: ssh: connect to host 127.0.0.9 port 2222: Connection timed out")
    assert outcome_of("SVC-04", down, targets["auth@app-2"]) == ("error", "app-2")
    # SVC-04 reads the socket table: one it cannot read is no measurement of the port
    assert outcome_of("SVC-04", ProbeError("ss: permission denied"), targets["auth@app-1"]) == ("error", None)
    assert outcome_of("SVC-01", Unreachable("app-2", "timed out"), targets["auth@app-2"]) == ("error", "app-2")
    # an address that said nothing at all: the host or the service, nobody can tell
    silent = Unreachable("127.0.0.7:6543", "did not answer within 3 s", address="127.0.0.7", port=6543)
    assert outcome_of("DB-01", silent, targets["primary"]) == ("error", "127.0.0.7:6543")
    # a probe that words it itself (a log reader naming its log) keeps the Unreachable as its context
    try:
        try:
            raise Unreachable("app-2", "127.0.0.9:2222 did not answer", reach_step="`ssh -v acgs@127.0.0.9`")
        except Unreachable as exc:
            raise ProbeError(f"log /var/log/acgs/alerts.log on app-2: {exc}") from None
    except ProbeError as worded:
        assert outcome_of("MON-01", worded, targets["app-2"]) == ("error", "app-2")
        assert reach_step_for(targets["app-2"], worded).endswith("`ssh -v acgs@127.0.0.9`")
    refused_port = Unreachable("127.0.0.1:8016", "connection refused", address="127.0.0.1", port=8016)
    assert outcome_of("SVC-01", refused_port, targets["auth@app-1"]) == ("failed", None)


# ------------------------------------------------------------------------------------ metrics and Allure


def test_metrics_say_an_error_is_no_success_and_mark_it_apart_for_alerts(tmp_path):
    r = _result([_check("SVC-01", "auth@app-1", "failed"), _check("SVC-02", "auth@app-2", "error"),
                 _check("SVC-03", "auth@app-1", "passed"), _check("SVC-04", "auth@app-3", "error",
                                                                  waived={"reason": "r", "owner": "o",
                                                                          "expires": "2099-01-01"})])
    text = render_metrics(r)
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    success = {s.labels["id"]: s.value for s in samples if s.name == "acgs_verify_check_success"}
    errors = {s.labels["id"] for s in samples if s.name == "acgs_verify_check_error"}
    counts = {s.labels["outcome"]: s.value for s in samples if s.name == "acgs_verify_checks"}
    assert success == {"SVC-01": 0, "SVC-02": 0, "SVC-03": 1, "SVC-04": 0}  # an error is not a success
    assert errors == {"SVC-02"}  # a waived one is in acgs_verify_check_waived
    assert (counts["failed"], counts["error"], counts["waived"]) == (1, 1, 1)
    if shutil.which("promtool"):
        path = tmp_path / "metrics.prom"
        path.write_text(text)
        res = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                             timeout=60)
        assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), res.stdout + res.stderr


def test_allure_says_broken_for_could_not_measure_and_failed_for_measured_wrong(tmp_path: Path):
    write_results(_result([_check("SVC-01", "auth@app-1", "failed"), _check("SVC-02", "auth@app-2", "error")]),
                  tmp_path)
    docs = [json.loads(p.read_text()) for p in tmp_path.glob("*-result.json")]
    assert {d["parameters"][0]["value"]: d["status"] for d in docs} == {"auth@app-1": "failed",
                                                                       "auth@app-2": "broken"}
