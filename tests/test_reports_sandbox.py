"""Every report of a real run, read by its consumer's own parser: Chromium for report.html, prometheus_client
for metrics.prom, junit-10.xsd's rules for junit.xml, JSON/properties readers for Allure, and `acgs-verify report`."""

from __future__ import annotations

import configparser
import json
import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import SHARED_MACHINE, run_cli
from tests.waiting import wait_for

FAULT = "wrong-hash:governance-synthesis"  # SVC-02 and SVC-08 fail; SVC-02 attaches the health body as evidence
BAD = "governance-synthesis@app-1"


@pytest.fixture(scope="module")
def faulted_run(sandbox, tmp_path_factory):
    reports = tmp_path_factory.mktemp("reports")
    ok = run_cli("run", "--profile", str(sandbox.profile_path), "--report-dir", str(reports), "--gate", "smoke",
                 *SHARED_MACHINE)
    assert ok.returncode == 0, ok.stdout
    # runs are named and plotted to the second: the trend's two points need two seconds (a fast machine runs
    # the smoke gate in under one)
    smoke_started = json.loads((reports / "latest" / "summary.json").read_text())["started"]
    wait_for("a second later than the smoke run's start",
             lambda: datetime.now(UTC).isoformat(timespec="seconds") > smoke_started, timeout=5)
    sandbox.break_fault(FAULT)
    try:
        res = run_cli("run", "--profile", str(sandbox.profile_path), "--report-dir", str(reports), *SHARED_MACHINE)
    finally:
        sandbox.heal_fault(FAULT)
    assert res.returncode == 2, res.stdout
    return (reports / "latest").resolve()


def chromium(*args: str, user_data: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is not installed: apt-get install chromium (.ci/run installs it)"
    cmd = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={user_data}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_html_report_in_headless_chromium_shows_verdict_and_failure_evidence(faulted_run, tmp_path):
    url = (faulted_run / "report.html").as_uri()
    shot = tmp_path / "report.png"
    # one page load gives both: the DOM on stdout and the screenshot, taken of the same rendered page (the page has
    # no script: its DOM does not depend on the window's size)
    dom = chromium("--dump-dom", f"--screenshot={shot}", "--window-size=1280,1600", "--hide-scrollbars", url,
                   user_data=tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    verdict_at = html.index("ACGS CRITICAL")
    assert verdict_at < html.index("Failures (")  # verdict first
    failure_at = html.index(f"SVC-02[{BAD}]")
    assert html.index("0badc0ffee15bad0", failure_at)  # the health body, as evidence of the failure
    assert "Next step: Service Outage / Constitutional Compliance Failure" in html
    assert "Evidence: health body" in html
    assert html.count("<circle") == 2  # the trend: the smoke run, then this one
    assert 'id="hosts"' in html and "app-1" in html and 'id="section-services"' in html
    # self-contained: no scripts, stylesheets or images to fetch
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert re.findall(r'(?:src|href)="([^"#][^"]*)"', html) == []

    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", dom.stderr[-2000:]
    assert shot.stat().st_size > 10_000  # a rendered page, not an empty canvas
    print(f"screenshot: {shot}")


# Appended to a copy of report.html (which has no script of its own): what a reader at 1280 px would see.
MEASURE = """<script>
addEventListener("load", () => {
  const lines = (el) => {  // how many lines the element's text takes
    const range = document.createRange();
    range.selectNodeContents(el);
    return new Set([...range.getClientRects()].map((r) => Math.round(r.top))).size;
  };
  const tables = [...document.querySelectorAll("table")].filter((t) => t.rows[0].cells[0].textContent === "ID");
  const rows = tables.flatMap((t) => [...t.rows].slice(1));
  const wrapped = rows.flatMap((r) => [r.cells[0], r.cells[r.cells.length - 1]])
    .filter((c) => lines(c) > 1).map((c) => c.textContent);
  const ticks = [...document.querySelectorAll("svg.trend text.tick")]
    .map((t) => [t.textContent, t.getBoundingClientRect().left, t.getBoundingClientRect().right]);
  const out = document.createElement("pre");
  out.id = "measure";
  out.textContent = JSON.stringify({scrollWidth: document.documentElement.scrollWidth, innerWidth,
    clientWidth: document.documentElement.clientWidth, rows: rows.length, wrapped, ticks});
  document.body.appendChild(out);
});
</script>"""


def measure(html_path: Path, tmp_path: Path, width: int = 1280) -> dict:
    import html as html_lib

    page = tmp_path / f"measure-{html_path.stem}.html"
    page.write_text(html_path.read_text().replace("</body>", MEASURE + "</body>"))
    res = chromium("--dump-dom", f"--window-size={width},900", "--hide-scrollbars", page.as_uri(),
                   user_data=tmp_path / "profile-measure")
    assert res.returncode == 0, res.stderr[-2000:]
    found = re.search(r'<pre id="measure">(.*?)</pre>', res.stdout, re.S)
    assert found, res.stdout[-2000:]
    return json.loads(html_lib.unescape(found.group(1)))


def long_values_report(run_dir: Path, tmp_path: Path) -> Path:
    """The run's report with what real environments have and the sandbox has not: a deep path as a target, a
    token-like value and a long unbroken measurement, each without a space to break at."""
    from acgs_verify.report.html import write_html
    from acgs_verify.report.summary import read_summary

    result = read_summary(run_dir / "summary.json")
    deep = "/srv/acgs/releases/2025-06-01T02-00-00Z-4f1c2a9b/home/acgs/ACGS/config/keys/" + "x" * 60 + ".credentials"
    for c in result.checks:
        if c.id == "SEC-02":
            c.target, c.measured = f"{deep}@app-1", f"mode=0644,owner=acgs,path={deep}"
        if c.id == "SVC-02" and c.outcome == "failed":
            c.evidence["health body"] = '{"token":"' + "A" * 400 + '"}'
    path = tmp_path / "long" / "report.html"
    write_html(result, path)
    return path


def test_html_report_fits_1280_px_keeps_ids_and_times_on_one_line_and_labels_the_trend(faulted_run, tmp_path):
    for page in (faulted_run / "report.html", long_values_report(faulted_run, tmp_path)):
        m = measure(page, tmp_path)
        # no horizontal scroll: the document is exactly as wide as the window
        assert m["innerWidth"] == 1280 and m["scrollWidth"] == m["clientWidth"] == 1280, (page, m)
        assert m["rows"] > 100 and m["wrapped"] == [], (page, m["wrapped"][:10])
        labels = [t[0] for t in m["ticks"]]
        assert len(labels) == 2 and len(set(labels)) == 2, m["ticks"]  # the smoke run and this one
        assert all(re.fullmatch(r"\d\d:\d\d(:\d\d)?", t) for t in labels), labels  # one day: times
        (_, _, first_right), (_, second_left, _) = sorted(m["ticks"], key=lambda t: t[1])
        assert first_right < second_left  # readable: the labels do not overlap
    shot = tmp_path / "report-1280.png"
    res = chromium(f"--screenshot={shot}", "--window-size=1280,900", faulted_run.joinpath("report.html").as_uri(),
                   user_data=tmp_path / "profile-shot-1280")
    assert res.returncode == 0 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", res.stderr[-2000:]
    print(f"screenshot: {shot}")


def test_markdown_report_leads_with_verdict_and_failure_evidence(faulted_run):
    md = (faulted_run / "report.md").read_text()
    assert md.startswith("# ACGS CRITICAL:")
    assert f"### P0 SVC-02[{BAD}]" in md and "0badc0ffee15bad0" in md and "**Next step:**" in md
    hosts, others = md.split("## Per host")[1].split("## Other targets")
    assert "| host | passed |" in hosts and "| app-1 |" in hosts and "| backups |" not in hosts
    # backups are read on their host now (backups@<host>): counted with that host, not as another target
    assert "| primary |" in others and "| backups |" not in others


def test_metrics_file_parses_with_prometheus_client(faulted_run):
    from prometheus_client.parser import text_string_to_metric_families

    families = {f.name: f for f in text_string_to_metric_families((faulted_run / "metrics.prom").read_text())}
    samples = [(s.name, tuple(sorted(s.labels.items()))) for f in families.values() for s in f.samples]
    assert len(samples) == len(set(samples))  # node_exporter rejects a file that repeats a series (DB-02: 2 tests)
    success = {(s.labels["id"], s.labels["target"]): s for s in families["acgs_verify_check_success"].samples}
    assert success[("SVC-02", BAD)].value == 0 and success[("SVC-02", BAD)].labels["severity"] == "P0"
    assert success[("SVC-01", BAD)].value == 1
    assert ("SVC-05", BAD) not in success  # skipped: measured nothing
    summary = json.loads((faulted_run / "summary.json").read_text())
    ratio = families["acgs_verify_compliance_ratio"].samples[0].value
    assert ratio == pytest.approx(summary["compliance_rate"], rel=1e-5) and 0 < ratio < 1
    assert families["acgs_verify_run_duration_seconds"].samples[0].value > 0
    assert families["acgs_verify_last_run_timestamp_seconds"].samples[0].value > 1.7e9


def test_junit_meets_jenkins_junit_10_for_a_healthy_and_a_failing_run(faulted_run):
    import xml.etree.ElementTree as ET

    from tests.junit10 import junit10_violations

    healthy = [d for d in faulted_run.parent.iterdir() if d.is_dir() and not d.is_symlink() and d != faulted_run]
    assert len(healthy) == 1  # the fixture's smoke run
    for run_dir in (healthy[0], faulted_run):
        junit = run_dir / "junit.xml"
        assert junit10_violations(junit) == [], run_dir.name
        summary = json.loads((run_dir / "summary.json").read_text())
        suite = ET.parse(junit).getroot().find("testsuite")
        cases = list(suite.iter("testcase"))
        assert [tc.get("name").split(" ", 2)[:2] for tc in cases] == [[c["id"], f"{c['target']}:"]
                                                                        for c in summary["checks"]]
        t = summary["totals"]  # <failure>: measured, and wrong; <error>: could not measure, or interrupted
        assert (int(suite.get("failures")), int(suite.get("errors"))) == (t["failed"], t["errors"] + t["interrupted"])
        assert int(suite.get("skipped")) == summary["totals"]["skipped"] + summary["totals"]["waived"]
        assert "properties" not in {child.tag for tc in cases for child in tc}
        assert all(tc.find("system-out").text.startswith("runbook_id: ") for tc in cases)
        assert "acgs_verify/" not in junit.read_text()  # no internal path (pytest's skip messages carried them)
    assert summary["exit_code"] == 2 and ET.parse(healthy[0] / "junit.xml").getroot().get("failures") == "0"
    failed = [tc for tc in cases if tc.find("failure") is not None]
    assert {tc.get("name").split()[0] for tc in failed} == {"SVC-02", "SVC-08"}
    assert all(tc.get("name").startswith(("SVC-02 governance-synthesis@app-1: ", "SVC-08 governance-synthesis@app-1: "))
               and tc.get("classname") == "Service health" for tc in failed)


def test_allure_results_carry_labels_evidence_environment_and_categories(faulted_run):
    allure = faulted_run / "allure-results"
    results = [json.loads(p.read_text()) for p in allure.glob("*-result.json")]
    (svc02,) = [r for r in results if r["name"].endswith(f"[{BAD}]") and "health_body" in r["name"]]
    labels = {(lab["name"], lab["value"]) for lab in svc02["labels"]}
    assert {("severity", "blocker"), ("epic", "Service health")} <= labels
    assert any(n == "feature" and v.startswith("SVC-02 ") for n, v in labels)
    assert svc02["status"] == "failed"
    (body,) = [a for a in svc02["attachments"] if a["name"] == "health body"]
    assert "0badc0ffee15bad0" in (allure / body["source"]).read_text()
    severities = {lab["value"] for r in results for lab in r["labels"] if lab["name"] == "severity"}
    assert severities <= {"blocker", "critical", "normal", "minor"} and {"blocker", "critical"} <= severities
    env = configparser.ConfigParser()
    env.read_string("[env]\n" + (allure / "environment.properties").read_text())
    assert env["env"]["profile"] == "sandbox" and env["env"]["gate"] == "compliance"
    assert env["env"]["constitutional_hash"] == "cdd01ef066bc6cf2"
    categories = json.loads((allure / "categories.json").read_text())
    assert all({"name", "matchedStatuses"} <= set(c) for c in categories)


def test_report_command_regenerates_the_same_reports_from_summary_json(faulted_run, tmp_path):
    copy = tmp_path / faulted_run.name
    shutil.copytree(faulted_run, copy)
    for name in ("report.html", "report.md", "metrics.prom"):
        (copy / name).unlink()
    res = run_cli("report", str(copy))
    assert res.returncode == 0, res.stderr
    for name in ("report.html", "report.md", "metrics.prom"):
        assert (copy / name).read_text() == (faulted_run / name).read_text(), name
    missing = run_cli("report", "no-such-run", "--report-dir", str(tmp_path))
    assert missing.returncode == 3 and "no run 'no-such-run'" in missing.stderr


def test_secrets_are_masked_in_every_report(healthy_sandbox, tmp_path):
    # the profile's Redis password is, for this test, the wrong hash the fault makes the service report: it then
    # appears in failure messages, evidence, JUnit and Allure results, and must be masked in each of them
    secret = "0badc0ffee15bad0"
    profile = tmp_path / "masked.yaml"
    profile.write_text(f"extends: {healthy_sandbox.profile_path}\n"
                       "redis: [{name: cache, url: 'redis://127.0.0.1:9/0', password_env: I6_SECRET}]\n")
    healthy_sandbox.break_fault(FAULT)
    res = run_cli("run", "--profile", str(profile), "--report-dir", str(tmp_path / "r"), "--gate",
                  "pre-maintenance", "--", "-k", "governance or RD-01", env={"I6_SECRET": secret})
    assert res.returncode == 2, res.stdout + res.stderr
    assert secret not in res.stdout + res.stderr
    run_dir = (tmp_path / "r" / "latest").resolve()
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {"junit.xml", "report.html", "report.md", "summary.json", "snapshot.json", "metrics.prom"} <= \
        {p.name for p in files}
    leaks = [p.name for p in files if secret in p.read_text(errors="replace")]
    assert leaks == []
    assert "***" in (run_dir / "junit.xml").read_text() and "***" in (run_dir / "report.html").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    # RD-01 could not reach the cache, so the snapshot's key count is a note, recorded by RD-01 and masked
    assert any(n.startswith("redis cache: could not count keys") for n in summary["notes"])


# checks that judge through check.at_most/below/at_least/above: their `expected` is made from the limit, never typed
STRUCTURED = {"SYS-01": "1-minute load <=", "SYS-02": "<=", "SYS-03": "<=", "SYS-04": "<=", "SYS-06": "p99 <",
              "SVC-06": "p99 <", "RD-01": "PONG in <", "RD-02": "p99 <", "DB-01": "an answer in <", "DB-03": "<",
              "SEC-03": "<=", "TLS-02": ">"}


def test_threshold_checks_give_measured_expected_and_value_as_data(faulted_run):
    checks = json.loads((faulted_run / "summary.json").read_text())["checks"]
    judged = [c for c in checks if c["id"] in STRUCTURED and c["outcome"] in ("passed", "failed")]
    assert {c["id"] for c in judged} == set(STRUCTURED), set(STRUCTURED) - {c["id"] for c in judged}
    for c in judged:
        assert re.fullmatch(re.escape(STRUCTURED[c["id"]]) + r" \d+(\.\d+)?( .+)?", c["expected"]), c
        assert isinstance(c["value"], int | float | dict) and c["measured"], c
        if c["outcome"] == "failed":
            assert f"expected {c['expected']}" in c["message"], c
    (header,) = [c for c in checks if c["id"] == "SVC-08" and c["target"] == BAD]
    assert header["outcome"] == "failed" and header["expected"] == "cdd01ef066bc6cf2", header
    assert header["value"] == "0badc0ffee15bad0" and "X-Constitutional-Hash: 0badc0ffee15bad0" in header["measured"]
