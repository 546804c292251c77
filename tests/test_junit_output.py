"""junit.xml as Jenkins' xunit plugin (junit-10.xsd, its rules in tests/junit10.py), GitLab and GitHub read it:
every case named by its runbook ID and target, classed by its runbook section, each outcome as its element, and the
counts of the run's last line. Hand-built results here; the real runs' files are checked where those runs are made
(test_reports_sandbox: a healthy and a failing run; test_gates_sandbox: a waived and a retried run;
test_interrupted_runs: an interrupted run; test_pytest_parity: plain pytest writes what `run` writes)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from acgs_verify.report.junit import write_junit
from acgs_verify.results import in_catalog_order
from tests.junit10 import junit10_violations
from tests.test_reports_say_it_once import check, failing, run

# what pytest's junitxml (xunit1, as acgs-verify wrote it before) puts on a test case
PYTEST_XUNIT1 = ('<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests"><testsuite name="acgs-verify"'
                 ' errors="0" failures="1" skipped="0" tests="1" time="0.3" timestamp="2026-01-01T00:00:00" '
                 'hostname="vm"><testcase classname="checks.test_services" name="test_health[auth@app-1]" '
                 'file="checks/test_services.py" line="12" time="0.001"><properties>'
                 '<property name="runbook_id" value="SVC-01" /></properties><failure message="x">x</failure>'
                 '</testcase><testcase time="0.000" /></testsuite></testsuites>')


def test_the_rules_reject_what_junit_10_rejects_in_pytests_xunit1(tmp_path):
    path = tmp_path / "junit.xml"
    path.write_text(PYTEST_XUNIT1)
    found = junit10_violations(path)
    assert "testcase 'test_health[auth@app-1]': attribute 'file' not allowed" in found
    assert "testcase 'test_health[auth@app-1]': attribute 'line' not allowed" in found
    assert "testcase 'test_health[auth@app-1]': child 'properties' not allowed" in found
    assert "testcase: required attribute 'name' missing" in found  # the case a cut-off check leaves
    bad_time = tmp_path / "time.xml"
    bad_time.write_text('<testsuites time="1.5s"><testsuite name="a" tests="0" failures="0" errors="0" skipped="0"/>'
                        '</testsuites>')
    assert junit10_violations(bad_time) == ["testsuites: time='1.5s' is not a SUREFIRE_TIME"]
    extra = tmp_path / "extra.xml"
    extra.write_text('<testsuites skipped="0"><testsuite name="a" tests="0" failures="0"/></testsuites>')
    assert junit10_violations(extra) == ["testsuites: attribute 'skipped' not allowed",
                                         "testsuite 'a': required attribute 'errors' missing"]


def waived(id_="SVC-06", target="auth@app-1", outcome="failed"):
    c = failing(id_, target, "p99 180 ms", "<= 100 ms")
    c.outcome = outcome
    c.waived = {"reason": "JIT warm-up after deploy, OPS-1234", "owner": "alice", "expires": "2099-01-01"}
    return c


RUNS = {
    "healthy": lambda: run([check("SVC-01"), check("SVC-01", "api@app-1"), check("SVC-02")]),
    "failing": lambda: run([check("SVC-01"), failing("SVC-02", "auth@app-1", "hash x", "hash y"),
                            check("SVC-03", outcome="error", message="SVC-03 auth@app-1: could not measure: refused"),
                            check("BK-01", "backups", "skipped", "P1", None, message="no backups path")]),
    "waived": lambda: run([check("SVC-01"), waived(), waived("SVC-07", outcome="error")]),
    "interrupted": lambda: run([check("SVC-01"), check("SVC-06", outcome="interrupted", message="SVC-06 auth@app-1: "
                                "interrupted: the run was stopped. Next: run it again")], complete=False, planned=5),
    "gate closed": lambda: run([check("SVC-01")], gate_failures=["shard 2 of 3 missing: its hosts were not checked"]),
}


def cases_of(path):
    return list(ET.parse(path).getroot().find("testsuite").iter("testcase"))


def verdict(tc: ET.Element) -> tuple[str, str | None]:
    found = [child for child in tc if child.tag in ("failure", "error", "skipped")]
    return (found[0].tag, found[0].get("type")) if found else ("passed", None)


@pytest.mark.parametrize("kind", RUNS)
def test_junit_meets_junit_10_names_each_case_by_runbook_id_and_counts_as_the_last_line(kind, tmp_path):
    result = RUNS[kind]()
    path = tmp_path / "junit.xml"
    write_junit(result, path)
    assert junit10_violations(path) == []
    root = ET.parse(path).getroot()
    suite = root.find("testsuite")
    cases = cases_of(path)
    in_order = in_catalog_order(result.checks)
    assert [tc.get("name") for tc in cases] == [f"{c.id} {c.target}: {c.title}" for c in in_order]
    assert all(tc.get("classname") == "Service health" for tc in cases if tc.get("name").startswith("SVC"))
    t = result.totals
    errors = [tc for tc in cases if verdict(tc)[0] == "error"]
    assert int(suite.get("tests")) == t["checks"]
    # <failure>: measured, and wrong (the last line's failed); <error type="error">: could not measure (its errors)
    assert int(suite.get("failures")) == t["failed"]
    assert sum(verdict(tc)[1] == "error" for tc in errors) == t["errors"]
    assert sum(verdict(tc)[1] == "interrupted" for tc in errors) == int(suite.get("errors")) - sum(
        verdict(tc)[1] == "error" for tc in errors) == t["interrupted"]
    assert int(suite.get("skipped")) == t["skipped"] + t["waived"]
    assert {p.get("name"): p.get("value") for p in suite.iter("property")}["summary"] == result.summary_line()
    for tc in cases:  # what xunit1 kept as the case's properties, where the schema allows it
        assert tc.find("system-out").text.startswith(f"runbook_id: {tc.get('name').split()[0]}\n")
    assert int(root.get("tests")) == t["checks"] + len(result.gate_failures)


def test_each_outcome_is_its_own_element_and_a_waiver_says_why_who_and_until(tmp_path):
    path = tmp_path / "junit.xml"
    write_junit(run([check("SVC-01"), failing("SVC-02", "auth@app-1", "hash x", "hash y"),
                     check("SVC-03", outcome="error", message="SVC-03 auth@app-1: could not measure: refused"),
                     check("BK-01", "backups", "skipped", "P1", None, message="no backups path"),
                     waived(), check("SVC-04", outcome="interrupted", message="SVC-04 auth@app-1: interrupted")]),
                path)
    by_id = {tc.get("name").split()[0]: tc for tc in cases_of(path)}
    assert {k: verdict(tc) for k, tc in by_id.items()} == {
        "SVC-01": ("passed", None), "SVC-02": ("failure", "failed"), "SVC-03": ("error", "error"),
        "BK-01": ("skipped", "skipped"), "SVC-06": ("skipped", "waived"), "SVC-04": ("error", "interrupted")}
    skipped = by_id["SVC-06"].find("skipped")
    assert skipped.get("message") == "waived (failed): JIT warm-up after deploy, OPS-1234 (owner alice, expires " \
                                     "2099-01-01)"
    assert skipped.text.startswith("SVC-06 auth@app-1: measured p99 180 ms")  # what was found stays readable
    assert by_id["SVC-02"].find("failure").get("message").startswith("SVC-02 auth@app-1: measured hash x")
    assert "measured: hash x\nexpected: hash y\n" in by_id["SVC-02"].find("system-out").text


def test_a_closed_gate_is_a_failing_case_of_its_own_suite(tmp_path):
    path = tmp_path / "junit.xml"
    write_junit(RUNS["gate closed"](), path)
    gate = ET.parse(path).getroot().findall("testsuite")[1]
    (case,) = gate.iter("testcase")
    assert gate.get("name") == "acgs-verify gate" and gate.get("failures") == "1"
    assert case.find("failure").get("message") == "shard 2 of 3 missing: its hosts were not checked"


def test_text_xml_cannot_hold_is_escaped_not_written_raw(tmp_path):
    path = tmp_path / "junit.xml"
    write_junit(run([failing("SVC-02", "auth@app-1", "body \x1b[31m\x00", "hash")]), path)
    assert junit10_violations(path) == []
    assert "\\x1b[31m\\x00" in cases_of(path)[0].find("failure").get("message")
