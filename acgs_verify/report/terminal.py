"""The findings the terminal shows after a run, above its last line: one line per finding, not per check.

>>> findings_lines(result)
['UNREACHABLE ops-1: 9 checks on ops-1 could not measure (P0: 1, P1: 4, P2: 4): host unreachable: ssh: connect to
  host ... Next: restore the connection to ops-1, then run again: `ssh -v acgs@10.0.0.9`',
 'hosts: app-1 75 passed 0 failed, ops-1 0 passed 0 failed 9 could not measure',
 'ERROR P1 BK-01[backups] a recent backup exists: BK-01 backups: could not measure: backup directory ... does not
  exist. Next: restore this run's access to ...',
 '  the same for 5 more checks (P1: 3, P2: 1, P3: 1): BK-02[backups/latest], ... (+2 more)',
 'FAIL P0 SVC-01[auth@app-1] ...: measured HTTP 503 ...; expected 2xx within 2 s. Next: Service Outage: ...']

A host or target that did not answer comes first, one UNREACHABLE line each (report/view.py's reach_blocks): its
checks are folded into it, with the reach step. Other checks that could not measure (ERROR) for one same reason
(a database that does not answer, a backup directory that does not exist) share the line of the first of them,
and the line after it names the others. FAIL lines are only checks that measured something wrong; reports list
every check whatever the terminal groups.
"""

from __future__ import annotations

import re

from acgs_verify.redact import printable
from acgs_verify.report.view import reach_blocks, unreachable_of
from acgs_verify.results import CheckResult, RunResult
from acgs_verify.words import plural

COULD_NOT_MEASURE = "could not measure: "
_TIMING = re.compile(r" \(after \d+(?:\.\d+)? s\)")  # connect timings differ between checks of one cause


def _severities(checks: list[CheckResult]) -> str:
    counts: dict[str, int] = {}
    for c in checks:
        counts[c.severity] = counts.get(c.severity, 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


def _names(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def findings_lines(result: RunResult) -> list[str]:
    """What the terminal prints in "acgs-verify findings": what did not answer, notes, the per-host tally, what
    could not measure, failures, warnings."""
    failed = [c for c in result.checks if c.outcome in ("failed", "error")]
    warned = [c for c in result.checks if c.warning and c.outcome == "passed"]
    hosts = result.hosts
    if not result.checks or (not failed and not warned and not result.notes and len(hosts) < 2):
        return []
    out = [f"UNREACHABLE {b.target}: {b.line}: {b.error}. Next: {b.next_step}" for b in reach_blocks(result)]
    out += [f"NOTE {note}" for note in result.notes]
    if hosts:
        out.append("hosts: " + ", ".join(
            f"{name} {h['passed']} passed {h['failed']} failed"
            + (f" {h['error']} could not measure" if h.get("error") else "")
            + (f" {h['skipped']} skipped" if h["skipped"] else "")
            for name, h in hosts.items()))

    by_cause: dict[str, list[CheckResult]] = {}
    single: list[CheckResult] = []
    for c in failed:
        if unreachable_of(c) is not None:
            continue  # in its UNREACHABLE line
        why = c.finding()[0]
        if c.error and why.startswith(COULD_NOT_MEASURE):
            by_cause.setdefault(_TIMING.sub("", why.removeprefix(COULD_NOT_MEASURE)), []).append(c)
        else:
            single.append(c)
    same: dict[str, list[CheckResult]] = {}  # the first check of a cause -> the others it stands for
    for checks in by_cause.values():
        single.append(checks[0])
        same[checks[0].nodeid] = checks[1:]
    order = {c.nodeid: i for i, c in enumerate(failed)}
    # could not measure first (its step restores the reach), then what measured something wrong
    for c in sorted(single, key=lambda c: (not c.error, order[c.nodeid])):
        tag = "WAIVED" if c.waived else ("ERROR" if c.outcome == "error" else "FAIL")
        # whose waiver, why and until when, before the message: a waiver nobody can trace is a hidden failure
        waiver = (f" (waived until {c.waived.get('expires')} by {c.waived.get('owner')}: "
                  f"{c.waived.get('reason')})") if c.waived else ""
        out.append(f"{tag} {c.severity} {c.name} {c.title}{waiver}: {c.message}")
        others = same.get(c.nodeid)
        if others:  # its own line: at the end of a 450-character message nobody read it
            out.append(f"  the same for {plural(len(others), 'more check')} ({_severities(others)}): "
                       f"{_names([o.name for o in others])}")
    out += [f"WARN {c.severity} {c.name} {c.title}: {c.warning}" for c in warned]
    # the terminal acts on what it is sent: a summary.json from elsewhere (acgs-verify report) may hold anything
    return [printable(line) for line in out]
