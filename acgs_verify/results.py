"""The result model every report writer reads: one CheckResult per test item, one RunResult per run.

Writers (JSON, HTML, Markdown, Prometheus, the terminal line) read a RunResult or its dict form
(summary.json) and nothing else: none of them reaches into pytest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from acgs_verify.redact import cut, printable

# Exit codes are a contract (docs/design.md), the same four as Nagios plugins.
EXIT_OK, EXIT_WARNING, EXIT_CRITICAL, EXIT_UNKNOWN = 0, 1, 2, 3
STATUS_WORD = {EXIT_OK: "OK", EXIT_WARNING: "WARNING", EXIT_CRITICAL: "CRITICAL", EXIT_UNKNOWN: "UNKNOWN"}
BLOCKING = ("P0", "P1")
FAILED_OUTCOMES = ("failed", "error")
# a check the run stopped (SIGINT, SIGTERM) after it started and before its test body ended: it has no verdict, so
# it is neither passed nor failed anywhere (totals, compliance, metrics), and the run it is in cannot be OK
INTERRUPTED = "interrupted"


@dataclass
class CheckResult:
    nodeid: str
    id: str
    section: str
    severity: str
    title: str
    target: str
    outcome: str = "passed"  # passed | failed | error | skipped | interrupted
    message: str = ""
    measured: str | None = None
    expected: str | None = None
    value: Any = None
    warning: str | None = None
    next_step: str = ""
    duration: float = 0.0
    evidence: dict[str, str] = field(default_factory=dict)
    waived: dict | None = None  # set by waivers: {reason, owner, expires}
    attempts: int = 1  # how many times it ran (acgs-verify run --wait re-runs failing checks)
    host: str | None = None  # the host the check ran on, when its target has one

    @property
    def name(self) -> str:
        return f"{self.id}[{self.target}]"

    @property
    def failed(self) -> bool:
        return self.outcome in FAILED_OUTCOMES and not self.waived

    def finding(self) -> tuple[str, str]:
        """The message split into what was found and the next step, without the `ID target: ` it starts with.

        >>> CheckResult(..., id="BK-01", target="backups", message="BK-01 backups: measured 49 h; expected <= 26 h. "
        ...             "Next: run the backup").finding()
        ('measured 49 h; expected <= 26 h', 'run the backup')

        Reports show each once; a message without "Next:" keeps the catalog's next step.
        """
        text = self.message.removeprefix(f"{self.id} {self.target}: ")
        found, sep, step = text.rpartition(". Next: ")
        return (found, step.strip()) if sep else (text, self.next_step)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["name"] = self.name
        return d


def shortened(message: str, limit: int) -> str:
    """message cut to `limit` characters, from what was found rather than from its next step, which is the part
    read at 3 a.m. (a path in `tail -f PATH` cut in half is worse than no step at all).

    >>> shortened("SVC-03 auth: " + "x" * 50 + ". Next: `tail -f /var/log/acgs/auth.log`", 70)
    'SVC-03 auth: xxxxxxxxxxxxxxx... Next: `tail -f /var/log/acgs/auth.log`'
    """
    if len(message) <= limit:
        return message
    found, sep, step = message.rpartition(". Next: ")
    room = limit - len("... Next: ") - len(step)
    # cut where no escape (`\x1b`) is split in half
    if sep and room >= min(80, limit // 4):
        return f"{cut(found, room)}... Next: {step}"
    return cut(message, limit - 3) + "..."


@dataclass
class RunResult:
    run_id: str
    profile: str
    gate: str
    started: str  # ISO 8601 UTC
    duration: float = 0.0
    constitutional_hash: str = ""
    checks: list[CheckResult] = field(default_factory=list)
    complete: bool = True
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    # gate rules broken beyond failed checks (a table vanished since the snapshot): each makes the run CRITICAL
    gate_failures: list[str] = field(default_factory=list)
    # how many checks the run set out to run (collected and selected); more than len(checks) when interrupted
    planned: int | None = None

    @property
    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.failed]

    def count(self, outcome: str) -> int:
        return sum(1 for c in self.checks if c.outcome == outcome and not (c.waived and c.outcome != "passed"))

    @property
    def stopped(self) -> bool:
        """The run did not go through every check it set out to run, to its end."""
        return not self.complete or any(c.outcome == INTERRUPTED for c in self.checks)

    @property
    def not_run(self) -> int:
        """Checks the run set out to run that never started (it was interrupted first); they are in no list."""
        return max((self.planned or 0) - len(self.checks), 0) if self.stopped else 0

    @property
    def totals(self) -> dict[str, int]:
        return {
            "checks": len(self.checks),
            "passed": self.count("passed"),
            "failed": len(self.failed),
            "skipped": self.count("skipped"),
            "waived": sum(1 for c in self.checks if c.waived and c.outcome in FAILED_OUTCOMES),
            "warnings": sum(1 for c in self.checks if c.warning and c.outcome == "passed"),
            "interrupted": self.count(INTERRUPTED),
            "not_run": self.not_run,
        }

    @property
    def compliance_rate(self) -> float | None:
        """Passed share of the checks that ran to their end (skipped and interrupted ones are not counted either
        way: they have no verdict)."""
        ran = [c for c in self.checks if c.outcome not in ("skipped", INTERRUPTED)]
        if not ran:
            return None
        return sum(1 for c in ran if not c.failed) / len(ran)

    @property
    def hosts(self) -> dict[str, dict[str, int]]:
        """Per host (in the order checks name them): how many of its checks passed, failed, were skipped and were
        interrupted."""
        out: dict[str, dict[str, int]] = {}
        for c in self.checks:
            if c.host is None:
                continue
            h = out.setdefault(c.host, {"checks": 0, "passed": 0, "failed": 0, "skipped": 0, INTERRUPTED: 0})
            h["checks"] += 1
            if c.failed:
                h["failed"] += 1
            elif c.outcome in ("passed", "skipped", INTERRUPTED):
                h[c.outcome] += 1
        return out

    def failed_by_severity(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.failed:
            out[c.severity] = out.get(c.severity, 0) + 1
        return dict(sorted(out.items()))

    @property
    def exit_code(self) -> int:
        if self.stopped or not self.checks:
            return EXIT_UNKNOWN
        failed = self.failed
        if self.gate_failures or any(c.severity in BLOCKING for c in failed):
            return EXIT_CRITICAL
        return EXIT_WARNING if failed else EXIT_OK

    def summary_line(self) -> str:
        """`ACGS CRITICAL - 2 of 48 checks failed (P0: 1) | passed=46 failed=2 duration=1.8s`"""
        t = self.totals
        word = STATUS_WORD[self.exit_code]
        ran = t["checks"] - t["skipped"]
        if self.stopped:
            done = t["checks"] - t["interrupted"]  # the checks that ran to their end
            text = f"run interrupted after {done} of {max(self.planned or 0, t['checks'])} checks"
        elif not self.checks:
            text = "no checks ran"
        elif t["failed"]:
            sev = ", ".join(f"{k}: {v}" for k, v in self.failed_by_severity().items())
            text = f"{t['failed']} of {ran} checks failed ({sev})"
        else:
            text = f"{t['passed']} of {ran} checks passed"  # waived failures are not passes
        extras = [f"{t['interrupted']} interrupted"] if t["interrupted"] else []
        extras += [f"{t['skipped']} skipped"] if t["skipped"] else []
        extras += [f"{t['waived']} waived"] if t["waived"] else []
        extras += [f"{t['warnings']} warning{'' if t['warnings'] == 1 else 's'}"] if t["warnings"] else []
        if extras:
            text += f" [{', '.join(extras)}]"
        if self.gate_failures:
            more = f" (+{len(self.gate_failures) - 1} more)" if len(self.gate_failures) > 1 else ""
            text += f"; gate closed: {self.gate_failures[0]}{more}"
        perf = f"passed={t['passed']} failed={t['failed']} skipped={t['skipped']} "
        if self.stopped:  # a complete run's line keeps the labels it always had
            perf += f"interrupted={t['interrupted']} not_run={t['not_run']} "
        perf += f"duration={self.duration:.1f}s"
        # the last line a terminal, a CI log and Nagios show; a gate failure may name a table a target reported
        return printable(f"ACGS {word} - {text} | {perf}")

    def as_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "profile": self.profile,
            "gate": self.gate,
            "started": self.started,
            "duration": round(self.duration, 3),
            "constitutional_hash": self.constitutional_hash,
            "complete": self.complete,
            "planned": self.planned,
            "exit_code": self.exit_code,
            "summary": self.summary_line(),
            "totals": self.totals,
            "failed_by_severity": self.failed_by_severity(),
            "compliance_rate": self.compliance_rate,
            "hosts": self.hosts,
            "notes": self.notes,
            "gate_failures": self.gate_failures,
            **self.extra,
            "checks": [c.as_dict() for c in self.checks],
        }

    @classmethod
    def from_dict(cls, d: dict) -> RunResult:
        checks = []
        for c in d.get("checks", []):
            c = {k: v for k, v in c.items() if k != "name"}
            checks.append(CheckResult(**c))
        known = {"run_id", "profile", "gate", "started", "duration", "constitutional_hash", "complete", "notes",
                 "gate_failures", "planned"}
        extra = {k: v for k, v in d.items() if k not in known | {"checks", "exit_code", "summary", "totals",
                                                                  "failed_by_severity", "compliance_rate",
                                                                  "hosts"}}
        return cls(checks=checks, extra=extra, **{k: d[k] for k in known if k in d})


def in_catalog_order(checks) -> list:
    """Checks as every report lists them, whoever gathered them (a run, or merge joining shards): by catalog ID,
    then target. `in_catalog_order(run.checks)` -> [SVC-01[auth@app-1], SVC-01[...], SVC-02[...], ...]"""
    from acgs_verify.catalog import CATALOG

    position = {check_id: i for i, check_id in enumerate(CATALOG)}
    return sorted(checks, key=lambda c: (position.get(c.id, len(position)), c.target, c.nodeid))
