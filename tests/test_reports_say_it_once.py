"""What the writers show, over hand-built results: each failure said once, one metrics series per check and
target, Markdown that renders as typed, hosts apart from other targets, a trend axis with distinct times,
interrupted runs called interrupted, unreachable hosts as one terminal line each, and `diff`'s measured values."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

from acgs_verify.report.html import render_html, trend_svg
from acgs_verify.report.markdown import render_markdown
from acgs_verify.report.prometheus import render_metrics
from acgs_verify.report.summary import write_summary
from acgs_verify.report.view import view_of
from acgs_verify.results import CheckResult, RunResult
from tests.conftest import run_cli

NEXT = {"BK-01": "Backup and Recovery: run ./scripts/backup_full_system.sh; check the backup timer",
        "SVC-01": "Service Outage: check `ps aux | grep uvicorn`, then `sudo systemctl restart <unit>` and "
                  "`tail -f <log>`",
        "SYS-01": "Root Cause Investigation: top; iostat -x 1 5; vmstat 1 5"}


def check(id_="SVC-01", target="auth@app-1", outcome="passed", severity="P0", host="app-1", **kw) -> CheckResult:
    kw.setdefault("next_step", NEXT.get(id_, "read the runbook"))
    return CheckResult(nodeid=f"checks/x.py::t_{id_}[{target}]-{kw.pop('n', 0)}", id=id_, section="services",
                       severity=severity, title=f"{id_} title", target=target, outcome=outcome, host=host, **kw)


def failing(id_, target, measured, expected, host="app-1", severity="P0", section="services") -> CheckResult:
    """A failure worded as check.that words it."""
    c = check(id_, target, "failed", severity, host, measured=measured, expected=expected,
              message=f"{id_} {target}: measured {measured}; expected {expected}. Next: {NEXT.get(id_, 'x')}")
    c.section = section
    return c


def reach(target: str) -> str:
    return f"restore the connection to {target}, then run again: `ssh -v acgs@10.0.0.9`"


def unmeasured(id_, target, why, host="app-1", severity="P1", n=0, unreachable=None) -> CheckResult:
    """A check that could not measure, worded as the plugin words a ProbeError: error, with the reach step."""
    step = reach(unreachable or host or target)
    return check(id_, target, "error", severity, host, n=n, unreachable=unreachable, next_step=step,
                 message=f"{id_} {target}: could not measure: {why}. Next: {step}")


def run(checks, run_id="r1", **kw) -> RunResult:
    return RunResult(run_id=run_id, profile="p", gate="compliance", started="2025-06-01T02:00:00+00:00",
                     duration=1.5, checks=checks, **kw)


class _Cards(HTMLParser):
    """The text of each `<div class="failure ...">` of report.html."""

    def __init__(self):
        super().__init__()
        self.cards: list[str] = []
        self._depth = 0

    def handle_starttag(self, tag, attrs):
        if tag == "div" and "failure" in (dict(attrs).get("class") or "").split():
            self.cards.append("")
            self._depth = 1
        elif tag == "div" and self._depth:
            self._depth += 1

    def handle_endtag(self, tag):
        if tag == "div" and self._depth:
            self._depth -= 1

    def handle_data(self, data):
        if self._depth:
            self.cards[-1] += data


def cards(html: str) -> list[str]:
    parser = _Cards()
    parser.feed(html)
    return [" ".join(c.split()) for c in parser.cards]


# ------------------------------------------------------------------------------------ failure cards


def test_each_failure_card_says_its_measurement_and_next_step_once():
    r = run([failing("BK-01", "backups", "latest backup 20250530 written 49.0 h ago", "<= 26 h", host=None,
                     severity="P1", section="backups"),
             failing("SVC-01", "auth@app-1", "HTTP 503 in 2 ms", "2xx within 2 s")])
    html_cards, md = cards(render_html(r)), render_markdown(r)
    (svc, bk) = html_cards  # P0 first
    md_svc, md_bk = md.split("## Failures (2)")[1].split("\n## ")[0].split("### ")[1:3]
    for text in (svc, md_svc):
        assert text.count("HTTP 503 in 2 ms") == 1 and text.count("ps aux") == 1, text
    for text in (bk, md_bk):
        assert text.count("written 49.0 h ago") == 1 and text.count("backup_full_system.sh") == 1, text
    assert "Next step: Service Outage" in svc
    assert "Measured: latest backup 20250530 written 49.0 h ago; expected: <= 26 h" in bk
    assert "BK-01 backups:" not in bk  # the heading names the check already


def test_a_check_that_could_not_measure_is_no_failure_card_and_offers_its_reach_step_not_a_repair():
    r = run([failing("BK-01", "backups", "49 h", "<= 26 h", host=None, severity="P1", section="backups"),
             unmeasured("SVC-03", "auth@app-1", "cannot read the process table: permission denied", severity="P0")])
    html, md = render_html(r), render_markdown(r)
    assert len(cards(html)) == 1 and "BK-01" in cards(html)[0]  # failure cards: only what measured wrong
    assert "## Failures (1)" in md and "## Could not measure (1)" in md
    section = md.split("## Could not measure (1)")[1].split("\n## ")[0]
    assert "could not measure: cannot read the process table: permission denied" in section
    assert f"**Reach step:** {reach('app-1')}" in section and "Next step" not in section
    assert "Reach step: restore the connection to app-1" in html
    for text in (html, md):
        assert "ps aux" not in text  # SVC-01's runbook repair, offered for nothing that was measured


def test_a_finding_that_quotes_its_measurement_is_not_followed_by_it_again():
    c = check("SVC-01", outcome="failed", measured="HTTP 503 in 2 ms", expected="2xx within 2 s",
              message="SVC-01 auth@app-1: answered HTTP 503 in 2 ms. Next: restart it")
    (card,) = cards(render_html(run([c])))
    assert card.count("HTTP 503 in 2 ms") == 1 and "Next step: restart it" in card


# ----------------------------------------------------------------------------------------- metrics


def test_metrics_have_one_series_per_check_and_target_with_the_worst_outcome():
    from prometheus_client.parser import text_string_to_metric_families

    # DB-02 is two tests on one target (the process, then its port); a duplicate must never reach the file
    r = run([check("DB-02", "primary@app-1", n=1), check("DB-02", "primary@app-1", "failed", n=2),
             check("DB-08", "primary", n=1), check("DB-08", "primary", n=2),
             check("SVC-05", outcome="skipped", n=1), check("SVC-05", outcome="skipped", n=2)])
    text = render_metrics(r)
    series = [(s.name, tuple(sorted(s.labels.items()))) for f in text_string_to_metric_families(text)
              for s in f.samples]
    assert len(series) == len(set(series)), text
    success = {(s.labels["id"], s.labels["target"]): s.value for f in text_string_to_metric_families(text)
               for s in f.samples if s.name == "acgs_verify_check_success"}
    assert success == {("DB-02", "primary@app-1"): 0, ("DB-08", "primary"): 1}


# ---------------------------------------------------------------------------------------- markdown


def _code_spans(line: str) -> list[str]:
    """The code spans of one line as CommonMark reads them (a run of N backticks closes at the next run of N)."""
    runs = [(m.start(), m.end()) for m in re.finditer(r"`+", line)]
    spans, k = [], 0
    while k < len(runs):
        n = runs[k][1] - runs[k][0]
        j = next((j for j in range(k + 1, len(runs)) if runs[j][1] - runs[j][0] == n), None)
        if j is None:
            k += 1
            continue
        spans.append(line[runs[k][1]:runs[j][0]])
        k = j + 1
    return spans


def test_markdown_keeps_commands_as_typed_and_escapes_only_outside_code_spans():
    c = check("SVC-01", "auth@app-1", "failed",
              message=f"SVC-01 auth@app-1: could not measure: cannot read `/var/log/acgs/*.log` as <user>. "
                      f"Next: {NEXT['SVC-01']}")
    waived = check("SVC-01", "a`b@app-1", "failed", waived={"reason": "see `ps aux | grep x`", "owner": "o",
                                                           "expires": "2099-01-01"})
    md = render_markdown(run([c, waived]))
    (next_line,) = [line for line in md.splitlines() if line.startswith("**Next step:**")]
    assert _code_spans(next_line) == ["ps aux | grep uvicorn", "sudo systemctl restart <unit>", "tail -f <log>"]
    (why,) = [line for line in md.splitlines() if line.startswith("could not measure")]
    assert _code_spans(why) == ["/var/log/acgs/*.log"] and "as \\<user>" in why  # not an HTML tag
    (row,) = [line for line in md.splitlines() if line.startswith("| ``SVC-01[a`b@app-1]")]
    # a table cell: the name with a backtick in a longer fence; `|` inside a code span as GFM tables need it
    assert row.startswith("| ``SVC-01[a`b@app-1]`` | see `ps aux \\| grep x` |")
    for line in md.splitlines():
        if not line.startswith("|"):
            assert all("\\" not in span for span in _code_spans(line)), line


# --------------------------------------------------------------------------------- hosts and targets


def test_per_host_lists_hosts_and_other_targets_have_a_table_of_their_own():
    r = run([check("SVC-01"), check("SYS-01", "ops-1", host="ops-1"),
             failing("BK-01", "backups", "49 h", "<= 26 h", host=None, severity="P1", section="backups"),
             check("TLS-01", "/etc/ssl/acgs/cert.pem", host=None)])
    v = view_of(r)
    assert [h.host for h in v.hosts] == ["app-1", "ops-1"]
    assert [(o.host, o.kind) for o in v.others] == [("/etc/ssl/acgs/cert.pem", "Service health"),
                                                    ("backups", "Backups")]
    html, md = render_html(r), render_markdown(r)
    hosts_table = html[html.index('id="hosts"'):html.index('id="targets"')]
    assert "app-1" in hosts_table and "backups" not in hosts_table and "cert.pem" not in hosts_table
    assert "## Other targets" in md and md.index("| backups |") > md.index("## Other targets")


# -------------------------------------------------------------------------------------------- trend


def test_trend_axis_shows_distinct_readable_times():
    from acgs_verify.report.html import axis_labels

    same_day = [f"2025-06-01T02:{m:02d}:00+00:00" for m in (0, 5, 10)]
    assert axis_labels(same_day) == ([(0, "02:00"), (1, "02:05"), (2, "02:10")], "run start, UTC, 2025-06-01")
    days = axis_labels([f"2025-06-{d:02d}T02:00:00+00:00" for d in range(1, 31)])[0]
    assert len(days) == 5 and len({t for _, t in days}) == 5 and days[0] == (0, "2025-06-01")
    mixed = axis_labels(["2025-06-01T23:00:00+00:00", "2025-06-02T01:00:00+00:00", "2025-06-02T01:30:00+00:00"])
    assert [t for _, t in mixed[0]] == ["06-01 23:00", "06-02 01:00", "06-02 01:30"]
    svg = trend_svg([{"started": s, "compliance_rate": 1.0, "exit_code": 0} for s in same_day])
    labels = re.findall(r'text-anchor="(?:start|middle|end)">([^<]*)</text>', svg)
    assert {"02:00", "02:05", "02:10"} <= set(labels)


# -------------------------------------------------------------------------------------- interrupted


def test_an_interrupted_run_says_how_many_of_how_many_checks_ran():
    r = run([check("SVC-01", n=1), check("SVC-01", "x@app-1", n=2)], complete=False, planned=6)
    assert "run interrupted after 2 of 6 checks" in r.summary_line()
    nothing = run([], complete=False, planned=6)
    assert "run interrupted after 0 of 6 checks" in nothing.summary_line() and nothing.exit_code == 3
    again = RunResult.from_dict(json.loads(json.dumps(nothing.as_dict())))
    assert again.planned == 6 and again.summary_line() == nothing.summary_line()
    for text in (render_html(nothing), render_markdown(nothing)):
        assert "Interrupted: 0 of 6 checks ran; the other 6 did not run" in text and "no checks" not in text


# --------------------------------------------------------------------------------------- terminal


def test_an_unreachable_host_is_one_terminal_line_and_one_cause_shares_a_line():
    from acgs_verify.report.terminal import findings_lines

    why = "host unreachable: ssh: connect to host 10.0.0.9 port 22: Connection refused"
    r = run([unmeasured("SYS-01", "ops-1", why, host="ops-1", severity="P2", n=1, unreachable="ops-1"),
             unmeasured("SEC-06", "ops-1", why, host="ops-1", severity="P0", n=2, unreachable="ops-1"),
             unmeasured("SVC-02", "auth@ops-1", "no answer from http://10.0.0.9:8016/health: timed out",
                        host="ops-1", severity="P0", n=5, unreachable="ops-1"),
             unmeasured("DB-03", "primary", "cannot connect to postgresql://acgs@db:5432/x (after 0.1 s): refused",
                        host=None, n=3),
             unmeasured("DB-04", "primary", "cannot connect to postgresql://acgs@db:5432/x (after 0.3 s): refused",
                        host=None, n=4),
             failing("BK-01", "backups", "49 h", "<= 26 h", host=None, severity="P1"),
             check("SVC-01", "auth@app-1")])
    lines = findings_lines(r)
    # the unreachable host first: one line, its checks folded into it, its reach step and no runbook repair
    assert lines[0] == f"UNREACHABLE ops-1: 3 checks on ops-1 could not measure (P0: 2, P2: 1): {why}. " \
                       f"Next: {reach('ops-1')}"
    assert lines[1] == "hosts: ops-1 0 passed 0 failed 3 could not measure, app-1 1 passed 0 failed"
    assert [line for line in lines if "ops-1" in line] == lines[:2]
    db, same = [line for line in lines if "primary" in line]
    assert db.startswith("ERROR P1 DB-03[primary] DB-03 title: DB-03 primary: could not measure: cannot connect")
    # the others of one cause on a line of their own, never at the end of a long message
    assert "DB-04" not in db and lines[lines.index(db) + 1] == same
    assert same == "  the same for 1 more check (P1: 1): DB-04[primary]"
    assert any(line.startswith("FAIL P1 BK-01[backups]") for line in lines) and len(lines) == 5


def test_the_terminal_waived_line_says_whose_waiver_why_and_until_when():
    from acgs_verify.report.terminal import findings_lines

    c = failing("SVC-06", "auth@app-1", "p99 150 ms", "p99 < 100 ms", severity="P1")
    c.waived = {"reason": "JIT warm-up after deploy, OPS-1234", "owner": "alice", "expires": "2026-12-31"}
    (line,) = [line for line in findings_lines(run([c, check("SVC-01", "auth@app-2", host="app-2")]))
               if line.startswith("WAIVED")]
    assert line.startswith("WAIVED P1 SVC-06[auth@app-1] SVC-06 title (waived until 2026-12-31 by alice: "
                           "JIT warm-up after deploy, OPS-1234): SVC-06 auth@app-1: measured p99 150 ms"), line


# ------------------------------------------------------------------------------------------- diff


def test_diff_prints_what_regressions_measured_and_a_short_last_line(tmp_path):
    before = run([check("SVC-01", f"{s}@app-1", measured="HTTP 200 in 2 ms", n=i)
                  for i, s in enumerate(("auth", "policy", "synthesis"))])
    after = run([unmeasured("SVC-01", f"{s}@app-1", f"no answer from http://127.0.0.1:{p}/health: connection "
                            "refused", severity="P0", n=i)
                 for i, (s, p) in enumerate((("auth", 8016), ("policy", 8003), ("synthesis", 8004)))], run_id="r2")
    write_summary(before, tmp_path / "a" / "summary.json")
    write_summary(after, tmp_path / "b" / "summary.json")
    res = run_cli("diff", str(tmp_path / "a"), str(tmp_path / "b"))
    assert res.returncode == 2, res.stderr
    lines = res.stdout.strip().splitlines()
    assert "REGRESSION P0 SVC-01[auth@app-1] passed before, error now: could not measure: no answer from " \
           "http://127.0.0.1:8016/health: connection refused (before: HTTP 200 in 2 ms)" in lines
    assert lines[-1] == ("ACGS DIFF CRITICAL - r1 -> r2: regression: SVC-01[auth@app-1] passed before, fails now "
                         "(+5 more) | regressions=3 fixed=0 versions_changed=0")
