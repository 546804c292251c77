"""Allure from structure, not regex (issue 23, item 3): a failure's category comes from its outcome and the kind of
failure its check reports (catalog.KIND, CheckResult.kind), matched on a token at the start of statusDetails.trace,
never on the message's words; every failure carries its evidence as an attachment; staged checks (BK-07, CC-05,
SVC-03) report their stages as steps; `make report` keeps Allure's history/ so the Trend fills.

Where Allure's CLI is installed (`npm install -g allure-commandline`, Java), the real `allure generate` sorts the
results, and its data/categories.json is what is asserted; elsewhere the same matchers are applied as Allure
applies them (a category matches when its statuses hold the result's and its regexes match the whole text).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from acgs_verify.catalog import CATALOG, KIND, KINDS
from acgs_verify.report import allure
from acgs_verify.results import CheckResult, RunResult
from tests.conftest import REPO, SHARED_MACHINE, run_cli

ALLURE = shutil.which("allure")
needs_allure = pytest.mark.skipif(ALLURE is None, reason="Allure's CLI is not installed (npm install -g "
                                  "allure-commandline; it needs Java)")
# Allure's JVM with its quick compiler only and the serial collector: `allure generate` of a few hundred results
# is over before the optimizing compiler or G1's threads pay back what they cost (about 1.5 s of CPU a call on 2
# cores); what it writes is the same
ALLURE_ENV = {**os.environ, "JAVA_OPTS": f"{os.environ.get('JAVA_OPTS', '')} -XX:TieredStopAtLevel=1 "
              "-XX:+UseSerialGC".strip()}


def matches(category: dict, doc: dict) -> bool:
    """Allure 2's CategoriesPlugin: every matcher a category names must hold; a regex matches the whole text."""
    details = doc.get("statusDetails", {})
    if "matchedStatuses" in category and doc["status"] not in category["matchedStatuses"]:
        return False
    for key, field in (("messageRegex", "message"), ("traceRegex", "trace")):
        if key in category and (field not in details or not re.fullmatch(category[key], details[field], re.S)):
            return False
    return True


def sorted_by_allure_rules(results_dir: Path) -> dict[str, set[str]]:
    categories = json.loads((results_dir / "categories.json").read_text())
    docs = [json.loads(p.read_text()) for p in results_dir.glob("*-result.json")]
    return {c["name"]: {d["name"] for d in docs if matches(c, d)} for c in categories}


def expected_category(c: dict) -> str | None:
    """The category a summary.json check belongs in, from its fields alone."""
    if c["outcome"] == "skipped":
        return "Skipped: not applicable to this environment"
    if c["outcome"] == "interrupted":
        return "Interrupted: the run was stopped before the check finished"
    if c["outcome"] not in ("failed", "error"):
        return None
    if c.get("waived"):
        return "Waived: accepted failures (reason, owner and expiry in the message)"
    if c["outcome"] == "error" or ": could not measure: " in c["message"] or c.get("kind") == "unmeasured":
        return KINDS["unmeasured"]
    return KINDS[c["kind"]]


def test_every_catalog_id_names_the_kind_of_failure_it_reports():
    assert set(KIND) == set(CATALOG), set(CATALOG) ^ set(KIND)
    assert set(KIND.values()) <= set(KINDS) and "unmeasured" not in KIND.values()  # that one is the outcome's
    assert {CATALOG[i].kind for i in ("SVC-08", "CC-01", "CC-02", "CC-06")} == {"hash"}
    assert {CATALOG[i].kind for i in ("TLS-01", "TLS-02", "SEC-05")} == {"expiry"}
    assert {CATALOG[i].kind for i in ("BK-04", "BK-06", "CC-05")} == {"integrity"}
    assert {CATALOG[i].kind for i in ("SVC-03", "DB-02", "SVC-11")} == {"identity"}
    assert {CATALOG[i].kind for i in ("SVC-06", "DB-03", "SYS-04", "BK-01")} == {"threshold"}
    schema = json.loads((REPO / "acgs_verify/schemas/summary.schema.json").read_text())
    assert '"unmeasured"' in json.dumps(schema) and all(f'"{k}"' in json.dumps(schema) for k in KINDS)


def _check(check_id: str, outcome: str, message: str = "", **kw) -> CheckResult:
    e = CATALOG[check_id]
    return CheckResult(nodeid=f"checks/test_x.py::test_{check_id.lower().replace('-', '_')}[t]", id=check_id,
                       section=e.section, severity=e.severity, title=e.title, target="t", outcome=outcome,
                       message=f"{check_id} t: {message}. Next: {e.next_step}" if message else "",
                       kind=kw.pop("kind", e.kind), next_step=e.next_step, **kw)


def issue_sample() -> list[CheckResult]:
    """The issue's sample: a refused connection written as `measured ...; expected ...`, SVC-08 whose next step
    names the constitutional configuration, today's `could not measure` failures and the `error` outcome."""
    return [
        _check("SVC-08", "failed", "no answer from http://127.0.0.1:18016/health: connection refused",
               kind="unmeasured"),
        _check("SVC-06", "failed", "sample 1 of 20 got no answer: connection refused", kind="unmeasured"),
        _check("SVC-01", "failed", "measured no answer (connection refused); expected 2xx within 2 s",
               measured="no answer (connection refused)", expected="2xx within 2 s"),
        _check("DB-03", "failed", "could not measure: connection refused"),
        _check("DB-04", "error", "could not measure: timed out"),
        _check("SVC-02", "failed", "measured status='healthy' constitutional_hash='0badc0ffee15bad0'; expected "
               "constitutional_hash cdd01ef066bc6cf2", measured="status='healthy'", expected="the hash"),
        _check("SYS-04", "failed", "measured /var 97 % used; expected < 90 %", measured="/var 97 % used",
               expected="< 90 %"),
        _check("TLS-01", "failed", "measured expires in 3 days; expected > 30 days", measured="3 days",
               expected="> 30 days"),
        _check("CC-05", "failed", "measured 1 broken link in 5 chains; expected 0 breaks", measured="1 broken link",
               expected="0 breaks"),
        _check("SVC-03", "failed", "nothing listens on TCP port 18016: auth is not running"),
        _check("BK-01", "failed", "measured 49 h; expected <= 26 h", measured="49 h", expected="<= 26 h",
               waived={"id": "BK-01", "target": "t", "reason": "migration", "owner": "ops", "expires": "2099-01-01"}),
        _check("SVC-05", "skipped", "no unit"),
        _check("SVC-09", "interrupted"),
        _check("RD-01", "passed"),
    ]


def test_categories_match_the_kind_token_not_the_message(tmp_path):
    checks = issue_sample()
    result = RunResult(run_id="r1", profile="p", gate="g", started="2025-01-01T00:00:00+00:00", checks=checks)
    allure.write_results(result, tmp_path)
    allure.write_categories(result, tmp_path / "categories.json")
    categories = json.loads((tmp_path / "categories.json").read_text())
    assert all("messageRegex" not in c for c in categories)  # no category reads the human message
    sorted_ = sorted_by_allure_rules(tmp_path)
    name = {c.nodeid.split("::")[1]: c for c in checks}
    for doc_name, c in name.items():
        holding = {cat for cat, docs in sorted_.items() if doc_name in docs}
        want = expected_category(c.as_dict())
        assert holding == ({want} if want else set()), (c.id, c.outcome, holding)
    unmeasured = sorted_[KINDS["unmeasured"]]
    assert {name[n].id for n in unmeasured} == {"SVC-08", "SVC-06", "DB-03", "DB-04"}
    assert {name[n].id for n in sorted_[KINDS["hash"]]} == {"SVC-02"}  # not SVC-08, refused
    assert {name[n].id for n in sorted_[KINDS["threshold"]]} == {"SYS-04"}  # not the refused SVC-06


def test_every_failure_carries_measured_expected_and_next_step_as_an_attachment(tmp_path):
    checks = issue_sample()
    result = RunResult(run_id="r1", profile="p", gate="g", started="2025-01-01T00:00:00+00:00", checks=checks)
    allure.write_results(result, tmp_path)
    docs = [json.loads(p.read_text()) for p in tmp_path.glob("*-result.json")]
    failed = [d for d in docs if d["status"] in ("failed", "broken")]
    assert len(failed) == 11
    for d in failed:
        (att,) = [a for a in d["attachments"] if a["name"] == "measurement"]
        text = (tmp_path / att["source"]).read_text()
        assert text.startswith("measured: ") and "\nexpected: " in text and "\nnext step: " in text, text
        assert d["statusDetails"]["trace"].startswith("kind: ")
    (refused,) = [d for d in failed if d["name"].startswith("test_svc_08")]
    assert "connection refused" in (tmp_path / refused["attachments"][0]["source"]).read_text()


def test_steps_of_the_result_model_are_allure_steps(tmp_path):
    steps = [{"name": "port owner", "status": "passed", "detail": "pid 42 `uvicorn auth`"},
             {"name": "pattern", "status": "failed", "detail": "/gunicorn/ does not match\x1b[31m"}]
    c = _check("SVC-03", "failed", "does not match", steps=steps)
    result = RunResult(run_id="r1", profile="p", gate="g", started="2025-01-01T00:00:00+00:00", checks=[c])
    allure.write_results(result, tmp_path)
    (doc,) = [json.loads(p.read_text()) for p in tmp_path.glob("*-result.json")]
    assert [(s["name"], s["status"]) for s in doc["steps"]] == [("port owner", "passed"), ("pattern", "failed")]
    assert doc["steps"][1]["statusDetails"]["message"] == "/gunicorn/ does not match\\x1b[31m"
    again = RunResult.from_dict(json.loads(json.dumps(result.as_dict())))  # summary.json keeps them
    assert again.checks[0].steps == steps and again.checks[0].kind == "identity"


# ------------------------------------------------------------------------------------------ a real faulted run

AUTH, GOV, SLOW = "auth@app-1", "governance-synthesis@app-1", "evolutionary-computation@app-1"
FAULTS = ("service-down:auth", "wrong-hash:governance-synthesis", "slow:evolutionary-computation", "cert-expiring",
          "restore-broken", "audit-tenant-break", "redis-down")


@pytest.fixture(scope="module")
def faulted(sandbox, tmp_path_factory):
    reports = tmp_path_factory.mktemp("reports")
    broken = []
    try:
        for fault in FAULTS:
            sandbox.break_fault(fault)
            broken.append(fault)
        # 5 latency samples: every one of the slowed service's takes 150 ms, so its p99 fails as with 20 (which,
        # measured twice, kept the run waiting 6 s)
        res = run_cli("run", "--profile", str(sandbox.profile_path), "--report-dir", str(reports), *SHARED_MACHINE,
                      "--set", "backups.restore_drill=true", "--set", "thresholds.latency_samples=5")
    finally:
        for fault in reversed(broken):
            sandbox.heal_fault(fault)
    assert res.returncode == 2, res.stdout[-3000:] + res.stderr[-2000:]
    run_dir = (reports / "latest").resolve()
    return run_dir, json.loads((run_dir / "summary.json").read_text())


def _doc_names(summary: dict) -> dict[str, dict]:
    return {c["nodeid"].split("::")[1]: c for c in summary["checks"]}


def test_each_category_holds_exactly_the_results_of_its_kind_in_a_faulted_run(faulted):
    run_dir, summary = faulted
    checks = _doc_names(summary)
    sorted_ = sorted_by_allure_rules(run_dir / "allure-results")
    for doc_name, c in checks.items():
        holding = {cat for cat, docs in sorted_.items() if doc_name in docs}
        want = expected_category(c)
        assert holding == ({want} if want else set()), (c["id"], c["target"], c["outcome"], c["message"], holding)
    by = {cat: {(checks[n]["id"], checks[n]["target"]) for n in names} for cat, names in sorted_.items()}
    # a service that refuses: what could not be read is not a wrong hash or a slow p99
    assert {("SVC-02", AUTH), ("SVC-08", AUTH), ("SVC-06", AUTH)} <= by[KINDS["unmeasured"]]
    assert ("SVC-01", AUTH) in by[KINDS["availability"]] and ("SVC-03", AUTH) in by[KINDS["identity"]]
    assert {("SVC-02", GOV), ("SVC-08", GOV)} <= by[KINDS["hash"]]
    assert not {t for _, t in by[KINDS["hash"]]} & {AUTH}
    assert ("SVC-06", SLOW) in by[KINDS["threshold"]]
    assert {i for i, _ in by[KINDS["expiry"]]} >= {"TLS-01", "TLS-02"}
    assert {i for i, _ in by[KINDS["integrity"]]} >= {"BK-07", "CC-05"}
    assert {i for i, _ in by[KINDS["unmeasured"]]} >= {"RD-02", "CC-06"}  # Redis down: nothing read


def test_every_failed_result_carries_an_attachment(faulted):
    run_dir, _ = faulted
    results = run_dir / "allure-results"
    docs = [json.loads(p.read_text()) for p in results.glob("*-result.json")]
    failed = [d for d in docs if d["status"] in ("failed", "broken")]
    assert len(failed) >= 15
    for d in failed:
        names = {a["name"] for a in d["attachments"]}
        assert "measurement" in names, d["name"]
        for a in d["attachments"]:
            assert (results / a["source"]).stat().st_size > 0


def test_staged_checks_report_their_stages_as_steps(faulted):
    run_dir, summary = faulted
    docs = {d["name"]: d for d in (json.loads(p.read_text()) for p in (run_dir / "allure-results").glob(
        "*-result.json"))}

    def steps(check_id: str, target: str | None = None) -> list[tuple[str, str]]:
        c = next(c for c in summary["checks"] if c["id"] == check_id and target in (None, c["target"]))
        doc = docs[c["nodeid"].split("::")[1]]
        assert [(s["name"], s["status"]) for s in doc["steps"]] == [(s["name"], s["status"]) for s in c["steps"]]
        return [(s["name"], s["status"]) for s in c["steps"]]

    # BK-07: the dump found, the scratch database made, the restore refused, nothing to count, dropped
    assert steps("BK-07") == [("find the latest dump", "passed"), ("scratch database and role created", "passed"),
                              ("restore", "failed"), ("count rows", "skipped"),
                              ("drop the scratch database", "passed")]
    # CC-05: one step per tenant's chain, the broken one first
    chains = steps("CC-05")
    assert len(chains) == 5 and chains[0] == ("chain tenant_id=tenant-2", "failed")
    assert all(s == "passed" for _, s in chains[1:])
    # SVC-03: the port's owner, then the pattern that confirms it
    assert steps("SVC-03", GOV) == [("port owner", "passed"), ("pattern", "passed")]
    assert steps("SVC-03", AUTH)[0] == ("port owner", "failed")


@pytest.fixture(scope="module")
def faulted_report(faulted, tmp_path_factory) -> Path:
    """`allure generate` of the faulted run, once: what it sorted and the page that shows it are read from it."""
    run_dir, _ = faulted
    report = tmp_path_factory.mktemp("allure") / "report"
    subprocess.run([ALLURE, "generate", "--clean", "-o", str(report), str(run_dir / "allure-results")],
                   check=True, capture_output=True, timeout=180, env=ALLURE_ENV)
    return report


@needs_allure
def test_allure_generate_sorts_a_faulted_run_by_kind(faulted, faulted_report):
    _, summary = faulted
    tree = json.loads((faulted_report / "data/categories.json").read_text())

    def leaves(node):
        if "children" not in node:
            yield node["name"]
            return
        for child in node["children"]:
            yield from leaves(child)

    got = {cat["name"]: sorted(leaves(cat)) for cat in tree["children"]}
    want: dict[str, list[str]] = {}
    for name, c in _doc_names(summary).items():
        if (category := expected_category(c)) is not None:
            want.setdefault(category, []).append(name)
    assert got == {k: sorted(v) for k, v in want.items()}


@needs_allure
def test_make_report_keeps_history_so_the_trend_fills_from_the_second_run(tmp_path):
    reports = tmp_path / "reports"
    for i in (1, 2):
        run_dir = reports / f"run{i}"
        result = RunResult(run_id=f"run{i}", profile="p", gate="g", started=f"2025-01-0{i}T00:00:00+00:00",
                           checks=issue_sample())
        allure.write_results(result, run_dir / "allure-results")
        allure.write_categories(result, run_dir / "allure-results" / "categories.json")
        (reports / "latest").unlink(missing_ok=True)
        (reports / "latest").symlink_to(run_dir.name)
        res = subprocess.run(["make", "-s", "-C", str(REPO), "report", f"REPORT_DIR={reports}"],
                             capture_output=True, text=True, timeout=300, env={**ALLURE_ENV, "MAKEFLAGS": ""})
        assert res.returncode == 0 and "Allure report:" in res.stdout, res.stdout + res.stderr
        trend = json.loads((reports / "allure-report/widgets/history-trend.json").read_text())
        assert len(trend) == i, trend
    assert len(json.loads((reports / "allure-report/history/history-trend.json").read_text())) == 2


def test_a_stage_that_could_not_measure_is_a_broken_step(sandbox, tmp_path):
    empty = tmp_path / "no-backups"
    empty.mkdir()
    res = run_cli("run", "--profile", str(sandbox.profile_path), "--report-dir", str(tmp_path / "reports"),
                  "--set", f"paths.backups={empty}", "--set", "backups.restore_drill=true", "--", "-k", "restore_drill")
    summary = json.loads((tmp_path / "reports/latest/summary.json").read_text())
    (bk07,) = summary["checks"]
    assert bk07["outcome"] in ("failed", "error") and "could not measure" in bk07["message"], res.stdout[-2000:]
    (step,) = bk07["steps"]  # the drill stopped at its first stage: nothing was created, nothing to drop
    assert (step["name"], step["status"]) == ("find the latest dump", "broken") and str(empty) in step["detail"]
    results = tmp_path / "reports/latest/allure-results"
    (doc,) = [json.loads(p.read_text()) for p in results.glob("*-result.json")]
    assert [(s["name"], s["status"]) for s in doc["steps"]] == [("find the latest dump", "broken")]
    assert doc["statusDetails"]["trace"].startswith("kind: unmeasured\n")


@needs_allure
@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("chromium-browser") is None,
                    reason="chromium is not installed")
def test_generated_report_shows_the_categories_in_a_browser(faulted, faulted_report, tmp_path):
    """The report as a reader sees it: Allure's page, served on loopback (it fetches its data, which file:// does
    not allow), rendered by headless Chromium, with the categories of the faulted run and a screenshot."""
    import socket
    import sys

    from tests.test_reports_sandbox import chromium
    from tests.waiting import wait_for

    _, summary = faulted
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                               "--directory", str(faulted_report)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def answers() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for("the report's server listening", answers, timeout=20)
        url = f"http://127.0.0.1:{port}/index.html#categories"
        shot = tmp_path / "categories.png"
        # one page load gives both: the DOM on stdout and the screenshot, taken of the same rendered page
        dom = chromium("--virtual-time-budget=15000", "--dump-dom", f"--screenshot={shot}",
                       "--window-size=1280,1200", "--hide-scrollbars", url, user_data=tmp_path / "dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        shown = {expected_category(c) for c in summary["checks"]} - {None}
        for name in shown:
            assert name in dom.stdout, name
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", dom.stderr[-2000:]
        assert shot.stat().st_size > 10_000
        print(f"screenshot: {shot}")
    finally:
        server.terminate()
        server.wait(timeout=10)
