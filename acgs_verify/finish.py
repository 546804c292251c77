"""The end of every run: `acgs-verify run`, `acgs-verify merge` and plain `pytest checks` all finish here, so the
reports they write and the lines they print cannot drift apart.

>>> run_dir = finish_run(result, partial, report_dir, secrets, gate=(plan, profile))
reports: reports/20250601T020000Z-sandbox-smoke-1a2b/ (report.html, report.md, summary.json, junit.xml, ...)
ESCALATION P1: notify Level 1 on-call engineer within 1 hour
ACGS CRITICAL - 1 of 48 checks failed (P1: 1) | passed=47 failed=1 errors=0 skipped=0 duration=1.8s

What it does, in order: the gate's own rules over what the run measured (gates.finish; `merge` has none, each
shard judged its own), the trend, the run directory (rundir.finish) when there is one, then the lines: the
gate's and the caller's, where the reports are, the escalation, and the summary line last (gates.last_line).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acgs_verify.redact import printable
from acgs_verify.results import RunResult

REPORT_FILES = "report.html, report.md, summary.json, junit.xml, metrics.prom, allure-results/"


@dataclass
class Ending:
    """What a run's end prints, once its reports are written: close_run's answer, say_ending's input."""

    run_dir: Path | None = None  # None: no run directory was written
    problem: str | None = None  # the reports could not be written: one line for stderr
    lines: list[str] = field(default_factory=list)  # the gate's and the caller's, before "reports: ..."
    profile: Any = None


def finish_run(result: RunResult, partial: Path | None, report_dir: Path | None, secrets: list[str],
               gate: tuple | None = None, started: float | None = None, lines: Iterable[str] = (),
               written: Callable[[RunResult], None] | None = None, say: Callable[[str], None] = print,
               pool=None) -> Path | None:
    """Judge, write and print the end of a run (close_run, then say_ending); returns the run directory, or None.

    written: called once the reports are written (or could not be), before any line: `run --metrics-file`.
    """
    ending = close_run(result, partial, report_dir, secrets, gate, started, lines, pool)
    if written is not None:
        written(result)
    say_ending(result, ending, say)
    return ending.run_dir


def close_run(result: RunResult, partial: Path | None, report_dir: Path | None, secrets: list[str],
              gate: tuple | None = None, started: float | None = None, lines: Iterable[str] = (),
              pool=None) -> Ending:
    """The gate's rules, the trend and the run directory. Plain pytest calls it at session finish (so that the
    gate's verdict is pytest's exit status) and say_ending after pytest's own last line.

    partial: the run's .partial-* directory (None: a plain pytest run without --report-dir writes nothing).
    gate: (GatePlan, Profile) for the gate's own rules; None when they were applied already (a merge of shards).
    started: the run's start (time.time()), when its duration should include the gate stage.
    lines: the caller's own lines, printed after the gate's (merge: which shards it joined).
    pool: the run's HostPool, when the checks left it open for the gate stage (collector.handed_pool); closed
    here, whatever happens.
    A partial that cannot be finished for any other reason than ReportDirError is removed, and the error raised.
    """
    from acgs_verify import rundir

    ending = Ending(profile=gate[1] if gate is not None else None)
    try:
        snapshot = False
        if gate is not None:
            from acgs_verify.gates import finish

            plan, profile = gate
            ending.lines = finish(result, plan, profile, partial, pool=pool)
            snapshot = plan.writes_snapshot
        ending.lines.extend(lines)
        if started is not None:
            result.duration = time.time() - started
        if partial is not None and report_dir is not None:
            from acgs_verify.report.history import trend_of

            result.extra["trend"] = trend_of(result, report_dir)
            try:
                ending.run_dir = rundir.finish(result, partial, report_dir, secrets, snapshot)
            except rundir.ReportDirError as exc:  # the verdict stands, in summary.json; the line says where
                ending.problem = printable(f"acgs-verify: error: {exc}")
    except BaseException:
        if partial is not None:
            rundir.discard(partial)  # never leave a .partial-* behind
        raise
    finally:
        if pool is not None:
            pool.close()  # ends the ssh control masters the checks opened: nothing outlives the run
    return ending


def say_ending(result: RunResult, ending: Ending, say: Callable[[str], None] = print) -> None:
    """The lines every run ends with; the summary line (gates.last_line) is the last."""
    from acgs_verify.gates import last_line

    if ending.problem:
        print(ending.problem, file=sys.stderr)
    for line in ending.lines:
        say(line)
    if ending.run_dir is not None:
        say(f"reports: {ending.run_dir}/ ({REPORT_FILES})" + ("" if result.complete else " [incomplete]"))
    escalation = _escalation_line(result, ending.profile)
    if escalation:  # just above the summary line, which stays the last
        say(escalation)
    say(last_line(result))


def _escalation_line(result: RunResult, profile) -> str | None:
    """The escalation line (worked out here for a run whose gate stage did not, e.g. a shard's merge without one)."""
    from acgs_verify.escalation import escalation_line, escalation_of

    if "escalation" not in result.extra and profile is not None:
        result.extra["escalation"] = escalation_of(result, profile.escalation)
    return escalation_line(result)
