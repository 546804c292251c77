"""The findings the terminal shows after a run, above its last line: one line per finding, not per check.

>>> findings_lines(result)
['hosts: app-1 75 passed 0 failed, ops-1 0 passed 9 failed',
 'UNREACHABLE ops-1: 9 checks measured nothing (P0: 1, P1: 4, P2: 4): host unreachable: ssh: connect to host ...',
 'FAIL P1 BK-01[backups] a recent backup exists: BK-01 backups: could not measure: backup directory ... does not
  exist. Next: ...',
 '  the same for 5 more checks (P1: 3, P2: 1, P3: 1): BK-02[backups/latest], ... (+2 more)']

A host that cannot be reached fails every check that runs on it with the same reason: those become one
UNREACHABLE line for the host (a service on it that gave no answer over HTTP too). Other checks that could not
measure for one same reason (a database that does not answer, a backup directory that does not exist) share the
line of the first of them, and the line after it names the others. Every other failure keeps its own line;
reports list every check whatever the terminal groups.
"""

from __future__ import annotations

import re

from acgs_verify.redact import printable
from acgs_verify.results import CheckResult, RunResult
from acgs_verify.words import plural

HOST_UNREACHABLE = "could not measure: host unreachable: "
COULD_NOT_MEASURE = "could not measure: "
NO_ANSWER = "no answer from "
_TIMING = re.compile(r" \(after \d+(?:\.\d+)? s\)")  # connect timings differ between checks of one cause


def _severities(checks: list[CheckResult]) -> str:
    counts: dict[str, int] = {}
    for c in checks:
        counts[c.severity] = counts.get(c.severity, 0) + 1
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


def _names(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")


def _plural(n: int, word: str) -> str:
    return plural(n, word)


def findings_lines(result: RunResult) -> list[str]:
    """What the terminal prints in "acgs-verify findings": notes, the per-host tally, failures, warnings."""
    failed = [c for c in result.checks if c.outcome in ("failed", "error")]
    warned = [c for c in result.checks if c.warning and c.outcome == "passed"]
    hosts = result.hosts
    if not result.checks or (not failed and not warned and not result.notes and len(hosts) < 2):
        return []
    out = [f"NOTE {note}" for note in result.notes]
    if hosts:
        out.append("hosts: " + ", ".join(
            f"{name} {h['passed']} passed {h['failed']} failed" + (f" {h['skipped']} skipped" if h["skipped"] else "")
            for name, h in hosts.items()))

    findings = {c.nodeid: c.finding()[0] for c in failed}
    unreachable: dict[str, str] = {}  # host -> why
    for c in failed:
        if c.host and not c.waived and findings[c.nodeid].startswith(HOST_UNREACHABLE):
            unreachable.setdefault(c.host, findings[c.nodeid].removeprefix(HOST_UNREACHABLE))
    by_host: dict[str, list[CheckResult]] = {h: [] for h in unreachable}
    by_cause: dict[str, list[CheckResult]] = {}
    single: list[CheckResult] = []
    for c in failed:
        why = findings[c.nodeid]
        if c.waived:
            single.append(c)
        elif c.host in unreachable and (why.startswith(COULD_NOT_MEASURE) or NO_ANSWER in why):
            by_host[c.host].append(c)
        elif why.startswith(COULD_NOT_MEASURE):
            by_cause.setdefault(_TIMING.sub("", why.removeprefix(COULD_NOT_MEASURE)), []).append(c)
        else:
            single.append(c)
    for host, checks in by_host.items():
        out.append(f"UNREACHABLE {host}: {_plural(len(checks), 'check')} measured nothing "
                   f"({_severities(checks)}): host unreachable: {unreachable[host]}")
    same: dict[str, list[CheckResult]] = {}  # the first check of a cause -> the others it stands for
    for checks in by_cause.values():
        single.append(checks[0])
        same[checks[0].nodeid] = checks[1:]
    order = {c.nodeid: i for i, c in enumerate(failed)}
    for c in sorted(single, key=lambda c: order[c.nodeid]):
        tag = "WAIVED" if c.waived else ("ERROR" if c.outcome == "error" else "FAIL")
        # whose waiver, why and until when, before the message: a waiver nobody can trace is a hidden failure
        waiver = (f" (waived until {c.waived.get('expires')} by {c.waived.get('owner')}: "
                  f"{c.waived.get('reason')})") if c.waived else ""
        out.append(f"{tag} {c.severity} {c.name} {c.title}{waiver}: {c.message}")
        others = same.get(c.nodeid)
        if others:  # its own line: at the end of a 450-character message nobody read it
            out.append(f"  the same for {_plural(len(others), 'more check')} ({_severities(others)}): "
                       f"{_names([o.name for o in others])}")
    out += [f"WARN {c.severity} {c.name} {c.title}: {c.warning}" for c in warned]
    # the terminal acts on what it is sent: a summary.json from elsewhere (acgs-verify report) may hold anything
    return [printable(line) for line in out]
