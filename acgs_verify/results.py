"""The result model every report writer reads: one CheckResult per test item, one RunResult per run.

Writers (JSON, HTML, Markdown, Prometheus, the terminal line) read a RunResult or its dict form
(summary.json) and nothing else: none of them reaches into pytest.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from acgs_verify.redact import cut, printable
from acgs_verify.words import plural

# Exit codes are a contract (docs/design.md), the same four as Nagios plugins.
EXIT_OK, EXIT_WARNING, EXIT_CRITICAL, EXIT_UNKNOWN = 0, 1, 2, 3
STATUS_WORD = {EXIT_OK: "OK", EXIT_WARNING: "WARNING", EXIT_CRITICAL: "CRITICAL", EXIT_UNKNOWN: "UNKNOWN"}
BLOCKING = ("P0", "P1")
FAILED_OUTCOMES = ("failed", "error")
# a check the run stopped (SIGINT, SIGTERM) after it started and before its test body ended: it has no verdict, so
# it is neither passed nor failed anywhere (totals, compliance, metrics), and the run it is in cannot be OK
INTERRUPTED = "interrupted"

# summary.json's format (docs/summary.schema.json, shipped as acgs_verify/schemas/summary.schema.json). A minor
# version adds optional fields, which readers of the same major ignore; a major version changes what a field means
# or removes one, and a reader of an older major refuses the file.
SCHEMA_VERSION = "1.2"
SCHEMA_MAJOR = int(SCHEMA_VERSION.split(".")[0])
# what a summary.json must hold to be read at all; every other field has a default that fills it
REQUIRED_RUN = ("run_id", "profile", "gate", "started", "checks")
REQUIRED_CHECK = ("nodeid", "id", "section", "severity", "title", "target", "outcome")


class SummaryFormatError(ValueError):
    """A summary.json this acgs-verify cannot read: a newer major version, or a required field missing."""


@dataclass(slots=True)  # one per check, held until the reports are written: no __dict__ each (issue 24 item 7)
class CheckResult:
    nodeid: str
    id: str
    section: str
    severity: str
    title: str
    target: str
    outcome: str = "passed"  # passed | failed (measured, wrong) | error (could not measure) | skipped | interrupted
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
    # the kind of failure it reports when it measured (catalog.KINDS: threshold, hash, ...), from the catalog or the
    # check; report/allure.py sorts failures into categories by it and the outcome, never by the message's words
    kind: str | None = None
    steps: list[dict] = field(default_factory=list)  # a staged check's stages: [{name, status, detail}] (Check.step)
    # an error's host or target that did not answer (`app-2`, `10.0.0.5:8016`): the reports fold its checks into
    # one block, and its next_step is the reach step (restore the connection), not the runbook's repair
    unreachable: str | None = None

    @property
    def name(self) -> str:
        return f"{self.id}[{self.target}]"

    @property
    def failed(self) -> bool:
        """Not passed and not waived: failed or error, either closes the gate (no pass without evidence)."""
        return self.outcome in FAILED_OUTCOMES and not self.waived

    @property
    def error(self) -> bool:
        """Could not measure (and not waived): counted, worded and reported apart from a measured failure."""
        return self.outcome == "error" and not self.waived

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

    @classmethod
    def from_dict(cls, d: dict, where: str = "checks[]") -> CheckResult:
        """A check of a summary.json: fields this version does not know (a newer minor's) are ignored, missing
        optional ones take their defaults, a missing required one is a SummaryFormatError naming it."""
        if not isinstance(d, dict):
            raise SummaryFormatError(f"{where}: not an object")
        missing = [k for k in REQUIRED_CHECK if k not in d]
        if missing:
            raise SummaryFormatError(f"{where}: required field {missing[0]!r} missing")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


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


# The optional sections of a run, each a typed field of RunResult and a property of summary.json (absent when unset):
SECTIONS = ("trend", "shard", "merged", "wait", "log_window_since", "state", "comparison", "escalation",
            "availability", "evidence")


class Sections(MutableMapping):
    """`result.extra`: RunResult's optional sections by name, as the writers and gates have always reached them
    (`result.extra["trend"] = ...`). Only SECTIONS can be set: a field summary.json's schema does not describe is a
    KeyError here, not a loose key in a published file."""

    def __init__(self, result: RunResult):
        self._result = result

    def __getitem__(self, key: str) -> Any:
        if key not in SECTIONS or getattr(self._result, key) is None:
            raise KeyError(key)
        return getattr(self._result, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in SECTIONS:
            raise KeyError(f"{key!r} is not a section of the result model (results.SECTIONS, summary.schema.json)")
        setattr(self._result, key, value)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        setattr(self._result, key, None)

    def __iter__(self) -> Iterator[str]:
        return (k for k in SECTIONS if getattr(self._result, k) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


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
    # gate rules broken beyond failed checks (a table vanished since the snapshot): each makes the run CRITICAL
    gate_failures: list[str] = field(default_factory=list)
    # how many checks the run set out to run (collected and selected); more than len(checks) when interrupted
    planned: int | None = None
    # the optional sections (SECTIONS), set by the gate, the shards, --wait and --since when a run has them
    trend: list[dict] | None = None  # this profile's recent runs and this one: run_id, gate, started, exit_code, rate
    shard: dict | None = None  # run --shard K/N: {index, count, group}
    merged: dict | None = None  # acgs-verify merge: {group, count, missing, shards: [{index, run_id, exit_code}]}
    wait: dict | None = None  # run --wait: {seconds, attempts, recovered, still_failing}
    log_window_since: str | None = None  # log checks read lines since this time (ISO 8601)
    state: dict | None = None  # maintenance gates: {tables, redis, errors} the snapshot keeps
    comparison: dict | None = None  # post-maintenance/rollback: the comparison with the snapshot (report/diff.py)
    escalation: dict | None = None  # who to notify for the highest failed severity (escalation.py)
    availability: dict | None = None  # MON-02's {target_percent, window_days, min_runs}
    evidence: dict | None = None  # security-incident: the logs copied (evidence.py: preserve)

    @property
    def extra(self) -> Sections:
        """The optional sections by name: `result.extra["escalation"]` is `result.escalation`."""
        return Sections(self)

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
            "failed": self.count("failed"),  # measured, and wrong
            "errors": self.count("error"),  # could not measure
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
        """Per host (in the order checks name them): how many of its checks passed, failed (measured wrong), could
        not measure (error), were skipped and were interrupted."""
        out: dict[str, dict[str, int]] = {}
        for c in self.checks:
            if c.host is None:
                continue
            h = out.setdefault(c.host, {"checks": 0, "passed": 0, "failed": 0, "error": 0, "skipped": 0,
                                        INTERRUPTED: 0})
            h["checks"] += 1
            if c.failed or c.outcome in ("passed", "skipped", INTERRUPTED):
                h[c.outcome] += 1
        return out

    def failed_by_severity(self, outcome: str | None = None) -> dict[str, int]:
        """Checks that did not pass (failed or error; only `outcome` when given) by severity."""
        out: dict[str, int] = {}
        for c in self.failed:
            if outcome is None or c.outcome == outcome:
                out[c.severity] = out.get(c.severity, 0) + 1
        return dict(sorted(out.items()))

    def unreachable(self) -> dict[str, list[CheckResult]]:
        """The hosts and targets that did not answer, each with its checks that could not measure (run order)."""
        out: dict[str, list[CheckResult]] = {}
        for c in self.checks:
            if c.error and c.unreachable:
                out.setdefault(c.unreachable, []).append(c)
        return out

    @property
    def exit_code(self) -> int:
        if self.stopped or not self.checks:
            return EXIT_UNKNOWN
        failed = self.failed
        if self.gate_failures or any(c.severity in BLOCKING for c in failed):
            return EXIT_CRITICAL
        return EXIT_WARNING if failed else EXIT_OK

    def summary_line(self) -> str:
        """`ACGS CRITICAL - 2 of 48 checks failed (P0: 1) | passed=46 failed=2 errors=0 skipped=0 duration=1.8s`"""
        t = self.totals
        word = STATUS_WORD[self.exit_code]
        ran = t["checks"] - t["skipped"]
        if self.stopped:
            done = t["checks"] - t["interrupted"]  # the checks that ran to their end
            text = f"run interrupted after {done} of {max(self.planned or 0, t['checks'])} checks"
        elif not self.checks:
            text = "no checks ran"
        elif t["failed"] or t["errors"]:
            text = self._not_passed_text(ran)
        else:
            text = f"{t['passed']} of {ran} checks passed"  # waived failures are not passes
        extras = [f"{t['interrupted']} interrupted"] if t["interrupted"] else []
        extras += [f"{t['skipped']} skipped"] if t["skipped"] else []
        extras += [f"{t['waived']} waived"] if t["waived"] else []
        extras += [plural(t["warnings"], "warning")] if t["warnings"] else []
        if extras:
            text += f" [{', '.join(extras)}]"
        if self.gate_failures:
            more = f" (+{len(self.gate_failures) - 1} more)" if len(self.gate_failures) > 1 else ""
            text += f"; gate closed: {self.gate_failures[0]}{more}"
        perf = f"passed={t['passed']} failed={t['failed']} errors={t['errors']} skipped={t['skipped']} "
        if self.stopped:  # a complete run's line keeps the labels it always had
            perf += f"interrupted={t['interrupted']} not_run={t['not_run']} "
        perf += f"duration={self.duration:.1f}s"
        # the last line a terminal, a CI log and Nagios show; a gate failure may name a table a target reported
        return printable(f"ACGS {word} - {text} | {perf}")

    def _not_passed_text(self, ran: int) -> str:
        """`3 of 92 checks failed (P0: 1), 89 could not measure (P0: 20, P1: 30; app-2 unreachable)`: a measured
        failure and a check that saw nothing are different pages, so the line counts them apart."""
        t = self.totals
        parts = []
        if t["failed"]:
            sev = ", ".join(f"{k}: {v}" for k, v in self.failed_by_severity("failed").items())
            parts.append(f"{t['failed']} of {ran} checks failed ({sev})")
        if t["errors"]:
            why = ", ".join(f"{k}: {v}" for k, v in self.failed_by_severity("error").items())
            down = list(self.unreachable())
            if down:
                why += f"; {', '.join(down[:3])}{f' and {len(down) - 3} more' if len(down) > 3 else ''} unreachable"
            parts.append(f"{t['errors']}{'' if t['failed'] else f' of {ran} checks'} could not measure ({why})")
        return ", ".join(parts)

    def as_dict(self, checks: bool = True) -> dict:
        """summary.json's object; without `checks` (its last key) for a writer that adds them one at a time."""
        return {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "profile": self.profile,
            "gate": self.gate,
            "started": self.started,
            # exact, as each check's: the reports a run writes render it, and `acgs-verify report` renders the same
            # from summary.json (rounded here, 2.9496 s was "2.9 s" in the run's report.html, "3.0 s" regenerated)
            "duration": self.duration,
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
            **{k: getattr(self, k) for k in SECTIONS if getattr(self, k) is not None},
            **({"checks": [c.as_dict() for c in self.checks]} if checks else {}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> RunResult:
        """A RunResult from summary.json of this major version or an older one (a file without schema_version is
        1.0): unknown fields are ignored, missing optional ones filled, a newer major refused with
        SummaryFormatError, one line."""
        if not isinstance(d, dict):
            raise SummaryFormatError("not a JSON object")
        version = d.get("schema_version", "1.0")
        try:
            major = int(str(version).split(".")[0])
        except ValueError:
            raise SummaryFormatError(f"schema_version {version!r} is not MAJOR.MINOR") from None
        if major > SCHEMA_MAJOR:
            raise SummaryFormatError(f"schema_version {version} is newer than this acgs-verify reads "
                                     f"({SCHEMA_MAJOR}.x): upgrade acgs-verify to read it")
        missing = [k for k in REQUIRED_RUN if k not in d]
        if missing:
            raise SummaryFormatError(f"required field {missing[0]!r} missing")
        if not isinstance(d["checks"], list):
            raise SummaryFormatError("checks: not a list")
        checks = [CheckResult.from_dict(c, f"checks[{i}]") for i, c in enumerate(d["checks"])]
        known = {f.name for f in fields(cls)} - {"checks"}  # computed ones (totals, hosts, ...) are not fields
        return cls(checks=checks, **{k: v for k, v in d.items() if k in known})


def in_catalog_order(checks) -> list:
    """Checks as every report lists them, whoever gathered them (a run, or merge joining shards): by catalog ID,
    then target. `in_catalog_order(run.checks)` -> [SVC-01[auth@app-1], SVC-01[...], SVC-02[...], ...]"""
    from acgs_verify.catalog import CATALOG

    position = {check_id: i for i, check_id in enumerate(CATALOG)}
    return sorted(checks, key=lambda c: (position.get(c.id, len(position)), c.target, c.nodeid))
