"""Control characters never reach a terminal or a report raw (issue 21, item 7), and a secret is masked before any
whitespace is normalised (item 3): an escape sequence a target hands over (a /metrics body, a /health body, a log
line, a file name, a database value, a Redis value, a process's command line) shows as `\\x1b`, never as the byte
that sets the reader's window title, clears the screen or writes the clipboard; a password with two spaces, a tab
or a newline inside shows in no form at all."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from acgs_verify.redact import printable
from acgs_verify.report import write_all
from acgs_verify.report.prometheus import render_metrics
from acgs_verify.report.terminal import findings_lines
from acgs_verify.results import CheckResult, RunResult
from tests.conftest import run_cli, sandbox_admin

# what a terminal or renderer acts on: C0 but for a newline and a tab (where the format has lines), DEL, C1, the
# bidi overrides and isolates, the line and paragraph separators, and lone surrogates
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff]")
RAW_IN_LINE = re.compile(f"[\t\n{RAW.pattern[1:-1]}]")

TITLE = "\x1b]0;owned-title\x07"  # OSC 0: the window title, ended by BEL
CLEAR = "\x1b[2J"  # CSI: clear the screen
CLIPBOARD = "\x1b]52;c;cm0gLXJmIH4=\x07"  # OSC 52: write the reader's clipboard
C1_CSI = "\x9b2J"  # the one-character CSI of C1
HOSTILE = f"{TITLE}{CLEAR}{CLIPBOARD}\r{C1_CSI}\x7f\u202eevil\u2066"

# secrets as an operator may choose them, each with whitespace that normalising would change
PW_SPACES = "Hunter  two-Kq8Zv"
PW_TAB = "Tab\tsecret-Lm4Xw"
PW_NEWLINE = "New\nline-Pd2Rt"
SECRETS = (PW_SPACES, PW_TAB, PW_NEWLINE)


def _forms(secret: str) -> set[str]:
    """Every form a leak could take: raw, whitespace-normalised, escaped, and as JSON and XML write them."""
    flat = " ".join(secret.split())
    forms = {secret, flat, printable(secret), printable(flat), printable(secret, multiline=True)}
    return forms | {json.dumps(f)[1:-1] for f in forms}


def _raw_controls(name: str, text: str, multiline: bool = True) -> list[tuple[str, str]]:
    found = (RAW if multiline else RAW_IN_LINE).findall(text)
    return [(name, repr("".join(sorted(set(found)))))] if found else []


# ------------------------------------------------------------------------------------------ the writers


def _hostile_result() -> RunResult:
    """A result whose every human string holds control characters: as `acgs-verify report` reads a summary.json
    written by another version, or edited, every writer escapes what it prints whatever the result holds."""
    def c(id_, outcome, **kw):
        return CheckResult(nodeid=f"checks/x.py::t[{id_}]", id=id_, section="services", severity="P1",
                           title=f"title {HOSTILE}", target=f"auth{HOSTILE}@app-1", outcome=outcome,
                           host=f"app{HOSTILE}", **kw)

    checks = [c("SVC-02", "failed", message=f"SVC-02 auth: measured {HOSTILE}. Next: restart {HOSTILE}",
                measured=f"status {HOSTILE}", expected=f"healthy {HOSTILE}",
                evidence={f"body {HOSTILE}": f"line one {HOSTILE}\nline two\t{HOSTILE}"}),
              c("SVC-03", "passed", warning=f"warned {HOSTILE}", measured=f"cmd {HOSTILE}"),
              c("SVC-04", "skipped", message=f"skipped {HOSTILE}"),
              c("SVC-05", "error", message=f"SVC-05 x: could not measure: {HOSTILE}. Next: {HOSTILE}")]
    return RunResult(run_id=f"r{HOSTILE}", profile=f"prod{HOSTILE}", gate="smoke",
                     started="2026-12-07T02:00:00+00:00", duration=1.0, checks=checks, notes=[f"note {HOSTILE}"],
                     gate_failures=[f"table vanished: primary: public.{HOSTILE}"])


def test_every_writer_and_the_terminal_show_control_characters_as_escapes(tmp_path):
    result = _hostile_result()
    written = write_all(result, tmp_path)
    raw = []
    for path in [p for p in tmp_path.rglob("*") if p.is_file()]:
        raw += _raw_controls(str(path.relative_to(tmp_path)), path.read_text(encoding="utf-8"))
    for line in findings_lines(result) + [result.summary_line()]:
        raw += _raw_controls("terminal", line, multiline=False)
    assert raw == [], raw
    assert len(written) >= 6
    # shown, not dropped: the reader sees that something was there, and what
    md = (tmp_path / "report.md").read_text()
    assert "\\x1b]0;owned-title\\x07" in md and "\\x9b2J" in md and "\\u202eevil" in md
    assert "\\x1b[2J" in (tmp_path / "report.html").read_text()
    assert "\\x1b]52;c;" in "\n".join(findings_lines(result))


def test_maintenance_comparison_shows_a_hostile_table_name_as_escapes():
    """post-maintenance prints what vanished since the snapshot: a table name is whatever the database holds."""
    from acgs_verify.report.diff import compare
    from acgs_verify.report.snapshot import snapshot_of

    def run(run_id: str, tables: dict) -> RunResult:
        return RunResult(run_id=run_id, profile="p", gate="post-maintenance", started="2026-12-07T02:00:00+00:00",
                         state={"tables": {"primary": {"public.policies": 1, **tables}}})

    d = compare(snapshot_of(run("a", {f"public.audit{HOSTILE}": 3})), snapshot_of(run("b", {})))
    assert d.vanished_tables, d  # the comparison saw it
    raw = [leak for line in d.lines() for leak in _raw_controls("terminal", line, multiline=False)]
    assert raw == [] and any("\\x1b]0;owned-title" in line for line in d.lines()), d.lines()


def _label_values(text: str) -> list[dict[str, str]]:
    from prometheus_client.parser import text_string_to_metric_families

    return [s.labels for family in text_string_to_metric_families(text) for s in family.samples]


def test_metrics_labels_escape_cr_newline_quote_and_backslash(tmp_path):
    target = 'a\rb\nc"d\\e' + HOSTILE
    result = RunResult(run_id="r", profile="p\r", gate="smoke", started="2026-12-07T02:00:00+00:00", duration=1.0,
                       checks=[CheckResult(nodeid="n", id="SVC-01", section="services", severity="P0", title="t",
                                           target=target, outcome="passed")])
    text = render_metrics(result)
    assert _raw_controls("metrics.prom", text) == [] and "\r" not in text
    assert all(line.startswith(("#", "acgs_verify_")) for line in text.splitlines())  # one sample, one line
    # the parser reads back what printable showed: every control character as a visible escape
    (labels,) = [lb for lb in _label_values(text) if "target" in lb]
    assert labels["target"] == printable(target) and labels["profile"] == "p\\r", labels
    if shutil.which("promtool"):
        path = tmp_path / "metrics.prom"
        path.write_text(text)
        res = subprocess.run(["promtool", "check", "metrics"], stdin=path.open(), capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr


# ------------------------------------------------------------------------------------------ one whole run

# A service of the test's own: its command line, its /health body (valid JSON: C1, DEL and bidi need no escape
# there), its /metrics body (not Prometheus text: the parser's error quotes the line) and its log all carry the
# escape sequences and the passwords.
SERVER = textwrap.dedent("""
    import http.server, json, sys
    health, metrics = sys.argv[2].encode(), sys.argv[3].encode()

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = health if self.path.startswith("/health") else metrics
            self.send_response(200)
            self.send_header("Content-Type", "application/json" if body is health else "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")


@pytest.fixture
def hostile_service(tmp_path, host_services_alone):
    """(port, log path) of the hostile service, a process whose command line carries the escape sequences."""
    import httpx

    from tests.servers import server

    script = tmp_path / "hostile_service.py"
    script.write_text(SERVER)
    health = json.dumps({"status": f"healthy\x9b2J\x7f\u202e {PW_SPACES}", "constitutional_hash": "cdd01ef066bc6cf2"},
                        ensure_ascii=False)
    metrics = f"acgs_ok 1\n{TITLE}{CLEAR} {PW_SPACES} {PW_TAB}\r{C1_CSI} 1\n"
    log = tmp_path / "hostile_service.log"
    log.write_text(
        f"2026-12-07 02:00:00,000 - auth - INFO - Constitutional Hash: cdd01ef066bc6cf2 {TITLE}\n"
        f"2026-12-07 02:00:01,000 - auth - ERROR - {TITLE}{CLEAR}{CLIPBOARD} login with {PW_SPACES} and {PW_TAB}"
        f" Constitutional Hash: 3f2a9c1b7e4d6a05\r{C1_CSI}\n"
        f"2026-12-07 02:00:02,000 - auth - ERROR - retry with {PW_NEWLINE} Constitutional Hash: 3f2a9c1b7e4d6a05"
        f" \u202eevil\n")

    def ready(port: int) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    argv = lambda port: [sys.executable, str(script), str(port), health, metrics, f"x{HOSTILE}"]  # noqa: E731
    with server("hostile service", argv, ready, tmp_path / "hostile_service.out") as (port, _):
        yield port, log


def test_nothing_a_target_says_reaches_a_terminal_or_a_report_raw(healthy_sandbox, hostile_service, tmp_path):
    import redis

    sb = healthy_sandbox
    port, log = hostile_service
    prof = yaml.safe_load(sb.profile_path.read_text())
    local = next(h for h in prof["hosts"] if h.get("backend", "local") == "local")
    local["roles"] = [*local.get("roles", []), "hostile"]  # its address is the one the service listens on
    prof["services"].append({"name": "hostile", "role": "hostile", "port": port, "health_path": "/health",
                             "metrics_path": "/metrics", "process": "hostile_service", "log": str(log)})
    cache = prof["redis"][0]
    # the passwords: profile secrets (the stale caches fail on them), which the target then quotes
    for i, name in enumerate(("T_PW_SPACES", "T_PW_TAB", "T_PW_NEWLINE")):
        stale = {k: v for k, v in cache.items() if k != "password_file"}
        prof["redis"].append({**stale, "name": f"stale-{i}", "password_env": name})
    profile = tmp_path / "hostile.yaml"
    profile.write_text(yaml.safe_dump(prof))

    # a file name in the policies directory, a database value (CC-05 names the first row with another hash) and
    # a Redis value (CC-06); the faults' heal puts the database rows and the key back
    policy_dir = prof["paths"]["policies"]
    odd_file = f"{policy_dir}/notes{TITLE}{C1_CSI}.txt"
    sb.break_fault("audit-wrong-hash")
    sb.break_fault("redis-wrong-hash")
    try:
        with open(odd_file, "w") as f:
            f.write("not a policy\n")
        with sandbox_admin(sb) as admin:
            admin.execute("UPDATE audit_logs SET constitutional_hash = %s WHERE id IN "
                          "(SELECT id FROM audit_logs ORDER BY id DESC LIMIT 3)", (f"db{TITLE}{C1_CSI}",))
        redis.Redis.from_url(cache["url"], password=sb.secret("redis"), socket_timeout=5).set(
            "acgs:constitutional_hash", f"cache{HOSTILE}")
        reports = tmp_path / "reports"
        env = {"T_PW_SPACES": PW_SPACES, "T_PW_TAB": PW_TAB, "T_PW_NEWLINE": PW_NEWLINE}
        # a process: a terminal gets what reaches the file descriptors, not only what went through sys.stdout
        res = run_cli("run", "--profile", str(profile), "--report-dir", str(reports), env=env, timeout=240,
                      process=True)
    finally:
        Path(odd_file).unlink(missing_ok=True)
    assert res.returncode == 2, res.stdout[-3000:] + res.stderr
    assert "Traceback" not in res.stdout + res.stderr

    produced = {"stdout": res.stdout, "stderr": res.stderr}
    for path in reports.rglob("*"):
        if path.is_file():
            produced[str(path.relative_to(reports))] = path.read_bytes().decode("utf-8")
    assert any("allure-results" in n and "attachment" in n for n in produced)
    assert any(n.endswith("junit.xml") for n in produced) and any(n.endswith("metrics.prom") for n in produced)
    raw = [leak for name, text in produced.items() for leak in _raw_controls(name, text)]
    assert raw == [], raw
    leaks = [(name, form) for name, text in produced.items() for s in SECRETS for form in _forms(s) if form in text]
    assert leaks == [], leaks

    summary = json.loads((reports / "latest" / "summary.json").read_text())
    by = {(c["id"], c["target"].split("@")[0]): c for c in summary["checks"]}
    # its human strings as a reader of the JSON gets them, decoded: escapes, not controls
    assert _raw_controls("summary.json, decoded", json.dumps(summary, ensure_ascii=False)) == []
    # each hostile value reached a check that reports it: the run went where the escapes could leak
    texts = {key: json.dumps(c) for key, c in by.items()}
    assert "\\\\x1b]0;owned-title\\\\x07" in texts[("CC-02", "hostile")], texts[("CC-02", "hostile")]  # log line
    assert "\\\\x9b2J" in texts[("SVC-02", "hostile")]  # /health body
    assert "\\\\x1b[2J" in texts[("SVC-10", "hostile")], by[("SVC-10", "hostile")]  # /metrics parse error
    # its command line, cut in the middle when the scratch path is long (ps shows escapes as "?")
    assert "evil" in by[("SVC-03", "hostile")]["measured"], by[("SVC-03", "hostile")]
    assert "\\\\x9b2J" in json.dumps([c for k, c in by.items() if k[0] == "CC-03"])  # a file name
    database = prof["databases"][0]["name"]
    assert "db\\\\x1b]0;owned-title" in texts[("CC-05", database)], by[("CC-05", database)]  # a database value
    assert by[("CC-06", cache["name"])]["outcome"] == "failed"  # a Redis value
