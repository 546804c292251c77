"""metrics.prom for node_exporter's textfile collector (`acgs-verify run --metrics-file` writes it into
--collector.textfile.directory, whatever the run's end).

    acgs_verify_check_success{id="SVC-01",target="auth@app-1",severity="P0"} 1
    acgs_verify_compliance_ratio{profile="production",gate="compliance"} 0.98
    acgs_verify_run_duration_seconds{...} 1.8
    acgs_verify_last_run_timestamp_seconds{...} 1.7e9
    acgs_verify_last_run_exit_code{...} 0

Every run writes the last two, a run that could not run too (exit 3: a bad profile, nothing collected, interrupted;
write_run_status when there is no result at all), so a run that stopped working shows as such, and one that stopped
running shows as stale (deploy/prometheus/acgs-verify-rules.yml). The checks' series only when checks ran.

One sample per (id, target), the worst of its tests. A skipped check has no sample (it measured nothing), nor has
an interrupted one (it never finished), unless another test of the pair failed; a waived failure is 0 and also
counted in acgs_verify_checks{outcome="waived"}.

A check that could not measure (outcome `error`) is not a success either: its sample is 0, so the alerts on P0/P1
checks fire (no pass without evidence), and `acgs_verify_check_error{...} 1` says that this 0 is "could not
measure" (the target did not answer), not "measured, and wrong", so a rule can tell them apart:
`acgs_verify_check_success == 0 unless on (id, target, profile, gate) acgs_verify_check_error == 1` are the
measured failures.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from acgs_verify.redact import printable
from acgs_verify.report.view import outcome_word
from acgs_verify.results import FAILED_OUTCOMES, INTERRUPTED, RunResult


def _label(value: str) -> str:
    r"""A label value as the exposition format writes it. The format escapes only a backslash, a newline and a
    quote (`\r` is an invalid escape to its parser), so a CR or another control character is first shown as
    printable's `\r`, whose backslash is then escaped like any other: the sample holds `\\r`, on one line."""
    return printable(value).replace("\\", "\\\\").replace('"', '\\"')


def _labels(**kv: str) -> str:
    return "{" + ",".join(f'{k}="{_label(v)}"' for k, v in kv.items()) + "}"


def check_success(result: RunResult) -> dict[tuple[str, str], tuple[str, int]]:
    """One sample per (id, target): node_exporter rejects a file that repeats a series, and one runbook ID may be
    more than one test on a target (DB-02: the process, then its port). The worst outcome wins: 0 when any of
    them failed, 1 when all that ran passed; none when all were skipped, or one was interrupted and none failed."""
    out: dict[tuple[str, str], tuple[str, int]] = {}
    unknown = {(c.id, c.target) for c in result.checks if c.outcome == INTERRUPTED}
    for c in result.checks:
        if c.outcome in ("skipped", INTERRUPTED):
            continue
        key = (c.id, c.target)
        success = 1 if c.outcome == "passed" else 0
        out[key] = (c.severity, min(success, out[key][1]) if key in out else success)
    return {key: v for key, v in out.items() if key not in unknown or v[1] == 0}


def waived_pairs(result: RunResult) -> list[tuple[str, str, str]]:
    """(id, target, severity) of the pairs whose success sample is 0 only because of waived failures."""
    failing = {(c.id, c.target) for c in result.checks if c.failed}
    seen = dict.fromkeys((c.id, c.target, c.severity) for c in result.checks
                         if c.waived and c.outcome in FAILED_OUTCOMES and (c.id, c.target) not in failing)
    return list(seen)


def error_pairs(result: RunResult) -> list[tuple[str, str, str]]:
    """(id, target, severity) of the pairs whose success sample is 0 because they could not measure, and for no
    measured failure (a pair with both is a measured failure)."""
    wrong = {(c.id, c.target) for c in result.checks if c.failed and not c.error}
    return list(dict.fromkeys((c.id, c.target, c.severity) for c in result.checks
                              if c.error and (c.id, c.target) not in wrong))


def render_metrics(result: RunResult) -> str:
    run = _labels(profile=result.profile, gate=result.gate)
    started = datetime.fromisoformat(result.started).timestamp()
    status = render_run_status(result.profile, result.gate, result.exit_code, started + result.duration)
    if not result.checks:  # nothing ran: no check, count or ratio to say
        return status
    out = ["# HELP acgs_verify_check_success 1 when the runbook check passed, 0 when it failed or could not measure "
           "(waived or not).",
           "# TYPE acgs_verify_check_success gauge"]
    for (check_id, target), (severity, success) in check_success(result).items():
        labels = _labels(id=check_id, target=target, severity=severity, profile=result.profile, gate=result.gate)
        out.append(f"acgs_verify_check_success{labels} {success}")
    waived = waived_pairs(result)
    if waived:  # alert rules leave these out (deploy/prometheus/acgs-verify-rules.yml): someone owns the failure
        out += ["# HELP acgs_verify_check_waived 1 when the check's failure is waived (reason, owner and expiry in "
                "the run's reports).", "# TYPE acgs_verify_check_waived gauge"]
        for check_id, target, severity in waived:
            labels = _labels(id=check_id, target=target, severity=severity, profile=result.profile, gate=result.gate)
            out.append(f"acgs_verify_check_waived{labels} 1")
    errors = error_pairs(result)
    if errors:
        out += ["# HELP acgs_verify_check_error 1 when the check could not measure (its target did not answer, "
                "refused, timed out, no evidence): its success 0 is not a measured failure.",
                "# TYPE acgs_verify_check_error gauge"]
        for check_id, target, severity in errors:
            labels = _labels(id=check_id, target=target, severity=severity, profile=result.profile, gate=result.gate)
            out.append(f"acgs_verify_check_error{labels} 1")
    out += ["# HELP acgs_verify_checks Checks of the run by outcome.", "# TYPE acgs_verify_checks gauge"]
    counts: dict[str, int] = {"passed": 0, "failed": 0, "error": 0, "skipped": 0, "waived": 0, INTERRUPTED: 0}
    for c in result.checks:
        counts[outcome_word(c)] = counts.get(outcome_word(c), 0) + 1
    for outcome, n in counts.items():
        out.append(f"acgs_verify_checks{_labels(profile=result.profile, gate=result.gate, outcome=outcome)} {n}")
    if result.compliance_rate is not None:
        out += ["# HELP acgs_verify_compliance_ratio Passed (or waived) share of the checks that ran.",
                "# TYPE acgs_verify_compliance_ratio gauge",
                f"acgs_verify_compliance_ratio{run} {result.compliance_rate:.6g}"]
    out += ["# HELP acgs_verify_run_duration_seconds How long the run took.",
            "# TYPE acgs_verify_run_duration_seconds gauge",
            f"acgs_verify_run_duration_seconds{run} {result.duration:.3f}"]
    return "\n".join(out) + "\n" + status


def render_run_status(profile: str, gate: str, exit_code: int, finished: float) -> str:
    """The two series every run writes: `render_run_status("production", "compliance", 3, time.time())`."""
    run = _labels(profile=profile, gate=gate)
    return "\n".join([
        "# HELP acgs_verify_last_run_timestamp_seconds When the last run ended (Unix time), whatever its end.",
        "# TYPE acgs_verify_last_run_timestamp_seconds gauge",
        f"acgs_verify_last_run_timestamp_seconds{run} {finished:.3f}",
        "# HELP acgs_verify_last_run_exit_code The last run's exit code: 0 ok, 1 P2/P3 failed, 2 P0/P1 failed, "
        "3 could not run (bad profile or option, nothing collected, interrupted).",
        "# TYPE acgs_verify_last_run_exit_code gauge",
        f"acgs_verify_last_run_exit_code{run} {exit_code}",
    ]) + "\n"


def write_metrics(result: RunResult, path: Path) -> None:
    from acgs_verify.report import atomic_write

    atomic_write(path, render_metrics(result))


def write_run_status(path: Path, profile: str, gate: str, exit_code: int, finished: float | None = None) -> None:
    """The metrics of a run that has no result (it could not start): its exit code and when it ended."""
    import time

    from acgs_verify.report import atomic_write

    atomic_write(path, render_run_status(profile, gate, exit_code, time.time() if finished is None else finished))
