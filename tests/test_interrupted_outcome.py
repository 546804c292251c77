"""The `interrupted` outcome over hand-built results: it never counts as passed (totals, compliance, exit code, the
last line), every writer says it, diff does not take it for a regression or a vanished service, junit.xml gets a
named error in place of pytest's nameless case, and a --wait retry cut off leaves the run incomplete. The runs that
produce it for real are in tests/test_interrupted_runs.py."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from acgs_verify.report.allure import write_results
from acgs_verify.report.diff import compare
from acgs_verify.report.html import render_html
from acgs_verify.report.junit import write_junit
from acgs_verify.report.markdown import render_markdown
from acgs_verify.report.prometheus import check_success, render_metrics
from acgs_verify.report.snapshot import snapshot_of
from acgs_verify.results import RunResult
from tests.junit10 import junit10_violations
from tests.test_reports_say_it_once import check, run

CUT = "SVC-01 x@app-1: interrupted: the run was stopped (SIGINT/SIGTERM) before this check finished; it has no " \
      "outcome. Next: run it again"


def cut_off(id_="SVC-01", target="x@app-1", n=2):
    return check(id_, target, "interrupted", n=n, message=CUT)


def test_an_interrupted_check_is_never_counted_as_passed():
    r = run([check("SVC-01", n=1), cut_off()], complete=False, planned=5)
    t = r.totals
    assert (t["passed"], t["failed"], t["interrupted"], t["not_run"]) == (1, 0, 1, 3)
    assert r.compliance_rate == 1.0  # of the one that finished: the interrupted one is on neither side
    assert r.exit_code == 3 and r.hosts["app-1"] == {"checks": 2, "passed": 1, "failed": 0, "error": 0,
                                                     "skipped": 0, "interrupted": 1}
    line = r.summary_line()
    assert line.startswith("ACGS UNKNOWN - run interrupted after 1 of 5 checks [1 interrupted]"), line
    assert "passed=1 failed=0 errors=0 skipped=0 interrupted=1 not_run=3 " in line
    # a result marked complete that holds one (a --wait retry cut off) is still no OK
    marked = run([check("SVC-01", n=1), cut_off()])
    assert marked.exit_code == 3 and "run interrupted" in marked.summary_line()
    again = RunResult.from_dict(json.loads(json.dumps(r.as_dict())))
    assert again.checks[1].outcome == "interrupted" and again.summary_line() == line


def test_a_complete_run_keeps_its_last_line():
    assert run([check()]).summary_line() == \
        "ACGS OK - 1 of 1 checks passed | passed=1 failed=0 errors=0 skipped=0 duration=1.5s"


def test_every_writer_says_interrupted_and_none_says_passed(tmp_path):
    r = run([check("SVC-01", n=1), cut_off()], complete=False, planned=2)
    md = render_markdown(r)
    (row,) = [line for line in md.splitlines() if "| x@app-1 |" in line]
    assert "| interrupted |" in row and "passed" not in row
    assert "1 was stopped before it finished (SVC-01[x@app-1]): interrupted, no outcome" in md
    html = render_html(r)
    assert '<td class="interrupted nowrap">interrupted</td>' in html and "1 interrupted" in html
    metrics = render_metrics(r)
    assert 'target="x@app-1"' not in metrics.split("# HELP acgs_verify_checks")[0]
    assert 'outcome="interrupted"} 1' in metrics
    write_results(r, tmp_path)
    results = {d["name"]: d for d in (json.loads(p.read_text()) for p in tmp_path.glob("*-result.json"))}
    cut = next(d for name, d in results.items() if name.startswith("t_SVC-01[x@app-1]"))
    assert cut["status"] == "unknown" and "interrupted" in cut["statusDetails"]["message"]


def test_a_pair_with_an_interrupted_test_has_no_success_sample_unless_one_failed():
    both = run([check("DB-02", "primary", n=1), check("DB-02", "primary", "interrupted", n=2)])
    assert ("DB-02", "primary") not in check_success(both)
    failed = run([check("DB-02", "primary", "failed", n=1), check("DB-02", "primary", "interrupted", n=2)])
    assert check_success(failed)[("DB-02", "primary")][1] == 0


def test_diff_takes_an_interrupted_check_for_not_run_now_and_no_service_for_vanished():
    before = snapshot_of(run([check("SVC-01", n=1), check("SVC-06", n=2)]))
    after = snapshot_of(run([cut_off("SVC-01", "auth@app-1", n=1), check("SVC-06", n=2)], complete=False))
    assert after["services"]["auth@app-1"]["answered"] is None
    d = compare(before, after)
    assert not d.regressions and not d.vanished_services and d.not_run_now == ["SVC-01[auth@app-1]"]
    gone = snapshot_of(run([check("SVC-01", outcome="failed", n=1)]))
    assert compare(before, gone).vanished_services == ["auth@app-1"]  # a failed health check still vanishes


def test_junit_gets_a_named_error_for_the_cut_off_check_instead_of_a_nameless_case(tmp_path):
    # pytest's junitxml leaves `<testcase time="0.000" />` for a body SIGINT cut off: junit.xml is ours instead
    path = tmp_path / "junit.xml"
    write_junit(run([check("SVC-01", n=1), cut_off()], complete=False, planned=3), path)
    assert junit10_violations(path) == []
    suite = ET.parse(path).getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert [(tc.get("classname"), tc.get("name")) for tc in cases] == [
        ("Service health", "SVC-01 auth@app-1: SVC-01 title"), ("Service health", "SVC-01 x@app-1: SVC-01 title")]
    error = cases[1].find("error")
    assert error.get("message") == CUT and error.get("type") == "interrupted"
    assert (suite.get("tests"), suite.get("errors"), suite.get("failures")) == ("2", "1", "0")
    out = cases[1].find("system-out").text
    assert "runbook_id: SVC-01\n" in out and "target: x@app-1\n" in out and "outcome: interrupted\n" in out


def test_wait_stops_and_leaves_the_run_incomplete_when_a_retry_is_cut_off():
    from acgs_verify.gates import wait_for_recovery

    first = run([check("SVC-01", outcome="failed", n=1)])

    def rerun(nodeids, attempt):  # the retry the operator stopped with Ctrl-C
        return run([cut_off("SVC-01", "auth@app-1", n=1)], complete=False, planned=1)

    wait_for_recovery(first, 2.5, rerun, say=lambda line: None)
    assert first.complete is False and first.checks[0].outcome == "interrupted" and first.exit_code == 3
