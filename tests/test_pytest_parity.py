"""`pytest checks --profile P` is "the same way" as `acgs-verify run` only if it is the same: exit codes 0/1/2/3,
the same last line, the same reports with --report-dir, and nothing written into the checkout without it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tests.runs import Run, run_pytest

# a local host and a certificate that is not there: TLS-01 (P1) fails at once, no sandbox needed
PROFILE = "hosts: [{name: here, roles: [app]}]\ncertificates: [/nonexistent/cert.pem]\n"


def plain_pytest(*args: str) -> Run:
    return run_pytest("checks", "-p", "no:cacheprovider", "-q", *args, timeout=180)


def verdict(line: str) -> str:
    return line.split(" | ")[0]


@pytest.mark.parametrize("content, expected", [("{}\n", "names no target"),
                                               ("thresholds:\n  disk_percent_max: lots\nhosts: [{name: a}]\n",
                                                "thresholds.disk_percent_max")])
def test_a_bad_profile_is_exit_3_and_one_line(tmp_path, content, expected):
    profile = tmp_path / "bad.yaml"
    profile.write_text(content)
    res = plain_pytest("--profile", str(profile))
    assert res.returncode == 3, res.stdout[-2000:] + res.stderr[-2000:]
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("acgs-verify: error: ") and expected in lines[0], res.stderr


@pytest.mark.parametrize("args, expected", [(["--gate", "lunch"], "unknown gate 'lunch'"),
                                            (["--since", "2099-01-01"], "future"),
                                            (["--set", "thresholds.db_long_query_seconds=1e400"], "--set")])
def test_bad_options_are_exit_3_and_one_line(tmp_path, args, expected):
    profile = tmp_path / "p.yaml"
    profile.write_text(PROFILE)
    res = plain_pytest("--profile", str(profile), *args)
    assert res.returncode == 3, res.stdout[-2000:] + res.stderr[-2000:]
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], res.stderr


def test_same_exit_code_last_line_and_reports_as_run(tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text(PROFILE)
    before = sorted(p.name for p in (REPO / "reports").iterdir()) if (REPO / "reports").is_dir() else []
    run = run_cli("run", "--profile", str(profile), "--report-dir", str(tmp_path / "run"), "--", "-k", "TLS-01")
    plain = plain_pytest("--profile", str(profile), "-k", "TLS-01", "--junitxml", str(tmp_path / "plain.xml"))
    assert run.returncode == plain.returncode == 2, plain.stdout[-3000:]
    assert verdict(plain.stdout.strip().splitlines()[-1]) == verdict(run.stdout.strip().splitlines()[-1])
    # the certificate file is not there: could not measure, which still closes the gate (exit 2)
    assert plain.stdout.strip().splitlines()[-1].startswith("ACGS CRITICAL - 1 of 1 checks could not measure (P1: 1)")
    after = sorted(p.name for p in (REPO / "reports").iterdir()) if (REPO / "reports").is_dir() else []
    assert after == before  # no --report-dir: nothing written into the checkout

    reports = tmp_path / "plain"
    with_reports = plain_pytest("--profile", str(profile), "-k", "TLS-01", "--report-dir", str(reports))
    assert with_reports.returncode == 2
    run_dir = (reports / "latest").resolve()
    names = {p.name for p in run_dir.iterdir()}
    assert {"summary.json", "junit.xml", "report.html", "report.md", "metrics.prom", "allure-results"} <= names
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["exit_code"] == 2 and [c["id"] for c in summary["checks"]] == ["TLS-01"]
    out = with_reports.stdout.strip().splitlines()
    assert out[-3].startswith(f"reports: {reports / run_dir.name}/") and out[-1].startswith("ACGS CRITICAL")
    assert out[-2] == "ESCALATION P1: notify Level 1 on-call engineer within 1 hour"  # as acgs-verify run says it
    assert not list(reports.glob(".partial-*"))
    # the same junit.xml as run's: our names, outcomes and counts, not pytest's xunit1
    assert junit_cases(run_dir / "junit.xml") == junit_cases(tmp_path / "run" / "latest" / "junit.xml")
    assert junit_cases(run_dir / "junit.xml")[0][:4] == ("Certificates", "TLS-01", "error", "error")
    assert junit_cases(tmp_path / "plain.xml") == junit_cases(run_dir / "junit.xml")  # --junitxml alone: ours too


def junit_cases(path: Path) -> list[tuple]:
    """Each case of a junit.xml as (classname, runbook ID, verdict element, its type, its message)."""
    import xml.etree.ElementTree as ET

    out = []
    for tc in ET.parse(path).iter("testcase"):
        found = [c for c in tc if c.tag in ("failure", "error", "skipped")] or [tc]
        out.append((tc.get("classname"), tc.get("name").split()[0], found[0].tag, found[0].get("type"),
                    found[0].get("message")))
    return out


def test_nothing_collected_is_exit_3(tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text(PROFILE)
    res = plain_pytest("--profile", str(profile), "-k", "no-such-check")
    assert res.returncode == 3, res.stdout[-2000:]
    assert res.stdout.strip().splitlines()[-1].startswith("ACGS UNKNOWN - no checks ran")


def test_the_suites_own_tests_are_left_alone(tmp_path):
    # the plugin is loaded for every pytest run (entry point): without a profile or checks, exit codes are pytest's
    test = tmp_path / "test_x.py"
    test.write_text("def test_fails():\n    assert False\n")
    res = run_pytest(str(test), "-q", "-p", "no:cacheprovider", cwd=tmp_path, timeout=60)
    assert res.returncode == 1 and "ACGS" not in res.stdout
