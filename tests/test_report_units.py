"""Snapshot, diff, waivers, log windows, history, masking and the writers (Allure too), over hand-built results."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from acgs_verify.options import parse_since
from acgs_verify.probes.logs import within
from acgs_verify.report import allure, mask_files
from acgs_verify.report.diff import compare
from acgs_verify.report.history import append_history, read_history
from acgs_verify.report.markdown import render_markdown
from acgs_verify.report.prometheus import render_metrics
from acgs_verify.report.snapshot import snapshot_of
from acgs_verify.results import CheckResult, RunResult
from acgs_verify.waivers import WaiverError, apply_waivers, load_waivers
from tests.servers import redis_server


def check(id_="SVC-06", target="auth@app-1", outcome="passed", severity="P1", **kw) -> CheckResult:
    return CheckResult(nodeid=f"checks/x.py::t[{id_}-{target}]", id=id_, section="services", severity=severity,
                       title="t", target=target, outcome=outcome, **kw)


def run(checks, run_id="r1", state=None) -> RunResult:
    r = RunResult(run_id=run_id, profile="p", gate="pre-maintenance", started="2025-06-01T02:00:00+00:00",
                  duration=1.5, checks=checks)
    if state is not None:
        r.extra["state"] = state
    return r


def body(version: str) -> dict:
    return {"health body": json.dumps({"status": "healthy", "version": version})}


# ------------------------------------------------------------------------------------------ diff


def test_regression_vanished_table_and_key_and_version_change_are_named():
    before = run([check("SVC-01", outcome="passed"), check("SVC-02", evidence=body("4.0.0")),
                  check("SVC-06", outcome="passed"), check("SVC-07", outcome="failed")],
                 state={"tables": {"primary": {"public.policies": 14, "public.audit_logs": 9}},
                        "redis": {"cache": {"keys": 2, "names": ["a", "b"]}}})
    after = run([check("SVC-01", outcome="passed"), check("SVC-02", evidence=body("4.1.0")),
                 check("SVC-06", outcome="failed"), check("SVC-07", outcome="passed")], run_id="r2",
                state={"tables": {"primary": {"public.audit_logs": 9}},
                       "redis": {"cache": {"keys": 1, "names": ["a"]}}})
    d = compare(snapshot_of(before), snapshot_of(after), {"SVC-06[auth@app-1]": "SVC-06 auth@app-1: p99 150 ms"})
    assert [r["name"] for r in d.regressions] == ["SVC-06[auth@app-1]"]
    assert d.fixed == ["SVC-07[auth@app-1]"]
    assert d.vanished_tables == ["primary: public.policies"]
    assert d.vanished_keys == ["cache: b"]
    assert d.versions_changed == [{"service": "auth@app-1", "before": "4.0.0", "after": "4.1.0"}]
    assert d.gate_failures() == ["regression: SVC-06[auth@app-1] passed before, fails now",
                                 "table vanished: primary: public.policies"]
    assert any(line.startswith("REGRESSION P1 SVC-06[auth@app-1]") and "p99 150 ms" in line for line in d.lines())


def test_service_that_stops_answering_vanishes_and_a_waived_regression_does_not_close_the_gate():
    before = run([check("SVC-01", outcome="passed", severity="P0")])
    after = run([check("SVC-01", outcome="failed", severity="P0", waived={"reason": "x"})], run_id="r2")
    d = compare(snapshot_of(before), snapshot_of(after))
    assert d.vanished_services == ["auth@app-1"]
    assert d.regressions[0]["waived"] is True
    assert d.gate_failures() == ["service vanished: auth@app-1"]


def test_large_keyspace_is_compared_by_count_and_missing_sources_are_not_called_vanished():
    before = run([], state={"tables": {"primary": {"t": 1}}, "redis": {"cache": {"keys": 5000, "names": None}}})
    after = run([], state={"tables": {}, "redis": {"cache": {"keys": 4000, "names": None}}})
    d = compare(snapshot_of(before), snapshot_of(after))
    assert d.vanished_keys == ["cache: 1000 keys (of 5000)"]
    assert d.vanished_tables == [] and any("no table list now" in n for n in d.notes)


def test_gate_failures_make_the_run_critical_and_show_in_the_summary_line():
    r = run([check(severity="P3")])
    r.gate_failures.append("table vanished: primary: public.policies")
    assert r.exit_code == 2
    assert "gate closed: table vanished: primary: public.policies" in r.summary_line()
    again = RunResult.from_dict(json.loads(json.dumps(r.as_dict())))
    assert again.gate_failures == r.gate_failures and again.exit_code == 2


# --------------------------------------------------------------------------------------- waivers


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "waivers.yaml"
    p.write_text(text)
    return p


def test_waiver_waives_until_it_expires_and_unused_waivers_are_reported(tmp_path):
    waivers = load_waivers(write(tmp_path, """
waivers:
  - {id: SVC-06, target: "auth@*", reason: warm-up, owner: alice, expires: 2025-06-30}
  - {id: SVC-01, target: "nothing@*", reason: old, owner: bob, expires: 2025-06-30}
  - {id: SVC-07, reason: fixed long ago, owner: carol, expires: 2025-06-30}
"""))
    live = [check(outcome="failed"), check("SVC-07")]
    notes = apply_waivers(live, waivers, date(2025, 6, 30))
    assert live[0].waived["owner"] == "alice" and not live[0].failed
    assert run(live).exit_code == 0
    assert any("SVC-01 nothing@*" in n and "matches no check" in n for n in notes)
    assert any("SVC-07 *" in n and "only passing checks" in n for n in notes)

    late = [check(outcome="failed", message="SVC-06 auth@app-1: p99 150 ms")]
    notes = apply_waivers(late, waivers, date(2025, 7, 1))
    assert late[0].waived is None and late[0].failed and run(late).exit_code == 2
    assert "waiver expired 2025-06-30" in late[0].message
    assert any("expired on 2025-06-30" in n for n in notes)


@pytest.mark.parametrize("text, expected", [
    ("waivers:\n  - {id: SVC-99, reason: r, owner: o, expires: 2025-01-01}\n", "waivers.yaml:2: waivers[0].id"),
    ("waivers:\n  - id: SVC-01\n    reason: r\n    owner: o\n", "waivers.yaml:2: waivers[0].expires"),
    ("waivers:\n  - {id: SVC-01, reason: r, owner: o, expires: soon}\n", "waivers.yaml:2: waivers[0].expires"),
    ("waivers: [\n", "YAML syntax error"),
    ("- {id: SVC-01}\n", "a waivers file is a mapping"),
])
def test_bad_waiver_file_is_one_line_naming_file_line_field(tmp_path, text, expected):
    with pytest.raises(WaiverError) as exc:
        load_waivers(write(tmp_path, text))
    assert expected in str(exc.value) and "\n" not in str(exc.value)


# ------------------------------------------------------------------------------------ log windows


def test_window_keeps_lines_since_and_continuations_follow_their_line(monkeypatch):
    lines = ["2025-06-01 01:00:00,000 - auth - INFO - old", "Traceback (old)",
             '{"timestamp": "2025-06-01T02:30:00.000Z", "message": "new"}', "  continuation of new",
             "2025-06-01 05:00:00,500 - auth - INFO - newer"]  # 03:00 UTC
    monkeypatch.setenv("TZ", "Europe/Berlin")  # plain lines carry local time without a zone: 01:00 is 23:00 UTC
    time.tzset()
    try:
        assert within(lines, datetime(2025, 5, 31, 23, 0, tzinfo=UTC)) == lines
        assert within(lines, datetime(2025, 6, 1, 2, 0, tzinfo=UTC)) == lines[2:]
        assert within(lines, datetime(2025, 6, 1, 2, 0, tzinfo=timezone(timedelta(hours=2)))) == lines[2:]
        assert within(lines, datetime(2025, 6, 1, 4, 0, tzinfo=UTC)) == []
    finally:
        monkeypatch.undo()
        time.tzset()


def test_window_over_a_log_without_timestamps_keeps_it_whole():
    assert within(["a", "b"], datetime.now(UTC)) == ["a", "b"]


def test_since_accepts_durations_and_iso_times_and_rejects_the_rest():
    now = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("90s", now) == now - timedelta(seconds=90)
    assert parse_since("2025-06-01T10:00:00Z") == datetime(2025, 6, 1, 10, 0, tzinfo=UTC)
    with pytest.raises(ValueError, match="expected an ISO time"):
        parse_since("yesterday")


# ----------------------------------------------------------------------------- history, writers


def test_history_lines_from_concurrent_writers_never_interleave(tmp_path):
    r = run([check()])
    writer = ("import os, sys\nfd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT)\n"
              "for _ in range(200): os.write(fd, (sys.argv[2] + '\\n').encode())\n")
    procs = [subprocess.Popen(["python3", "-c", writer, str(tmp_path / "history.jsonl"),
                               json.dumps({"profile": "q", "n": i})]) for i in range(3)]
    for _ in range(50):
        append_history(r, tmp_path)
    for p in procs:
        p.wait(timeout=30)
    entries = read_history(tmp_path, limit=10_000)
    assert len(entries) == 650
    assert read_history(tmp_path, profile="p", limit=5)[-1]["profile"] == "p"


def test_markdown_and_metrics_escape_what_they_must():
    r = run([check(outcome="failed", target='a|b"c@app-1', message="pipe | in it", evidence={"x": "```code```"})])
    md = render_markdown(r)
    # a pipe ends a table cell, not a paragraph: escaped in the table only
    assert "\npipe | in it\n" in md and '| a\\|b"c@app-1 |' in md and "````\n```code```\n````" in md
    prom = render_metrics(r)
    assert 'target="a|b\\"c@app-1"' in prom


def test_mask_files_masks_raw_json_and_xml_forms(tmp_path):
    secret = 'pa"ss<wo>rd'
    (tmp_path / "junit.xml").write_text('<p value="pa&quot;ss&lt;wo&gt;rd"/>')
    (tmp_path / "r.json").write_text(json.dumps({"message": f"dsn password {secret}"}))
    assert mask_files([tmp_path / "junit.xml", tmp_path / "r.json"], [secret]) == 2
    for f in ("junit.xml", "r.json"):
        text = (tmp_path / f).read_text()
        assert "***" in text and "ss&lt;wo" not in text and 'ss\\"' not in text


# ------------------------------------------------------------------------------- Redis state seam


def test_state_counts_and_names_redis_keys_through_the_probe(tmp_path):
    import redis

    from acgs_verify.probes.redis import RedisProbe
    from acgs_verify.probes.state import redis_keys

    with redis_server(tmp_path, password="s3cret-pw") as port:
        with redis.Redis(host="127.0.0.1", port=port, password="s3cret-pw") as client:
            client.mset({"acgs:constitutional_hash": "cdd01ef066bc6cf2", "acgs:x": "1"})
        probe = RedisProbe(f"redis://127.0.0.1:{port}/0", "s3cret-pw", timeout=3)
        try:
            assert redis_keys(probe) == {"keys": 2, "names": ["acgs:constitutional_hash", "acgs:x"]}
        finally:
            probe.close()


def test_a_gate_without_recorded_state_names_each_source_it_could_not_compare(write_profile):
    from acgs_verify.profile import load_profile
    from acgs_verify.run_state import empty, unrecorded

    assert unrecorded(empty(), load_profile(str(write_profile("hosts: [{name: a}]\n")))) == []
    profile = load_profile(str(write_profile("redis:\n  - {name: cache, url: 'redis://127.0.0.1:1/0'}\n", "r.yaml")))
    assert unrecorded(empty(), profile) == ["redis cache: not compared: RD-01 did not run on it in this run"]
    recorded = {**empty(), "errors": ["redis cache: could not count keys: refused"]}
    assert unrecorded(recorded, profile) == []  # its error says why already


def test_allure_results_written_from_the_result_model(tmp_path):
    checks = [
        CheckResult(nodeid="checks/test_services.py::test_health_endpoint_answers[auth@app-1]", id="SVC-01",
                    section="services", severity="P0", title="health endpoint answers 2xx", target="auth@app-1",
                    outcome="failed", message="SVC-01 auth@app-1: measured HTTP 503", measured="HTTP 503",
                    expected="2xx", evidence={"health body": '{"status": "unhealthy"}'}, duration=0.01, host="app-1"),
        CheckResult(nodeid="checks/test_system.py::test_load_average[app-1]", id="SYS-01", section="system",
                    severity="P2", title="load", target="app-1", outcome="error", message="fixture broke"),
    ]
    result = RunResult(run_id="r1", profile="sandbox", gate="smoke", started="2025-01-01T00:00:00+00:00",
                       duration=1.0, constitutional_hash="cdd01ef066bc6cf2", checks=checks)
    allure.write_results(result, tmp_path)
    allure.write_results(result, tmp_path)  # `acgs-verify report` again: the same files, not twice as many
    docs = {d["name"]: d for d in (json.loads(p.read_text()) for p in tmp_path.glob("*-result.json"))}
    # the failure: its measurement and its evidence; the error: what it said, expected and the next step
    assert len(docs) == 2 and len(list(tmp_path.glob("*-attachment.txt"))) == 3
    svc = docs["test_health_endpoint_answers[auth@app-1]"]
    assert svc["status"] == "failed" and svc["statusDetails"]["message"].startswith("SVC-01 auth@app-1")
    labels = {(x["name"], x["value"]) for x in svc["labels"]}
    assert {("severity", "blocker"), ("epic", "Service health"), ("host", "app-1")} <= labels
    (body,) = [a for a in svc["attachments"] if a["name"] == "health body"]
    assert "unhealthy" in (tmp_path / body["source"]).read_text()
    assert docs["test_load_average[app-1]"]["status"] == "broken"


def test_html_template_compiled_once_beside_it_and_never_served_stale(tmp_path, monkeypatch):
    """report.html's template is compiled into a bytecode cache beside it (`make env`) and loaded from there: the
    same page as compiling it afresh. A changed template is compiled again, never served from the cache."""
    import shutil

    import jinja2

    from acgs_verify.report import html

    templates = tmp_path / "templates"
    shutil.copytree(html.TEMPLATES, templates, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(html, "TEMPLATES", templates)
    result = run([check(), check("DB-01", "primary", "failed", "P0", message="server down")])
    fresh = html.render_html(result)
    html.compile_template()
    assert len(list((templates / "__pycache__").glob("*.cache"))) == 1

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled although the cache holds this source")

    with monkeypatch.context() as m:
        m.setattr(jinja2.Environment, "compile", no_compiling)
        assert html.render_html(result) == fresh
    path = templates / html.TEMPLATE
    path.write_text(path.read_text(encoding="utf-8").replace("</body>", "<p>changed</p></body>"), encoding="utf-8")
    assert "<p>changed</p>" in html.render_html(result)
