"""Stale or failed runs are visible to Prometheus: every run, one that exits 3 included, sets
acgs_verify_last_run_exit_code and acgs_verify_last_run_timestamp_seconds in its --metrics-file, and the shipped
alert rules (deploy/prometheus/acgs-verify-rules.yml) pass promtool's checks and their own unit tests."""

from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from acgs_verify.report.prometheus import render_metrics
from acgs_verify.results import INTERRUPTED, CheckResult, RunResult
from tests.conftest import REPO, run_cli

RULES = REPO / "deploy" / "prometheus" / "acgs-verify-rules.yml"
RULES_TESTS = REPO / "tests" / "data" / "prometheus" / "acgs-verify-rules.test.yml"
UNIT = REPO / "deploy" / "systemd" / "acgs-verify-compliance.service"


def promtool(*args: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed here (Debian: apt-get install prometheus)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, cwd=REPO)


def samples(text: str) -> dict[str, list]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


# an earlier run's file: a healthy run with its checks, as node_exporter would keep serving it
EARLIER = render_metrics(RunResult("r0", "production", "compliance", "2025-06-01T02:30:00+00:00", duration=5.0, checks=[
    CheckResult("checks/test_x.py::t", "SVC-01", "services", "P0", "t", "auth@app-1")]))


# -------------------------------------------------------------------------------------------- the rules


def test_the_shipped_rules_pass_promtool_check_rules():
    res = promtool("check", "rules", str(RULES))
    assert res.returncode == 0 and "SUCCESS: 4 rules found" in res.stdout, res.stdout + res.stderr


def test_the_shipped_rules_fire_as_their_unit_tests_say():
    res = promtool("test", "rules", str(RULES_TESTS))
    assert res.returncode == 0 and "SUCCESS" in res.stdout, res.stdout + res.stderr


def test_the_rules_name_the_series_every_run_writes():
    text = RULES.read_text()
    for series in ("acgs_verify_check_success", "acgs_verify_check_waived", "acgs_verify_last_run_exit_code",
                   "acgs_verify_last_run_timestamp_seconds"):
        assert series in text, series
    readme = (REPO / "deploy" / "README.md").read_text()
    assert "prometheus/acgs-verify-rules.yml" in readme and "acgs_verify_last_run_exit_code" in readme


# ------------------------------------------------------------------------------------ runs that exit 3


@pytest.mark.parametrize("args", [
    ["--profile", "no-such-profile"],                    # a bad profile
    ["--no-such-option", "--profile", "production"],     # a bad option: argparse refuses the line
    ["--gate", "lunch"],                                  # an unknown gate
], ids=["bad-profile", "bad-option", "unknown-gate"])
def test_a_run_that_cannot_run_still_sets_its_exit_code_and_time(tmp_path, args):
    metrics = tmp_path / "acgs.prom"
    metrics.write_text(EARLIER)
    before = time.time()
    res = run_cli("run", *args, "--metrics-file", str(metrics), "--report-dir", str(tmp_path / "r"))
    assert res.returncode == 3, res.stdout + res.stderr
    found = samples(metrics.read_text())
    (code,) = found["acgs_verify_last_run_exit_code"]
    (ended,) = found["acgs_verify_last_run_timestamp_seconds"]
    assert code.value == 3 and ended.value >= before - 1, metrics.read_text()
    assert "acgs_verify_check_success" not in found  # the earlier run's checks are not served as this run's
    assert code.labels["profile"] == ("no-such-profile" if "no-such-profile" in args else
                                      "production" if "production" in args else "sandbox")
    assert not (tmp_path / "r").exists()  # still nothing else created for a run that cannot start
    if shutil.which("promtool"):
        res = subprocess.run(["promtool", "check", "metrics"], input=metrics.read_text(), capture_output=True,
                             text=True, timeout=60)
        assert res.returncode == 0, res.stdout + res.stderr


def test_a_run_that_collects_nothing_sets_exit_code_3_and_no_check_series(write_profile, tmp_path):
    metrics = tmp_path / "acgs.prom"
    metrics.write_text(EARLIER)
    profile = write_profile("services: [{name: auth, port: 8016}]\nname: tiny\n")
    res = run_cli("run", "--profile", str(profile), "--metrics-file", str(metrics),
                  "--report-dir", str(tmp_path / "r"), "--", "-k", "NO-SUCH-CHECK")
    assert res.returncode == 3, res.stdout + res.stderr
    found = samples(metrics.read_text())
    assert [s.value for s in found["acgs_verify_last_run_exit_code"]] == [3]
    assert found["acgs_verify_last_run_exit_code"][0].labels == {"profile": "tiny", "gate": "compliance"}
    assert set(found) == {"acgs_verify_last_run_exit_code", "acgs_verify_last_run_timestamp_seconds"}


def test_an_unwritable_metrics_file_is_refused_up_front(tmp_path):
    res = run_cli("run", "--metrics-file", str(tmp_path / "no-such-dir" / "acgs.prom"))
    assert res.returncode == 3 and "--metrics-file" in res.stderr and "Traceback" not in res.stderr


# ------------------------------------------------------------------------------------------ the writer


def _check(id_: str, severity: str, outcome: str, **kw) -> CheckResult:
    return CheckResult(f"checks/test_x.py::t[{id_}]", id_, "services", severity, "t", "auth@app-1",
                       outcome=outcome, **kw)


def test_an_interrupted_run_says_exit_3_with_the_checks_that_finished():
    result = RunResult("r1", "production", "compliance", "2026-01-01T00:00:00+00:00", complete=False, checks=[
        _check("SVC-01", "P0", "passed"), _check("SVC-02", "P0", INTERRUPTED)])
    found = samples(render_metrics(result))
    assert [s.value for s in found["acgs_verify_last_run_exit_code"]] == [3]
    assert [s.labels["id"] for s in found["acgs_verify_check_success"]] == ["SVC-01"]


def test_a_waived_failure_is_marked_so_the_rules_leave_it_out():
    result = RunResult("r1", "production", "compliance", "2026-01-01T00:00:00+00:00", checks=[
        _check("BK-01", "P1", "failed", waived={"reason": "r", "owner": "o", "expires": "2099-01-01"}),
        _check("SVC-01", "P0", "failed")])
    text = render_metrics(result)
    found = samples(text)
    assert [(s.labels["id"], s.value) for s in found["acgs_verify_check_waived"]] == [("BK-01", 1)]
    assert {s.labels["id"]: s.value for s in found["acgs_verify_check_success"]} == {"BK-01": 0, "SVC-01": 0}
    assert not re.search(r"^acgs_verify_exit_code", text, re.M)  # renamed: acgs_verify_last_run_exit_code


# ------------------------------------------------------------------------------------------ the unit


def test_the_timer_unit_has_the_run_write_the_metrics_whatever_its_end():
    """ExecStartPost is skipped when the run exits 3, which left node_exporter serving the last run's metrics: the run
    writes them itself, into the textfile directory the unit lets it write."""
    text = re.sub(r"\\\n\s*", " ", UNIT.read_text())  # continuation lines joined, as systemd reads them
    settings = re.findall(r"^(\w+)=(.*)", text, re.M)
    exec_start = " ".join(v for k, v in settings if k == "ExecStart")
    assert "--metrics-file /var/lib/node_exporter/textfile/acgs.prom" in exec_start, exec_start
    assert not [k for k, _ in settings if k == "ExecStartPost"]
    writable = " ".join(v for k, v in settings if k == "ReadWritePaths").split()
    assert "/var/lib/node_exporter/textfile" in writable
