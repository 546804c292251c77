"""allure-results/: one `<uuid>-result.json` per check (with its evidence as attachments), environment.properties
and categories.json, all written from the RunResult after the run.

Written here rather than by allure-pytest during the run: its listener writes a result file and a container
file per fixture for every test item, ~3 ms per item (BENCHMARKS.md), in the run's critical path. File names are
derived from the run id and the check, so `acgs-verify report` rewrites the same files.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime
from pathlib import Path

from acgs_verify.redact import printable
from acgs_verify.results import RunResult

ALLURE_DIR = "allure-results"

CATEGORIES = [
    {"name": "Could not measure (target unreachable, timeout, missing file)",
     "matchedStatuses": ["failed", "broken"], "messageRegex": ".*could not measure.*|.*unreachable.*"},
    {"name": "Constitutional hash mismatch", "matchedStatuses": ["failed"],
     "messageRegex": "(?s).*(constitutional|X-Constitutional-Hash|other hashes).*"},
    {"name": "Threshold exceeded", "matchedStatuses": ["failed"], "messageRegex": "(?s).*measured.*expected.*"},
    {"name": "Suite errors (fixtures, setup)", "matchedStatuses": ["broken"]},
    {"name": "Skipped: not applicable to this environment", "matchedStatuses": ["skipped"]},
    {"name": "Interrupted: the run was stopped before the check finished", "matchedStatuses": ["unknown"]},
]


SEVERITY = {"P0": "blocker", "P1": "critical", "P2": "normal", "P3": "minor"}
# an interrupted check has no verdict: Allure's `unknown`, not `broken` (which reads as a fault of the suite)
STATUS = {"passed": "passed", "failed": "failed", "error": "broken", "skipped": "skipped", "interrupted": "unknown"}


def write_results(result: RunResult, path: Path) -> None:
    """path = the run's allure-results/ directory. Plain writes, not atomic_write: `run` writes into its
    .partial- directory, renamed whole when complete (a rename per file cost ~0.1 s per 1000 checks)."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        clock = datetime.fromisoformat(result.started).timestamp() * 1000
    except ValueError:
        clock = 0.0
    for c in result.checks:
        uid = uuid.uuid5(uuid.NAMESPACE_URL, f"acgs-verify:{result.run_id}:{c.nodeid}")
        module, _, test = c.nodeid.partition("::")
        attachments = []
        texts = ([("measurement", f"measured: {c.measured}\nexpected: {c.expected or '-'}")] if c.measured else [])
        for i, (name, text) in enumerate([*texts, *c.evidence.items()]):
            source = f"{uuid.uuid5(uid, str(i))}-attachment.txt"
            # a run's evidence is escaped where it is recorded; a summary.json from elsewhere may hold anything
            (path / source).write_text(printable(text, multiline=True), encoding="utf-8")
            attachments.append({"name": name, "source": source, "type": "text/plain"})
        message = c.message or c.warning or ""
        if c.waived:
            message = f"WAIVED ({c.waived.get('reason', '')}): {message}"
        labels = [
            ("severity", SEVERITY.get(c.severity, "normal")), ("epic", _section_title(c.section)),
            ("feature", f"{c.id} {c.title}"), ("tag", c.section), ("tag", c.severity.lower()),
            ("suite", module.removesuffix(".py").split("/")[-1]),
            ("runbook_id", c.id), ("target", c.target), *([("host", c.host)] if c.host else [])]
        doc = {
            "uuid": str(uid), "name": test or c.nodeid, "fullName": f"{module.removesuffix('.py').replace('/', '.')}"
            f"#{test.split('[')[0]}", "historyId": hashlib.md5(f"{result.profile}:{c.nodeid}".encode()).hexdigest(),
            "status": STATUS.get(c.outcome, "unknown"), "statusDetails": {"message": message} if message else {},
            "start": int(clock), "stop": int(clock + c.duration * 1000), "description": c.next_step,
            "labels": [{"name": k, "value": v} for k, v in labels], "attachments": attachments,
            "parameters": [{"name": "target", "value": c.target}],
        }
        clock += c.duration * 1000
        (path / f"{uid}-result.json").write_text(json.dumps(doc), encoding="utf-8")


def _section_title(section: str) -> str:
    from acgs_verify.catalog import SECTIONS

    return SECTIONS.get(section, section)


def _prop(value: str) -> str:
    # java.util.Properties: escape backslashes, separators and line breaks
    return (printable(value).replace("\\", "\\\\").replace("\n", "\\n").replace("=", "\\=").replace(":", "\\:"))


def write_environment(result: RunResult, path: Path) -> None:
    from acgs_verify.report import atomic_write

    props = {"profile": result.profile, "gate": result.gate, "constitutional_hash": result.constitutional_hash,
             "run_id": result.run_id, "started": result.started, "verdict": result.summary_line().split(" - ")[0]}
    atomic_write(path, "".join(f"{k}={_prop(v)}\n" for k, v in props.items()))


def write_categories(result: RunResult, path: Path) -> None:
    from acgs_verify.report import atomic_write

    atomic_write(path, json.dumps(CATEGORIES, indent=2) + "\n")
