"""What `acgs-verify run --format nagios` prints on stdout: a Nagios/Icinga plugin's output, from the result model.

    >>> print(render_nagios(result))
    ACGS CRITICAL - 2 of 48 checks failed (P0: 1, P2: 1) | checks=48 passed=46 failed=2 failed_p0_p1=1;0;0 ...
    FAIL P0 SVC-01[auth@app-1] health endpoint answers 2xx: no answer from http://... Next: check `ps aux ¦ grep ...
    FAIL P2 SVC-10[auth@app-1] /metrics is scrapeable Prometheus text: ...
    >>> unknown_output("acgs-verify: error: profiles/x.yaml:3: hosts[0].port: ...")
    'ACGS UNKNOWN - acgs-verify: error: profiles/x.yaml:3: hosts[0].port: ...\\n'

The grammar is the Monitoring Plugins development guidelines' ("Output of a Monitoring Plugin"), which Nagios Core,
Icinga and NRPE read; tests/test_nagios_output.py holds it as a parser and runs it over real runs:
- the first line of stdout is the status, `ACGS <OK|WARNING|CRITICAL|UNKNOWN> - <text> | <perfdata>`; the word is
  always the exit code's (Nagios reads the code, people read the word);
- perfdata are space-separated `label=value[UOM][;warn[;crit]]`: counts without a unit, the compliance rate in `%`,
  the duration in `s`. Thresholds only where the exit code has one, as range expressions (`0`: above 0 is a
  problem): a failed P0/P1 check or a closed gate is CRITICAL, a failed P2/P3 check a WARNING. No min/max: the
  guidelines allow them only after both thresholds, and a count's bounds say nothing;
- every later line is one failed or errored check (most severe first), one interrupted check, a gate failure, or,
  when the run could not run, a note saying why. None of them holds a `|`: Nagios takes everything after the first
  `|` of a line for performance data, and the runbook's next steps say `ps aux | grep uvicorn`. Each `|` in a
  message is shown as `¦` (U+00A6 BROKEN BAR), which reads as the pipe it stands for; control characters are
  escaped (`\\x1b`), so a message is one line whatever a target said.
"""

from __future__ import annotations

import re

from acgs_verify.results import BLOCKING, INTERRUPTED, STATUS_WORD, RunResult, shortened

PIPE_SHOWN_AS = "\u00a6"  # BROKEN BAR: `ps aux ¦ grep uvicorn`
# Nagios Core keeps 8 KiB of a plugin's output (MAX_PLUGIN_OUTPUT_LENGTH): a fleet that is down fails hundreds of
# checks, and their lines would push the ones that matter past the cut. 30 lines of 250 characters fit with the
# status line; the reports list every check.
MAX_LINES = 30
LINE_MAX = 250
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SEVERITY_ORDER = {"P0": 0, "P1": 1, "P2": 2, "P3": 3}


def clean(text: str) -> str:
    """One line with no `|`: `clean("ps aux | grep x\\n")` -> 'ps aux ¦ grep x\\\\x0a'."""
    text = str(text).replace("|", PIPE_SHOWN_AS)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def perfdata(result: RunResult) -> str:
    """`checks=48 passed=46 failed=2 errors=0 failed_p0_p1=1;0;0 failed_p2_p3=1;0 ... compliance=95.83% duration=2s`"""
    t = result.totals
    by_severity = result.failed_by_severity()
    blocking = sum(n for sev, n in by_severity.items() if sev in BLOCKING)
    values = [
        # failed: measured, and wrong; errors: could not measure (a target down, not one out of bounds)
        f"checks={t['checks']}", f"passed={t['passed']}", f"failed={t['failed']}", f"errors={t['errors']}",
        # failed_p*: both, as both close the gate (no pass without evidence)
        f"failed_p0_p1={blocking};0;0",  # any is CRITICAL (warn given too: the grammar has no crit without it)
        f"failed_p2_p3={t['failed'] + t['errors'] - blocking};0",  # any is a WARNING; never CRITICAL on its own
        f"gate_failures={len(result.gate_failures)};0;0",
        f"skipped={t['skipped']}", f"waived={t['waived']}", f"warnings={t['warnings']}",
        f"interrupted={t['interrupted']}", f"not_run={t['not_run']}",
    ]
    if result.compliance_rate is not None:  # nothing ran to its end: no rate rather than a made-up one
        values.append(f"compliance={_number(result.compliance_rate * 100)}%")
    values.append(f"duration={_number(result.duration)}s")
    return " ".join(values)


def _number(value: float) -> str:
    """Fixed point, never scientific notation (the guidelines: some systems cannot read `6e-05`)."""
    return f"{value:.2f}".rstrip("0").rstrip(".") or "0"


def status_text(result: RunResult) -> str:
    """The summary line's text, as `acgs-verify run` prints it last, without its status word and perfdata."""
    head = result.summary_line().rpartition(" | ")[0]  # the text may hold " | " (a gate failure), perf never does
    text = head.removeprefix(f"ACGS {STATUS_WORD[result.exit_code]} - ")
    if (result.extra.get("comparison") or {}).get("baseline_gate_closed"):
        text += "; the baseline's own gate was closed"  # as gates.last_line says it on the text output
    return text


def detail_lines(result: RunResult) -> list[str]:
    """The lines after the status: gate failures, failed and errored checks (P0 first), interrupted checks, and
    the notes of a run that could not run; at most MAX_LINES, the last one saying how many more the reports hold."""
    from acgs_verify.report.view import reach_blocks, unreachable_of

    failed = sorted((c for c in result.failed if unreachable_of(c) is None),
                    key=lambda c: _SEVERITY_ORDER.get(c.severity, len(_SEVERITY_ORDER)))
    # a host that did not answer is one line, not one per check on it
    lines = [shortened(f"UNREACHABLE {b.target}: {b.line}: {b.error}. Next: {b.next_step}", LINE_MAX)
             for b in reach_blocks(result)]
    lines += [f"GATE {g}" for g in result.gate_failures]
    for c in failed + [c for c in result.checks if c.outcome == INTERRUPTED]:
        tag = {"failed": "FAIL", "error": "ERROR"}.get(c.outcome, c.outcome.upper())
        found, step = c.finding()
        lines.append(shortened(f"{tag} {c.severity} {c.name} {c.title}: {found}" + (f". Next: {step}" if step else ""),
                               LINE_MAX))
    if result.exit_code == 3:
        lines += [f"NOTE {n}" for n in result.notes]
    if len(lines) > MAX_LINES:
        more = len(lines) - (MAX_LINES - 1)
        lines = lines[: MAX_LINES - 1] + [f"... and {more} more: every check is in the run's reports "
                                          f"({result.run_id})"]
    return [clean(line) for line in lines]


def render_nagios(result: RunResult) -> str:
    """The whole stdout of a run in nagios format: the status line, then detail_lines(), each ending in a newline."""
    first = f"ACGS {STATUS_WORD[result.exit_code]} - {clean(status_text(result))} | {perfdata(result)}"
    return "\n".join([first, *detail_lines(result)]) + "\n"


def unknown_output(reason: str) -> str:
    """The stdout of a run that could not start (a bad profile, a bad option): one UNKNOWN line saying why."""
    return f"ACGS UNKNOWN - {clean(' '.join(str(reason).split()) or 'could not run')}\n"
