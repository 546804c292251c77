"""Waivers: a known failure accepted for a while, with a reason, an owner and an expiry date.

A waivers file (YAML):

    waivers:
      - id: SVC-06                         # catalog ID
        target: "evolutionary-computation@*" # fnmatch pattern over the target id (default: every target)
        reason: "JIT warm-up after deploy; tracked in OPS-1234"
        owner: alice
        expires: 2025-07-31                 # the waiver holds through this day (UTC)

>>> waivers = load_waivers(Path("waivers.yaml"))          # bad file: WaiverError, one line with file:line: field
>>> notes = apply_waivers(result.checks, waivers, today)  # marks waived failures; returns what to tell the user

A waived failure is reported as waived and does not change the exit code. After its expiry it counts again,
and its message says the waiver expired. A waiver that waived nothing in a run is reported.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable
from datetime import date
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from acgs_verify.catalog import CATALOG
from acgs_verify.profile.source import SourceError, read_yaml, validation_line
from acgs_verify.results import FAILED_OUTCOMES, CheckResult


class WaiverError(Exception):
    """A waivers file that cannot be used; str() is the one line a user sees."""


class Waiver(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    target: str = "*"  # fnmatch pattern over target ids such as auth@app-1
    reason: str = Field(min_length=1)
    owner: str = Field(min_length=1)
    expires: date

    @field_validator("id")
    @classmethod
    def _known_id(cls, v: str) -> str:
        if v not in CATALOG:
            # the loader adds "(got 'SEC-3')": the message says what is wrong with it, not the value again
            close = difflib.get_close_matches(v.upper(), CATALOG, n=1, cutoff=0.6)
            raise ValueError("not a runbook ID of the catalog (`acgs-verify catalog` lists them)"
                             + (f"; did you mean {close[0]}?" if close else ""))
        return v

    def matches(self, check: CheckResult) -> bool:
        return check.id == self.id and fnmatch.fnmatchcase(check.target, self.target)

    def expired(self, today: date) -> bool:
        return today > self.expires

    @property
    def label(self) -> str:
        return f"{self.id} {self.target}"

    def as_dict(self) -> dict:
        return {"id": self.id, "target": self.target, "reason": self.reason, "owner": self.owner,
                "expires": self.expires.isoformat()}


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    waivers: list[Waiver] = []


def load_waivers(path: Path) -> list[Waiver]:
    """Read and validate a waivers file; any problem is one WaiverError line naming the file, line and field."""
    try:
        located = read_yaml(Path(path), kind="waivers file")
    except SourceError as exc:
        raise WaiverError(str(exc)) from None
    try:
        return _File.model_validate(located.data).waivers
    except ValidationError as exc:
        raise WaiverError(validation_line(exc, located)) from None


def apply_waivers(checks: Iterable[CheckResult], waivers: list[Waiver], today: date) -> list[str]:
    """Mark each failure a live waiver matches as waived; say which waivers expired or matched nothing."""
    matched: set[Waiver] = set()  # matched some check of the run, passing or not
    used: set[Waiver] = set()  # waived a failure, or would have but had expired
    expired_hits: set[Waiver] = set()
    for check in checks:
        hits = [w for w in waivers if w.matches(check)]
        matched.update(hits)
        if check.outcome not in FAILED_OUTCOMES or not hits:
            continue
        live = [w for w in hits if not w.expired(today)]
        if live:
            used.add(live[0])
            check.waived = live[0].as_dict()
            continue
        w = hits[0]
        used.add(w)
        expired_hits.add(w)
        check.message = (f"{check.message} [waiver expired {w.expires.isoformat()}: "
                         f"{w.reason} (owner {w.owner}); this failure counts again]")
    notes = [f"waiver {w.label} (owner {w.owner}) expired on {w.expires.isoformat()}: the failure counts again"
             for w in waivers if w in expired_hits]
    for w in waivers:
        if w not in matched:
            notes.append(f"waiver {w.label} (owner {w.owner}, expires {w.expires.isoformat()}) "
                         "matches no check in this run")
        elif w not in used:
            notes.append(f"waiver {w.label} (owner {w.owner}) matches only passing checks: it can be removed")
    return notes
