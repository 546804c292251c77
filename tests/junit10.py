"""The rules of Jenkins' xunit plugin schema for JUnit, written down here (the file itself is not copied into the
repo): jenkinsci/xunit-plugin, src/main/resources/org/jenkinsci/plugins/xunit/types/model/xsd/junit-10.xsd, the
schema pytest's `junit_family = xunit2` targets. The xunit plugin skips a file that breaks any of them.

    >>> junit10_violations(Path("junit.xml"))
    []                                   # or ["testcase 'x': attribute 'file' not allowed", ...]

What it says, element by element (attributes not named are not allowed; all values are strings unless typed):
- testsuites: name, time (SUREFIRE_TIME), tests, failures, errors, none required; children: testsuite only.
- testsuite: name, tests, failures, errors required; group, time (SUREFIRE_TIME), skipped, timestamp, hostname, id,
  package, file, log, url; children, any order and number: testsuite, properties, testcase, system-out, system-err.
- properties: no attributes; children: property only. property: name and value required, empty.
- testcase: name required; time, classname, group; children, any order and number: skipped, error, failure,
  rerunFailure, rerunError, flakyFailure, flakyError, system-out, system-err. (No file, no line, no properties.)
- failure, error, skipped: type and message, text but no child elements.
- system-out, system-err: text only, no attributes.
- rerunFailure, rerunError, flakyFailure, flakyError: type required, message; children stackTrace, system-out,
  system-err in that order, at most one each; text allowed.
- elements that are not mixed content (testsuites, testsuite, properties, property, testcase) hold no text.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

SUREFIRE_TIME = re.compile(r"(([0-9]{0,3},)*[0-9]{3}|[0-9]{0,3})*(\.[0-9]*)?")
RESULT = ("skipped", "error", "failure")
RERUN = ("rerunFailure", "rerunError", "flakyFailure", "flakyError")
OUTPUT = ("system-out", "system-err")

# element: (required attributes, optional attributes, allowed children, holds text)
RULES: dict[str, tuple[set[str], set[str], tuple[str, ...], bool]] = {
    "testsuites": (set(), {"name", "time", "tests", "failures", "errors"}, ("testsuite",), False),
    "testsuite": ({"name", "tests", "failures", "errors"},
                  {"group", "time", "skipped", "timestamp", "hostname", "id", "package", "file", "log", "url"},
                  ("testsuite", "properties", "testcase", *OUTPUT), False),
    "properties": (set(), set(), ("property",), False),
    "property": ({"name", "value"}, set(), (), False),
    "testcase": ({"name"}, {"time", "classname", "group"}, (*RESULT, *RERUN, *OUTPUT), False),
    **{tag: (set(), {"type", "message"}, (), True) for tag in RESULT},
    **{tag: (set(), set(), (), True) for tag in OUTPUT},
    **{tag: ({"type"}, {"message"}, ("stackTrace", *OUTPUT), True) for tag in RERUN},
    "stackTrace": (set(), set(), (), True),
}
TYPED = {("testsuites", "time"): SUREFIRE_TIME, ("testsuite", "time"): SUREFIRE_TIME}


def junit10_violations(path: Path) -> list[str]:
    """Every way the file at `path` breaks junit-10.xsd, one line each (empty: it validates)."""
    root = ET.parse(path).getroot()
    if root.tag not in ("testsuites", "testsuite"):
        return [f"root element {root.tag!r}: junit-10.xsd starts with testsuites or testsuite"]
    out: list[str] = []
    _check(root, out)
    return out


def _check(el: ET.Element, out: list[str]) -> None:
    where = f"{el.tag} {el.get('name')!r}" if el.get("name") is not None else el.tag
    if el.tag not in RULES:
        out.append(f"{where}: element not in junit-10.xsd")
        return
    required, optional, children, text = RULES[el.tag]
    for attr in sorted(required - set(el.attrib)):
        out.append(f"{where}: required attribute {attr!r} missing")
    for attr in sorted(set(el.attrib) - required - optional):
        out.append(f"{where}: attribute {attr!r} not allowed")
    for (tag, attr), pattern in TYPED.items():
        if el.tag == tag and attr in el.attrib and not pattern.fullmatch(el.get(attr)):
            out.append(f"{where}: {attr}={el.get(attr)!r} is not a SUREFIRE_TIME")
    if not text and ((el.text or "").strip() or any((c.tail or "").strip() for c in el)):
        out.append(f"{where}: text not allowed")
    seen: list[str] = []
    for child in el:
        if child.tag not in children:
            out.append(f"{where}: child {child.tag!r} not allowed")
            continue
        seen.append(child.tag)
        _check(child, out)
    if el.tag in RERUN and seen != sorted(seen, key=("stackTrace", *OUTPUT).index):
        out.append(f"{where}: stackTrace, system-out, system-err out of order")
    if el.tag in RERUN and len(seen) != len(set(seen)):
        out.append(f"{where}: stackTrace, system-out, system-err at most once each")
