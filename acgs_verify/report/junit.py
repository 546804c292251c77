"""junit.xml as pytest's junitxml plugin wrote it, corrected for the checks a run stopped mid-way.

    >>> mark_interrupted(Path("junit.xml"), [c for c in result.checks if c.outcome == "interrupted"])

pytest opens a test case when a test's setup has passed and names it when the test body reports; a body cut off by
SIGINT or SIGTERM never reports, which leaves `<testcase time="0.000" />`: no name, no outcome, read as a pass by
every CI. (Under xdist the case of a worker killed by the interruption says "failed on setup with ... crashed".)
Here each such check becomes a named case with an `<error>` saying it was interrupted, and the counts follow.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from acgs_verify.results import CheckResult

# characters XML 1.0 cannot hold at all, even escaped (ElementTree would write them and break the file)
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
PROPERTIES = ("runbook_id", "severity", "section", "target", "host")  # as the plugin records them on each case


def case_address(nodeid: str, prefix: str | None = None) -> tuple[str, str]:
    """(classname, name) as pytest's junitxml names a test:
    case_address("checks/test_services.py::test_latency[auth@app-1]") -> ("checks.test_services",
    "test_latency[auth@app-1]"). Parameters are kept whole (a target id may hold `/` or `::`)."""
    head, bracket, params = nodeid.partition("[")
    names = head.split("::")
    names[0] = names[0].removesuffix(".py").replace("/", ".")
    names[-1] += bracket + params
    classnames = ([prefix] if prefix else []) + names[:-1]
    return ".".join(classnames), names[-1]


def mark_interrupted(path: Path, checks: list[CheckResult], prefix: str | None = None) -> None:
    """Rewrite junit.xml at `path` (if there is one) so that each of `checks` (interrupted) is one named test case
    with an `<error>`, without the nameless cases pytest left for them; the suites' counts are recounted."""
    from acgs_verify.report import atomic_write

    if not checks or not path.is_file():
        return
    tree = ET.parse(path)
    root = tree.getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    if not suites:
        return
    cases = {case_address(c.nodeid, prefix): c for c in checks}
    for suite in suites:
        for tc in list(suite.findall("testcase")):
            if tc.get("name") is None or (tc.get("classname"), tc.get("name")) in cases:
                suite.remove(tc)
    home = suites[0]
    after = home.find("system-out") if home.find("system-out") is not None else home.find("system-err")
    at = list(home).index(after) if after is not None else len(home)  # the schema wants cases before system-out
    for i, ((classname, name), c) in enumerate(cases.items()):
        home.insert(at + i, _case(classname, name, c))
    for suite in suites:
        found = suite.findall("testcase")
        suite.set("tests", str(len(found)))
        for tag, attr in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
            suite.set(attr, str(sum(1 for tc in found if tc.find(tag) is not None)))
    atomic_write(path, ET.tostring(root, encoding="utf-8", xml_declaration=True))


def _xml(text) -> str:
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def _case(classname: str, name: str, c: CheckResult) -> ET.Element:
    case = ET.Element("testcase", {"classname": _xml(classname), "name": _xml(name), "time": f"{c.duration:.3f}"})
    props = ET.SubElement(case, "properties")
    for key in PROPERTIES:
        value = getattr(c, "id" if key == "runbook_id" else key)
        if value is not None:
            ET.SubElement(props, "property", {"name": key, "value": _xml(value)})
    ET.SubElement(props, "property", {"name": "outcome", "value": c.outcome})
    message = _xml(c.message or f"{c.name}: interrupted before it finished")
    ET.SubElement(case, "error", {"type": "interrupted", "message": message}).text = message
    return case


def drop_skip_locations(path: Path) -> None:
    """junit.xml without the `file:line: ` pytest's junitxml puts before each skip reason: for a check that is
    where the library raised the skip (`.../acgs_verify/check.py:145: `), an internal path no reader can use. The
    `<skipped>` text becomes its reason, as its message attribute already says it."""
    from acgs_verify.report import atomic_write

    if not path.is_file():
        return
    tree = ET.parse(path)
    changed = False
    for skipped in tree.getroot().iter("skipped"):
        reason = skipped.get("message")
        if reason is not None and skipped.text != reason:
            skipped.text, changed = reason, True
    if changed:
        atomic_write(path, ET.tostring(tree.getroot(), encoding="utf-8", xml_declaration=True))
