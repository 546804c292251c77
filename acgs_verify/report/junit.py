"""junit.xml from the result model, in the shape Jenkins' xunit plugin (its junit-10.xsd), GitLab and GitHub read.

    >>> write_junit(result, Path("junit.xml"))

One `<testsuite name="acgs-verify">` holds a case per check, in catalog order: the case's name is the runbook ID,
target and title (`SVC-01 auth@app-1: health endpoint answers 2xx`), its classname the runbook section (`Service
health`), so a CI's test view shows every check by its ID whether it passed or not. Its outcome:
- failed: `<failure>`; error (could not measure): `<error>`; interrupted: `<error type="interrupted">`;
- skipped: `<skipped>` with the reason; a waived failure or error: `<skipped type="waived">` with the waiver's
  reason, owner and expiry (a CI paints it neither red nor green, as the last line counts it: waived).
The suite's counts are the last line's: failures + errors of type failed/error = its failed; skipped = its skipped
+ waived. The gate's own failures (a shard missing, a table vanished since the snapshot) are failing cases of a
second suite, `acgs-verify gate`, so a closed gate is red in CI too without changing the checks' counts.

junit-10.xsd allows a testcase only name, classname, time and group, and as children only
skipped/error/failure/system-out/system-err (and reruns): what pytest's xunit1 puts on a case (file, line,
`<properties>`) it rejects. Each case's severity, target, host, measurement and next step go to its `<system-out>`,
which every reader shows; run-level facts are the suite's `<properties>`, which the schema allows there.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import quoteattr

from acgs_verify.redact import printable
from acgs_verify.results import FAILED_OUTCOMES, INTERRUPTED, CheckResult, RunResult, in_catalog_order

SUITE = "acgs-verify"
GATE_SUITE = "acgs-verify gate"
# characters XML 1.0 cannot hold at all, even escaped (ElementTree would write them and break the file)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def case_name(c: CheckResult) -> str:
    """`SVC-01 auth@app-1: health endpoint answers 2xx`: what a CI lists, starting with the runbook ID."""
    return f"{c.id} {c.target}: {c.title}"


def case_classname(c: CheckResult) -> str:
    """The runbook section (`Service health`); no dots, which Jenkins would read as packages."""
    from acgs_verify.catalog import SECTIONS

    return SECTIONS.get(c.section, c.section).replace(".", " ")


def write_junit(result: RunResult, path: Path) -> None:
    """Written case by case, never as one tree: at 200 hosts a tree of 16k cases added 35-50 MB to the run's peak.
    The counts on the opening tags are taken first, in one pass over the results."""
    from acgs_verify.report import atomic_file

    checks = in_catalog_order(result.checks)
    counts = _counts(checks)
    gate = _gate_suite(result) if result.gate_failures else None
    totals = {attr: counts[attr] + (int(gate.get(attr)) if gate is not None else 0)
              for attr in ("tests", "failures", "errors")}
    with atomic_file(path) as f:
        def put(text: str, level: int = 0) -> None:
            f.write(f"{'  ' * level}{text}\n".encode())

        put("<?xml version='1.0' encoding='utf-8'?>")
        put(_open("testsuites", {"name": SUITE, **totals, "time": _seconds(result.duration)}))
        put(_open("testsuite", {"name": SUITE, **counts, "time": _seconds(result.duration),
                                "timestamp": _xml(result.started)}), 1)
        put(_element(_properties(result), 2), 2)
        for c in checks:
            put(_element(_case(c), 2), 2)
        if result.notes:
            out = ET.Element("system-out")
            out.text = _xml("\n".join(result.notes))
            put(_element(out, 2), 2)
        put("</testsuite>", 1)
        if gate is not None:
            put(_element(gate, 1), 1)
        put("</testsuites>")


def _counts(checks: list[CheckResult]) -> dict[str, int]:
    return {"tests": len(checks),
            "failures": sum(1 for c in checks if c.failed and c.outcome == "failed"),
            "errors": sum(1 for c in checks if (c.failed and c.outcome != "failed") or c.outcome == INTERRUPTED),
            "skipped": sum(1 for c in checks if c.outcome == "skipped" or _waived(c))}


def _open(tag: str, attrs: dict) -> str:
    return f"<{tag}" + "".join(f" {k}={quoteattr(str(v))}" for k, v in attrs.items()) + ">"


def _element(element: ET.Element, level: int) -> str:
    """One element as indented text, as ET.indent would lay it out at `level` in the whole tree."""
    ET.indent(element, level=level)
    return ET.tostring(element, encoding="unicode")


def _properties(result: RunResult) -> ET.Element:
    props = ET.Element("properties")
    for name, value in (("run_id", result.run_id), ("profile", result.profile), ("gate", result.gate),
                        ("constitutional_hash", result.constitutional_hash), ("exit_code", result.exit_code),
                        ("summary", result.summary_line())):
        ET.SubElement(props, "property", {"name": name, "value": _xml(value)})
    return props


def _gate_suite(result: RunResult) -> ET.Element:
    suite = ET.Element("testsuite", {"name": GATE_SUITE, "tests": str(len(result.gate_failures)),
                                     "failures": str(len(result.gate_failures)), "errors": "0", "skipped": "0",
                                     "timestamp": _xml(result.started)})
    for text in result.gate_failures:
        case = ET.SubElement(suite, "testcase", {"classname": "Gate", "name": _xml(f"gate {result.gate}: {text}")})
        ET.SubElement(case, "failure", {"type": "gate", "message": _xml(text)}).text = _xml(text)
    return suite


def _case(c: CheckResult) -> ET.Element:
    case = ET.Element("testcase", {"classname": _xml(case_classname(c)), "name": _xml(case_name(c)),
                                   "time": _seconds(c.duration)})
    message = _xml(c.message or f"{c.id} {c.target}: {c.outcome}")
    if _waived(c):
        w = c.waived or {}
        why = f"waived ({c.outcome}): {w.get('reason', '')} (owner {w.get('owner', '?')}, " \
              f"expires {w.get('expires', '?')})"
        ET.SubElement(case, "skipped", {"type": "waived", "message": _xml(why)}).text = message
    elif c.outcome == "failed":
        ET.SubElement(case, "failure", {"type": "failed", "message": message}).text = message
    elif c.outcome == INTERRUPTED:
        ET.SubElement(case, "error", {"type": "interrupted", "message": message}).text = message
    elif c.outcome in FAILED_OUTCOMES:  # error: the check could not measure
        ET.SubElement(case, "error", {"type": c.outcome, "message": message}).text = message
    elif c.outcome == "skipped":
        ET.SubElement(case, "skipped", {"type": "skipped", "message": message}).text = message
    ET.SubElement(case, "system-out").text = _xml(_details(c))
    return case


def _waived(c: CheckResult) -> bool:
    return bool(c.waived) and c.outcome in FAILED_OUTCOMES


def _details(c: CheckResult) -> str:
    """What pytest's xunit1 kept as a case's properties, and what was measured, as `key: value` lines."""
    lines = [("runbook_id", c.id), ("severity", c.severity), ("section", c.section), ("target", c.target),
             ("host", c.host), ("outcome", "waived" if _waived(c) else c.outcome), ("measured", c.measured),
             ("expected", c.expected), ("warning", c.warning), ("next_step", c.next_step),
             ("attempts", c.attempts if c.attempts > 1 else None)]
    return "\n".join(f"{k}: {v}" for k, v in lines if v not in (None, "")) + "\n"


def _seconds(value: float) -> str:
    return f"{max(float(value or 0), 0.0):.3f}"  # junit-10.xsd's SUREFIRE_TIME: digits, a dot, digits


def _xml(text) -> str:
    """Text as XML may hold it and a CI page may show it: every control character a terminal or a browser would act
    on as an escape (redact.printable; newlines kept, system-out is multi-line), and what XML 1.0 cannot hold too."""
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", printable(str(text), multiline=True))
