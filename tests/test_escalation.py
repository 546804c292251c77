"""Escalation (runbook: Incident Classification, Escalation Matrix): for the highest failed severity, every report
says who to notify and by when; a passing run says there is nothing to escalate. Read as each consumer reads it:
the terminal's last lines, summary.json as JSON, report.md as text, report.html in headless Chromium."""

from __future__ import annotations

import json

import pytest

from acgs_verify.escalation import duration, escalation_of
from acgs_verify.profile.model import Profile
from acgs_verify.results import CheckResult, RunResult
from tests.conftest import SHARED_MACHINE, run_cli
from tests.test_reports_sandbox import chromium

CONTACTS = ("oncall@example.com", "+1-555-0100")


def _result(*severities: str, waived: bool = False) -> RunResult:
    checks = [CheckResult(nodeid=f"n{i}", id=f"X-{i}", section="services", severity=s, title="t", target="a",
                          outcome="failed", waived={"reason": "r"} if waived else None)
              for i, s in enumerate(severities)]
    checks.append(CheckResult(nodeid="ok", id="OK-1", section="services", severity="P0", title="t", target="a"))
    return RunResult(run_id="r", profile="p", gate="smoke", started="2025-06-01T02:00:00+00:00", checks=checks)


def _profile(**escalation) -> Profile:
    return Profile.model_validate({"services": [{"name": "a", "port": 1}], "escalation": escalation})


@pytest.mark.parametrize(("severities", "line"), [
    (("P2", "P0", "P3"), "P0: notify Level 1 on-call engineer within 15 minutes"),
    (("P1", "P2"), "P1: notify Level 1 on-call engineer within 1 hour"),
    (("P2",), "P2: notify Level 1 on-call engineer within 4 hours"),
    (("P3",), "P3: notify Level 1 on-call engineer within 24 hours"),
])
def test_the_highest_failed_severity_gets_the_runbooks_response_time(severities, line):
    esc = escalation_of(_result(*severities), _profile().escalation)
    assert esc["line"] == line
    assert esc["then_line"] == ("after 15 minutes unresolved: Level 2 technical lead and engineering manager; "
                                "after 1 hour unresolved: Level 3 CTO and security team (if security-related)")


def test_a_passing_run_and_a_run_with_only_waived_failures_have_nothing_to_escalate():
    assert escalation_of(_result(), _profile().escalation) == {"severity": None,
                                                               "line": "nothing to escalate: no check failed"}
    assert escalation_of(_result("P0", waived=True), _profile().escalation)["line"] == \
        "nothing to escalate: no check failed (1 waived)"


def test_contacts_response_times_and_first_level_come_from_the_profile():
    esc = _profile(response_minutes={"P2": 120}, notify={"P2": "Duty"},
                   levels=[{"name": "Level 1", "who": "on-call engineer", "contacts": list(CONTACTS)},
                           {"name": "Duty", "who": "duty manager", "contacts": ["duty@example.com"]}]).escalation
    assert esc.response_minutes["P0"] == 15  # a severity left out keeps the runbook's time
    assert escalation_of(_result("P2"), esc)["line"] == "P2: notify Duty duty manager (duty@example.com) within 2 hours"
    assert escalation_of(_result("P0"), esc)["line"] == \
        "P0: notify Level 1 on-call engineer (oncall@example.com, +1-555-0100) within 15 minutes"


def test_durations_read_as_a_person_says_them():
    assert [duration(m) for m in (1, 15, 60, 90, 240, 1440)] == \
        ["1 minute", "15 minutes", "1 hour", "90 minutes", "4 hours", "24 hours"]


def test_a_notify_naming_no_level_is_one_line_and_exit_3(write_profile):
    path = write_profile("hosts: [{name: h}]\nescalation:\n  notify: {P0: Level 9}\n")
    res = run_cli("run", "--profile", str(path), "--report-dir", str(path.parent / "r"))
    assert res.returncode == 3, res.stdout + res.stderr
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "'Level 9' is not one of the levels" in err[0] and "p.yaml" in err[0], err


# ------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def runs(sandbox, tmp_path_factory):
    """A healthy smoke run, then one with auth down (SVC-01, P0) under a profile that names contacts."""
    reports = tmp_path_factory.mktemp("reports")
    profile = tmp_path_factory.mktemp("profile") / "oncall.yaml"
    profile.write_text(f"extends: {sandbox.profile_path}\nname: oncall\nescalation:\n  levels:\n"
                       f"    - {{name: Level 1, who: on-call engineer, contacts: [{', '.join(CONTACTS)}]}}\n"
                       "    - {name: Level 2, who: technical lead, after_minutes: 15}\n")
    ok = run_cli("run", "--profile", str(profile), "--report-dir", str(reports), "--gate", "smoke", *SHARED_MACHINE)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    passing = (reports / "latest").resolve()
    sandbox.break_fault("service-down:auth")
    try:
        bad = run_cli("run", "--profile", str(profile), "--report-dir", str(reports), "--gate", "smoke",
                      *SHARED_MACHINE)
    finally:
        sandbox.heal_fault("service-down:auth")
    assert bad.returncode == 2, bad.stdout + bad.stderr
    return {"passing": (ok, passing), "failing": (bad, (reports / "latest").resolve())}


P0_LINE = f"P0: notify Level 1 on-call engineer ({', '.join(CONTACTS)}) within 15 minutes"
NOTHING = "nothing to escalate: no check failed"


@pytest.mark.parametrize(("which", "line"), [("failing", P0_LINE), ("passing", NOTHING)])
def test_terminal_says_it_just_above_the_summary_line(runs, which, line):
    res, _ = runs[which]
    last = res.stdout.strip().splitlines()[-2:]
    assert last[0] == f"ESCALATION {line}", last
    assert last[1].startswith("ACGS CRITICAL" if which == "failing" else "ACGS OK")


@pytest.mark.parametrize(("which", "line"), [("failing", P0_LINE), ("passing", NOTHING)])
def test_summary_json_carries_it(runs, which, line):
    _, run_dir = runs[which]
    esc = json.loads((run_dir / "summary.json").read_text())["escalation"]
    assert esc["line"] == line
    if which == "failing":
        assert esc["severity"] == "P0" and esc["within_minutes"] == 15 and esc["failed"] >= 1
        assert esc["notify"]["contacts"] == list(CONTACTS)
        assert esc["then"] == [{"name": "Level 2", "who": "technical lead", "after_minutes": 15, "contacts": []}]


@pytest.mark.parametrize(("which", "line"), [("failing", P0_LINE), ("passing", NOTHING)])
def test_report_md_says_it_before_the_failures(runs, which, line):
    _, run_dir = runs[which]
    md = (run_dir / "report.md").read_text()
    assert f"**{line}**" in md.replace("\\", "")
    assert md.index("## Escalation") < md.index("## Failures")
    if which == "failing":
        assert "If unresolved: after 15 minutes unresolved: Level 2 technical lead" in md


@pytest.mark.parametrize(("which", "line"), [("failing", P0_LINE), ("passing", NOTHING)])
def test_report_html_in_chromium_says_it_before_the_failures(runs, which, line, tmp_path):
    _, run_dir = runs[which]
    dom = chromium("--dump-dom", (run_dir / "report.html").as_uri(), user_data=tmp_path / "chromium")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert f'<p class="escalation"><b>{line}</b></p>' in html
    assert html.index('id="escalation"') < html.index('id="failures"')


def test_regenerated_reports_keep_it(runs, tmp_path):
    import shutil

    _, run_dir = runs["failing"]
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "report.md").unlink()
    res = run_cli("report", str(copy))
    assert res.returncode == 0, res.stdout + res.stderr
    assert P0_LINE in (copy / "report.md").read_text().replace("\\", "")


# ------------------------------------------------------------- the compliance report: MON-02 beside its target


def test_compliance_report_shows_each_services_availability_beside_the_target(sandbox, tmp_path):
    """Two real runs of the compliance gate: the first has no history (MON-02 skips, and the report says why), the
    second reads the first's SVC-01 outcomes from history.jsonl and shows 100.00 % beside >= 99.9 %. Each runs
    SVC-01 and MON-02 only: the section is made of MON-02's results, which read only SVC-01's (the other checks of
    the gate cost 3 s a run and write nothing it shows)."""
    reports = tmp_path / "r"
    args = ("run", "--profile", str(sandbox.profile_path), "--report-dir", str(reports), *SHARED_MACHINE,
            "--set", "thresholds.availability_min_runs=1", "--gate", "compliance", "--", "-k", "SVC-01 or MON-02")
    first = run_cli(*args)
    assert first.returncode in (0, 1), first.stdout + first.stderr
    md = (reports / "latest" / "report.md").read_text().replace("\\", "")
    assert "## Availability (MON-02), target 99.9 % over 30 days" in md
    assert "| auth@app-1 | - | >= 99.9 % | skipped | 0 runs in the last 30 days recorded SVC-01 for auth@app-1" in md
    second = run_cli(*args)
    assert second.returncode in (0, 1), second.stdout + second.stderr
    run_dir = (reports / "latest").resolve()
    md = (run_dir / "report.md").read_text().replace("\\", "")
    assert "| auth@app-1 | 100.00 % | >= 99.9 % | passed | 100.00 % available: SVC-01 passed in 1 of 1 run" in md
    dom = chromium("--dump-dom", (run_dir / "report.html").as_uri(), user_data=tmp_path / "chromium")
    html = " ".join(dom.stdout.split())
    assert 'id="availability"' in html and "target 99.9&nbsp;% over 30 days" in html
    assert ('<td class="nowrap">auth@app-1</td><td class="nowrap">100.00&nbsp;%</td>'
            '<td class="nowrap">≥ 99.9&nbsp;%</td><td class="passed">passed</td>') in html
