"""What a gate adds to a run, around pytest: the snapshot to compare with, the log window, waiting for
failing checks to recover, and the gate's own rules (docs/checks.md, "Gates").

    pre-maintenance    writes snapshot.json (report/snapshot.py); BK-01..04 must pass
    post-maintenance   compares with a pre-maintenance snapshot (report/diff.py): a regression, a vanished
    rollback           service or a vanished table closes the gate (exit 2); a P2/P3 regression, or a latency
                       one within the noise floor, does not by itself (regressions_held_open)

`acgs-verify run` calls these; the comparisons themselves are pure functions in acgs_verify/report/.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from acgs_verify.catalog import GATES
from acgs_verify.redact import one_line, printable
from acgs_verify.results import FAILED_OUTCOMES, RunResult

RETRY_INTERVAL_SECONDS = 2.0


class GateError(Exception):
    """A gate cannot run (no snapshot to compare with, a bad --since); str() is the one line a user sees."""


@dataclass
class GatePlan:
    gate: str
    snapshot_path: Path | None = None
    snapshot: dict | None = None
    since: str | None = None  # ISO time handed to the plugin's --since
    # the summary line of the pre-maintenance run compared with, when that run's own gate was closed
    baseline_closed: str | None = None

    @property
    def writes_snapshot(self) -> bool:
        return GATES[self.gate].get("snapshot") == "write"

    @property
    def compares(self) -> bool:
        return GATES[self.gate].get("snapshot") == "compare"


def find_snapshot(report_dir: Path, profile_name: str) -> Path | None:
    """The newest pre-maintenance snapshot of this profile among the complete runs under report_dir."""
    from acgs_verify.report.snapshot import SNAPSHOT_FILE

    best: tuple[str, Path] | None = None
    for path in Path(report_dir).glob(f"*/{SNAPSHOT_FILE}"):
        if path.parent.name.startswith(".") or path.parent.is_symlink():  # a run being written; `latest`
            continue
        try:
            head = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if head.get("profile") == profile_name and head.get("gate") == "pre-maintenance":
            key = (head.get("started", ""), path.parent.name)
            if best is None or key > (best[0], best[1].parent.name):
                best = (key[0], path)
    return best[1] if best else None


def plan(gate: str, profile_name: str, report_dir: Path, snapshot_arg: Path | None, since_arg: str | None) -> GatePlan:
    """Resolve the snapshot and the log window before anything runs; any problem is a GateError line."""
    from acgs_verify.options import parse_since
    from acgs_verify.report.snapshot import read_snapshot

    p = GatePlan(gate)
    wants_snapshot = p.compares or since_arg == "snapshot" or snapshot_arg is not None
    if wants_snapshot:
        path = snapshot_arg or find_snapshot(report_dir, profile_name)
        if path is None:
            raise GateError(f"no pre-maintenance snapshot of profile {profile_name!r} under {report_dir}/; "
                            "run --gate pre-maintenance first, or give --snapshot PATH")
        try:
            p.snapshot = read_snapshot(Path(path))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise GateError(f"--snapshot {path}: not a snapshot.json, summary.json or run directory "
                            f"({one_line(exc)})") from None
        p.snapshot_path = Path(path)
        p.baseline_closed = closed_gate(Path(path))
        if p.baseline_closed and snapshot_arg is None:
            run_dir, verdict = Path(path).parent, p.baseline_closed.split(" | ")[0]
            raise GateError(f"the latest pre-maintenance run of profile {profile_name!r} ({run_dir}) is one whose own "
                            f"gate was closed ({verdict}): fix what it found and run --gate pre-maintenance again, "
                            f"or give --snapshot {run_dir} to compare with it anyway")
    if since_arg == "snapshot":
        p.since = p.snapshot["started"]
    elif since_arg:
        try:
            p.since = parse_since(since_arg).isoformat(timespec="seconds")
        except ValueError as exc:
            raise GateError(str(exc)) from None
    return p


def closed_gate(snapshot_path: Path) -> str | None:
    """The summary line of the run a snapshot belongs to, if that run's gate was closed (exit 2 or 3); else None.

    >>> closed_gate(Path("reports/20250601T020000Z-production-pre-maintenance-1a2b/snapshot.json"))
    'ACGS CRITICAL - 1 of 48 checks failed (P1: 1) | passed=47 failed=1 errors=0 skipped=0 duration=9.1s'
    """
    run_dir = snapshot_path if snapshot_path.is_dir() else snapshot_path.parent
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None  # a snapshot.json on its own: nothing says how its run ended
    if not isinstance(summary, dict) or not isinstance(summary.get("exit_code"), int):
        return None
    if summary["exit_code"] >= 2 or summary.get("gate_failures"):
        return str(summary.get("summary") or f"exit {summary['exit_code']}")
    return None


def wait_for_recovery(result: RunResult, seconds: float, rerun: Callable[[list[str], int], RunResult | None],
                      say: Callable[[str], None] = print) -> None:
    """Re-run the failing checks until they pass or `seconds` are up (services come back slowly after a
    restart). Each check's `attempts` counts its runs; the result keeps each check's last outcome."""
    deadline = time.monotonic() + seconds
    attempt = 1
    while True:
        failing = [c for c in result.checks if c.outcome in FAILED_OUTCOMES and not c.waived]
        if not failing or time.monotonic() + RETRY_INTERVAL_SECONDS > deadline:
            break
        time.sleep(RETRY_INTERVAL_SECONDS)
        attempt += 1
        say(f"waiting: attempt {attempt}, re-running {len(failing)} failing checks "
            f"({max(0.0, deadline - time.monotonic()):.0f} s left)")
        again = rerun([c.nodeid for c in failing], attempt)
        if again is None:
            result.notes.append(f"--wait: attempt {attempt} could not run; stopped waiting")
            break
        fresh = {c.nodeid: c for c in again.checks}
        for i, c in enumerate(result.checks):
            if c.nodeid in fresh:
                fresh[c.nodeid].attempts = c.attempts + 1
                result.checks[i] = fresh[c.nodeid]
        result.notes.extend(n for n in again.notes if n not in result.notes)
        if again.extra.get("state"):  # a DB-01/RD-01 that ran again recorded its source again
            from acgs_verify.run_state import empty, renew

            renew(result.extra.setdefault("state", empty()), again.extra["state"])
        if not again.complete:  # stopped mid-way: its interrupted checks make this run incomplete too
            result.complete = False
            break
    still = [c for c in result.checks if c.outcome in FAILED_OUTCOMES and not c.waived]
    recovered = [c for c in result.checks if c.attempts > 1 and c.outcome == "passed"]
    result.extra["wait"] = {"seconds": seconds, "attempts": attempt,
                            "recovered": [f"{c.name} after {c.attempts} attempts" for c in recovered],
                            "still_failing": [c.name for c in still]}
    if attempt > 1:
        result.notes.append(f"--wait {seconds:g}: {attempt} attempts; {len(recovered)} checks recovered, "
                            f"{len(still)} still failing")


def finish(result: RunResult, p: GatePlan, profile, run_dir: Path | None = None, pool=None) -> list[str]:
    """The gate's own rules, after the checks ran, and what every report says of the run (escalation, the
    availability target), or the evidence copied into `run_dir` (the run's directory being written) through
    `pool`, the run's HostPool (a pool of its own when the checks' is gone: they ran in xdist workers).
    Returns lines for the terminal (regressions first)."""
    from acgs_verify.report.diff import compare
    from acgs_verify.report.snapshot import snapshot_of

    lines: list[str] = []
    if p.since:
        result.extra["log_window_since"] = p.since
    if p.writes_snapshot or p.compares:  # what DB-01 and RD-01 recorded as they ran: nothing is asked again here
        from acgs_verify.run_state import empty, unrecorded

        state = result.extra.setdefault("state", empty())
        state["errors"].extend(unrecorded(state, profile))
        result.notes.extend(e for e in state["errors"] if e not in result.notes)
    required = GATES[p.gate].get("required") or ()
    ran = {c.id for c in result.checks}
    missing = [i for i in required if i not in ran]
    if missing:
        result.notes.append(f"gate {p.gate} requires {', '.join(required)}; not in this run: {', '.join(missing)}")
    for c in result.checks:
        if c.id in required and c.outcome in FAILED_OUTCOMES:
            result.gate_failures.append(f"{c.name} must pass before maintenance"
                                        f"{' (a waiver does not lift this)' if c.waived else ''}")
    if p.compares and p.snapshot is not None:
        messages = {c.name: c.message for c in result.checks}
        after = snapshot_of(result)
        d = compare(p.snapshot, after, messages)
        held = regressions_held_open(d.regressions, p.snapshot, after, profile.thresholds)
        closing = [f for f in d.gate_failures()
                   if not any(f.startswith(f"regression: {name} passed before") for name in held)]
        result.extra["comparison"] = {"snapshot": str(p.snapshot_path), **d.as_dict(), "gate_failures": closing,
                                      "not_closing": held}
        result.gate_failures.extend(closing)
        lines.append(f"---- {p.gate}: compared with snapshot {p.snapshot_path} (pre-maintenance run "
                     f"{d.before_run}, started {d.before_started}) ----")
        for name, why in held.items():
            note = f"regression {name} does not close the gate: {why}"
            result.notes.append(note)
            lines.append(f"NOT CLOSING {note.removeprefix('regression ')}")
        if p.baseline_closed:  # taken only because --snapshot named it: every report says so
            result.extra["comparison"]["baseline_gate_closed"] = p.baseline_closed
            note = printable(f"compared with pre-maintenance run {d.before_run}, whose own gate was closed "
                             f"({p.baseline_closed.split(' | ')[0]}): what failed then is not a regression now")
            result.notes.append(note)
            lines.append(f"WARNING {note}")
        lines.extend(d.lines() or ["no regressions, nothing vanished"])
    if GATES[p.gate].get("evidence"):
        lines.extend(_preserve_evidence(result, profile, run_dir, pool))
    _describe(result, profile)
    # the lines quote a --snapshot path, the compared run's own summary line and the evidence's file names: a
    # terminal shows them, so an escape sequence in any of them is shown, never acted on
    return [printable(line) for line in lines]


# checks whose value is a latency in ms (SVC-06/RD-02/SVC-12: {"p99_ms": ...}; SYS-06: {endpoint: p99 ms})
LATENCY_CHECKS = ("SVC-06", "SVC-12", "RD-02", "SYS-06")


def _p99_ms(value) -> float | None:
    if not isinstance(value, dict):
        return None
    if "p99_ms" in value:
        return value["p99_ms"] if isinstance(value["p99_ms"], int | float) else None
    numbers = [v for v in value.values() if isinstance(v, int | float) and not isinstance(v, bool)]
    return max(numbers) if numbers else None


def regressions_held_open(regressions: list[dict], before: dict, after: dict, thresholds) -> dict[str, str]:
    """The regressions that do not close the gate by themselves, with why: a P2/P3 check (what it found is in
    the reports, and its own failure sets exit 1), and a latency check whose p99 grew by less than
    baseline_factor_max times or by less than latency_noise_floor_ms (a 7 ms -> 14 ms reading on a loaded
    machine is noise, not a maintenance that broke something).

    >>> regressions_held_open([{"name": "SVC-06[auth@app-1]", "id": "SVC-06", "severity": "P1", ...}], ...)
    {'SVC-06[auth@app-1]': 'p99 4.0 ms -> 6.0 ms is within the noise floor (1.5x, +2.0 ms; ...)'}
    """
    held: dict[str, str] = {}
    factor_max, floor = thresholds.baseline_factor_max, thresholds.latency_noise_floor_ms
    for r in regressions:
        if r["waived"]:
            continue
        if r["severity"] in ("P2", "P3"):
            held[r["name"]] = f"a {r['severity']} regression alone never closes a gate"
            continue
        if r["id"] not in LATENCY_CHECKS:
            continue
        was = _p99_ms((before.get("checks", {}).get(r["name"]) or {}).get("value"))
        now = _p99_ms((after.get("checks", {}).get(r["name"]) or {}).get("value"))
        if was is None or now is None:  # no answer now, or nothing to compare with: a regression as any other
            continue
        factor = now / max(was, 0.001)
        if factor < factor_max or now - was < floor:
            held[r["name"]] = (f"p99 {was:.1f} ms -> {now:.1f} ms is within the noise floor ({factor:.1f}x, "
                               f"{now - was:+.1f} ms; a regression needs >= {factor_max:g}x and "
                               f">= {floor:g} ms more)")
    return held


def _describe(result: RunResult, profile) -> None:
    """What the reports print beside the checks, from the profile: who to notify for the highest failed severity,
    and MON-02's target and window (the compliance report shows each service's availability beside them)."""
    from acgs_verify.escalation import escalation_of

    result.extra["escalation"] = escalation_of(result, profile.escalation)
    t = profile.thresholds
    result.extra["availability"] = {"target_percent": t.availability_percent_min,
                                    "window_days": t.availability_window_days, "min_runs": t.availability_min_runs}


def _preserve_evidence(result: RunResult, profile, run_dir: Path | None, pool=None) -> list[str]:
    from acgs_verify.evidence import EVIDENCE_DIR, preserve

    if run_dir is None:
        result.notes.append("evidence: not copied, this run writes no run directory (give --report-dir)")
        return []
    ev = preserve(profile, run_dir / EVIDENCE_DIR, result.run_id, pool=pool)
    result.extra["evidence"] = ev
    hosts = ", ".join(ev["hosts"]) or "no host"
    note = (f"evidence: {ev['files']} log files ({ev['bytes']} bytes) from {hosts} copied at {ev['copied_at']} into "
            f"{EVIDENCE_DIR}/ (SHA256SUMS, MANIFEST)")
    if ev["cut"]:
        note += f"; {len(ev['cut'])} cut to their tail: {ev['cut'][0]}" + (" ..." if len(ev["cut"]) > 1 else "")
    note = printable(note)  # names a file of a target (the first one cut)
    result.notes.append(note)
    result.notes.extend(printable(f"evidence not copied: {x}") for x in ev["not_copied"])
    if not ev["files"]:
        result.gate_failures.append("evidence: no log could be copied from any host (see the notes)")
    return [note]


def last_line(result: RunResult) -> str:
    """The run's summary line, saying when the comparison's baseline had a closed gate of its own, and when the
    run is one shard of a run."""
    line = result.summary_line()
    if (result.extra.get("comparison") or {}).get("baseline_gate_closed"):
        text, sep, perf = line.partition(" | ")
        line = f"{text}; the baseline's own gate was closed{sep}{perf}"
    shard = result.extra.get("shard")
    if isinstance(shard, dict):  # one shard's verdict is not the run's: the line says so, and what gives the run's
        text, sep, perf = line.partition(" | ")
        line = (f"{text} [shard {shard.get('index')} of {shard.get('count')} only: `acgs-verify merge` its shards "
                f"for the run's verdict]{sep}{perf}")
    return line
