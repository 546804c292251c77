"""Who to notify, and by when, for the highest severity a run failed (runbook: Incident Classification,
Escalation Matrix), from the profile's `escalation:` section.

>>> escalation_of(result, profile.escalation)["line"]
'P0: notify Level 1 on-call engineer within 15 minutes'
>>> escalation_of(passing_result, profile.escalation)["line"]
'nothing to escalate: no check failed'

The run keeps the answer in its result model (result.extra["escalation"], in summary.json), so every report
writer, and `acgs-verify report` regenerating them later, says the same thing. Contacts are data: printed, never sent.
"""

from __future__ import annotations

from acgs_verify.profile.model import Escalation
from acgs_verify.results import RunResult
from acgs_verify.words import plural

SEVERITY_ORDER = ("P0", "P1", "P2", "P3")


def duration(minutes: float) -> str:
    """duration(15) -> '15 minutes'; duration(60) -> '1 hour'; duration(1440) -> '24 hours'."""
    if minutes >= 60 and minutes % 60 == 0:
        hours = int(minutes // 60)
        return plural(hours, "hour")
    return plural(float(minutes), "minute")


def _level(level) -> dict:
    return {"name": level.name, "who": level.who, "after_minutes": level.after_minutes,
            "contacts": list(level.contacts)}


def _named(level: dict) -> str:
    contacts = f" ({', '.join(level['contacts'])})" if level["contacts"] else ""
    return f"{level['name']} {level['who']}{contacts}"


def escalation_of(result: RunResult, esc: Escalation) -> dict:
    """For the highest failed severity (waived failures do not count): the severity, how many checks failed with
    it, the response time, the level to notify first and the levels after it, and the one `line` reports print."""
    failed = result.failed
    severities = [s for s in SEVERITY_ORDER if any(c.severity == s for c in failed)]
    if not severities:
        waived = result.totals["waived"]
        why = "no check failed" + (f" ({waived} waived)" if waived else "")
        if not result.complete:
            why += " among the checks that ran before the run was interrupted"
        return {"severity": None, "line": f"nothing to escalate: {why}"}
    severity = severities[0]
    levels = [_level(lv) for lv in esc.levels]
    first = next((i for i, lv in enumerate(levels) if lv["name"] == esc.notify.get(severity)), 0)
    notify, then = levels[first], levels[first + 1:]
    within = esc.response_minutes[severity]
    line = f"{severity}: notify {_named(notify)} within {duration(within)}"
    chain = "; ".join(f"after {duration(lv['after_minutes'])} unresolved: {_named(lv)}" for lv in then)
    return {"severity": severity, "failed": sum(1 for c in failed if c.severity == severity),
            "within_minutes": within, "notify": notify, "then": then, "line": line, "then_line": chain}


def escalation_line(result: RunResult) -> str | None:
    """The line the terminal prints just above the summary line, e.g. 'ESCALATION P0: notify Level 1 on-call
    engineer within 15 minutes'; None for a result without one (a summary.json written before escalation existed)."""
    esc = result.extra.get("escalation")
    if not isinstance(esc, dict) or not esc.get("line"):
        return None
    return f"ESCALATION {esc['line']}"
