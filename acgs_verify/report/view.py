"""What the human-readable reports (HTML, Markdown) show, computed once from a RunResult.

>>> v = view_of(result)
>>> v.verdict, v.failures[0].name, [s.title for s in v.sections][:2]
('CRITICAL', 'SVC-01[auth@app-1]', ['Service health', 'Constitutional compliance'])
"""

from __future__ import annotations

from dataclasses import dataclass, field

from acgs_verify.catalog import SECTIONS
from acgs_verify.results import FAILED_OUTCOMES, STATUS_WORD, CheckResult, RunResult

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


@dataclass
class View:
    result: RunResult
    verdict: str
    headline: str
    failures: list[CheckResult]
    waived: list[CheckResult]
    warnings: list[CheckResult]
    sections: list[Section]
    hosts: list[HostRow]
    comparison: dict | None
    trend: list[dict]


def host_of_target(target: str) -> str:
    """`auth@app-1` runs on app-1; a host target is its own name; a database or Redis target names no host."""
    if "@" in target:
        return target.rsplit("@", 1)[1]
    return target


def outcome_word(c: CheckResult) -> str:
    if c.waived and c.outcome in FAILED_OUTCOMES:
        return "waived"
    return c.outcome


def _counts(checks: list[CheckResult]) -> dict[str, int]:
    out = {"passed": 0, "failed": 0, "error": 0, "skipped": 0, "waived": 0}
    for c in checks:
        out[outcome_word(c)] = out.get(outcome_word(c), 0) + 1
    return out


def view_of(result: RunResult) -> View:
    failures = sorted((c for c in result.checks if c.failed),
                      key=lambda c: (SEVERITY_ORDER.get(c.severity, 9), c.id, c.target))
    sections = [Section(key, title, [c for c in result.checks if c.section == key])
                for key, title in SECTIONS.items()]
    hosts: dict[str, list[CheckResult]] = {}
    for c in result.checks:
        hosts.setdefault(host_of_target(c.target), []).append(c)
    headline = result.summary_line().split(" - ", 1)[-1].split(" | ", 1)[0]
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
    )
