"""What the human-readable reports (HTML, Markdown) show, computed once from a RunResult.

>>> v = view_of(result)
>>> v.verdict, v.failures[0].name, [s.title for s in v.sections][:2]
('CRITICAL', 'SVC-01[auth@app-1]', ['Service health', 'Constitutional compliance'])

A report opens with one ReachBlock per host or target that did not answer (what was tried, the error, the reach
step), its checks folded into it; `failures` are the checks that measured something wrong, `errors` the other
checks that could not measure, each with its reach step, never a runbook repair.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from acgs_verify.catalog import SECTIONS
from acgs_verify.results import FAILED_OUTCOMES, INTERRUPTED, STATUS_WORD, CheckResult, RunResult
from acgs_verify.words import plural

SEVERITY_ORDER = {"P0": 0, "P1": 1, "P2": 2, "P3": 3}


@dataclass
class Section:
    key: str
    title: str
    checks: list[CheckResult]

    @property
    def counts(self) -> dict[str, int]:
        return _counts(self.checks)


@dataclass
class HostRow:
    host: str
    counts: dict[str, int]
    failed: list[str] = field(default_factory=list)
    kind: str = ""  # for a target on no host (a file, the backups, a database): the sections that checked it


@dataclass
class Card:
    """A failure as the reports show it: each thing said once.

    `why` is the finding when it is more than the measurement (`could not measure: ...`, `no answer from ...`);
    `measured`/`expected` are shown when the finding does not already say them.
    """

    check: CheckResult
    why: str
    measured: str | None
    expected: str | None
    next_step: str


def card_of(c: CheckResult) -> Card:
    found, next_step = c.finding()
    measured, expected = c.measured, c.expected
    said = f"measured {measured}; expected {expected}"
    if measured is not None and found.endswith(said):  # check.that's own wording: show it as fields
        found = found[: -len(said)].rstrip(": ")
    elif measured is not None and str(measured) in found:
        measured = expected = None  # the finding quotes it already
    return Card(c, found, measured, expected, next_step)


HOST_UNREACHABLE = "could not measure: host unreachable: "  # how a summary.json before 1.1 says it


@dataclass
class ReachBlock:
    """A host or target that did not answer, and the checks on it that could not measure because of it."""

    target: str
    error: str  # the first of its checks' finding: what was tried, and what happened
    next_step: str  # the reach step: how to restore the connection
    checks: list[CheckResult]

    @property
    def line(self) -> str:
        """`89 checks on app-2 could not measure (P0: 3, P1: 40, P2: 46)`"""
        counts: dict[str, int] = {}
        for c in self.checks:
            counts[c.severity] = counts.get(c.severity, 0) + 1
        sev = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        return f"{plural(len(self.checks), 'check')} on {self.target} could not measure ({sev})"


def unreachable_of(c: CheckResult) -> str | None:
    """What did not answer, for a check that could not measure because of it (None for any other check)."""
    if not c.error:
        return None
    if c.unreachable:
        return c.unreachable
    return c.host if c.host and c.finding()[0].startswith(HOST_UNREACHABLE) else None


def reach_blocks(result: RunResult) -> list[ReachBlock]:
    """One block per host or target that did not answer, in the order the run met them."""
    folded: dict[str, list[CheckResult]] = {}
    for c in result.checks:
        key = unreachable_of(c)
        if key is not None:
            folded.setdefault(key, []).append(c)
    blocks = []
    for key, checks in folded.items():
        found, step = checks[0].finding()
        blocks.append(ReachBlock(key, found.removeprefix("could not measure: "), step, checks))
    return blocks


@dataclass
class AvailabilityRow:
    """MON-02 for one service: its availability over the window, or why it was not measured (too few runs)."""

    target: str
    percent: float | None
    outcome: str
    detail: str  # what MON-02 measured, or the reason it skipped


AVAILABILITY_TARGET_PERCENT = 99.9  # runbook, Key Metrics; the run's own target is in result.extra["availability"]


def availability_of(result: RunResult) -> tuple[list[AvailabilityRow], dict]:
    """MON-02's rows, and the target and window they are judged against."""
    rows = []
    for c in result.checks:
        if c.id != "MON-02":
            continue
        percent = c.value if isinstance(c.value, int | float) and c.outcome != "skipped" else None
        detail = c.measured if c.measured and c.outcome != "skipped" else c.finding()[0]
        rows.append(AvailabilityRow(c.target, percent, outcome_word(c), detail or ""))
    target = {"target_percent": AVAILABILITY_TARGET_PERCENT, "window_days": 30, **(result.extra.get("availability")
                                                                                  or {})}
    return rows, target


@dataclass
class View:
    result: RunResult
    verdict: str
    headline: str
    failures: list[CheckResult]
    waived: list[CheckResult]
    warnings: list[CheckResult]
    sections: list[Section]
    hosts: list[HostRow]  # the profile's hosts
    comparison: dict | None
    trend: list[dict]
    cards: list[Card] = field(default_factory=list)  # the failures, as cards
    blocks: list[ReachBlock] = field(default_factory=list)  # hosts and targets that did not answer, first
    errors: list[Card] = field(default_factory=list)  # could not measure, not in a block: with their reach step
    others: list[HostRow] = field(default_factory=list)  # targets on no host: files, backups, databases, Redis
    interrupted: str | None = None  # what an interrupted run did not do
    escalation: dict | None = None  # who to notify, by when (escalation.py), when the run says
    availability: list[AvailabilityRow] = field(default_factory=list)  # MON-02 per service
    availability_target: dict = field(default_factory=dict)  # {target_percent, window_days, ...}


def outcome_word(c: CheckResult) -> str:
    if c.waived and c.outcome in FAILED_OUTCOMES:
        return "waived"
    return c.outcome


def _counts(checks: list[CheckResult]) -> dict[str, int]:
    out = {"passed": 0, "failed": 0, "error": 0, "skipped": 0, "waived": 0, INTERRUPTED: 0}
    for c in checks:
        out[outcome_word(c)] = out.get(outcome_word(c), 0) + 1
    return out


def view_of(result: RunResult) -> View:
    def worst_first(checks):
        return sorted(checks, key=lambda c: (SEVERITY_ORDER.get(c.severity, 9), c.id, c.target))

    failures = worst_first(c for c in result.checks if c.failed and not c.error)
    blocks = reach_blocks(result)
    errors = worst_first(c for c in result.checks if c.error and unreachable_of(c) is None)
    sections = [Section(key, title, [c for c in result.checks if c.section == key])
                for key, title in SECTIONS.items()]
    hosts: dict[str, list[CheckResult]] = {}
    others: dict[str, list[CheckResult]] = {}
    for c in result.checks:
        # a database, Redis, file or backup target runs on no host of the profile: a row in a table of its own
        (hosts.setdefault(c.host, []) if c.host else others.setdefault(c.target, [])).append(c)
    headline = result.summary_line().split(" - ", 1)[-1].split(" | ", 1)[0]
    interrupted = interrupted_text(result)
    return View(
        result=result,
        verdict=STATUS_WORD[result.exit_code],
        headline=headline,
        failures=failures,
        waived=[c for c in result.checks if c.waived and c.outcome in FAILED_OUTCOMES],
        warnings=[c for c in result.checks if c.warning and c.outcome == "passed"],
        sections=[s for s in sections if s.checks],
        hosts=[HostRow(h, _counts(cs), [c.name for c in cs if c.failed]) for h, cs in sorted(hosts.items())],
        comparison=result.extra.get("comparison"),
        trend=list(result.extra.get("trend") or []),
        cards=[card_of(c) for c in failures],
        blocks=blocks,
        errors=[card_of(c) for c in errors],
        others=[HostRow(t, _counts(cs), [c.name for c in cs if c.failed], _kind(cs))
                for t, cs in sorted(others.items())],
        interrupted=interrupted,
        escalation=result.extra.get("escalation") if isinstance(result.extra.get("escalation"), dict) else None,
        availability=availability_of(result)[0],
        availability_target=availability_of(result)[1],
    )


def interrupted_text(result: RunResult) -> str | None:
    """What an interrupted run did not do, or None for a run that did it all:
    'Interrupted: 4 of 6 checks ran; 1 was stopped before it finished (SVC-06[auth]): interrupted, no outcome;
    the other 1 did not run and is not in this report.'"""
    if not result.stopped:
        return None
    cut = [c.name for c in result.checks if c.outcome == INTERRUPTED]
    done, left = len(result.checks) - len(cut), result.not_run
    if not cut and not left:
        return f"Interrupted: {done} checks ran before the run was stopped."
    text = f"Interrupted: {done} of {done + len(cut) + left} checks ran"
    if cut:
        names = ", ".join(cut[:5]) + (f" and {len(cut) - 5} more" if len(cut) > 5 else "")
        text += (f"; {len(cut)} {'was' if len(cut) == 1 else 'were'} stopped before "
                 f"{'it' if len(cut) == 1 else 'they'} finished ({names}): interrupted, no outcome")
    if left:
        text += f"; the other {left} did not run and {'is' if left == 1 else 'are'} not in this report"
    return text + "."


def _kind(checks: list[CheckResult]) -> str:
    titles = dict.fromkeys(SECTIONS.get(c.section, c.section) for c in checks)
    return ", ".join(titles)
