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
from acgs_verify.results import FAILED_OUTCOMES, CheckResult, RunResult

ALLURE_DIR = "allure-results"

# Categories match a token this writer puts first in statusDetails.trace (`kind: threshold`), never the message: a
# message quotes targets and next steps ("...redeploy with the right constitutional configuration"), and Allure's
# matchers (matchedStatuses, messageRegex, traceRegex) are all it offers. A result's token comes from its outcome
# and the kind of failure its check reports (CheckResult.kind, catalog.KIND), so each category holds exactly the
# results of one kind; Allure matches a regex against the whole trace.
KIND_TOKEN = "kind: "
WAIVED = "waived"
# today a probe that could not measure fails its check with this in the message (plugin.py); the `error` outcome
# says it without words, and both are sorted as `unmeasured`
COULD_NOT_MEASURE = ": could not measure: "


def _kind_category(kind: str, name: str, statuses: list[str]) -> dict:
    return {"name": name, "matchedStatuses": statuses, "traceRegex": f"(?s){KIND_TOKEN}{kind}(\\n.*)?"}


def _categories() -> list[dict]:
    from acgs_verify.catalog import KINDS

    return [
        _kind_category("unmeasured", KINDS["unmeasured"], ["failed", "broken"]),
        *(_kind_category(k, name, ["failed"]) for k, name in KINDS.items() if k != "unmeasured"),
        _kind_category(WAIVED, "Waived: accepted failures (reason, owner and expiry in the message)",
                       ["failed", "broken"]),
        {"name": "Skipped: not applicable to this environment", "matchedStatuses": ["skipped"]},
        {"name": "Interrupted: the run was stopped before the check finished", "matchedStatuses": ["unknown"]},
    ]


def failure_kind(c: CheckResult) -> str | None:
    """The category token of a failed or errored result: `waived`, `unmeasured` (it could not measure), else the
    kind its check reports; None for a result that did not fail."""
    from acgs_verify.catalog import CATALOG

    if c.outcome not in FAILED_OUTCOMES:
        return None
    if c.waived:
        return WAIVED
    if c.outcome == "error" or COULD_NOT_MEASURE in c.message:
        return "unmeasured"
    # a summary.json written before the field existed: the catalog's kind for the ID
    return c.kind or (CATALOG[c.id].kind if c.id in CATALOG else "threshold")


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
        found, step = c.finding()
        kind = failure_kind(c)
        texts = ([("measurement", f"measured: {c.measured}\nexpected: {c.expected or '-'}")] if c.measured else [])
        if kind:
            # every failure carries what it found, against what, and what to do, whatever evidence it recorded
            texts = [("measurement", f"measured: {c.measured or found}\nexpected: {c.expected or '-'}\n"
                                     f"next step: {step or '-'}")]
        for i, (name, text) in enumerate([*texts, *c.evidence.items()]):
            source = f"{uuid.uuid5(uid, str(i))}-attachment.txt"
            # a run's evidence is escaped where it is recorded; a summary.json from elsewhere may hold anything
            (path / source).write_text(printable(text, multiline=True), encoding="utf-8")
            attachments.append({"name": name, "source": source, "type": "text/plain"})
        message = c.message or c.warning or ""
        if c.waived:
            message = f"WAIVED ({c.waived.get('reason', '')}): {message}"
        details: dict = {"message": printable(message)} if message else {}
        if kind:
            details["trace"] = printable(f"{KIND_TOKEN}{kind}\nmeasured: {c.measured or found}\n"
                                         f"expected: {c.expected or '-'}\nnext step: {step or '-'}", multiline=True)
        labels = [
            ("severity", SEVERITY.get(c.severity, "normal")), ("epic", _section_title(c.section)),
            ("feature", f"{c.id} {c.title}"), ("tag", c.section), ("tag", c.severity.lower()),
            ("suite", module.removesuffix(".py").split("/")[-1]),
            ("runbook_id", c.id), ("target", c.target), *([("host", c.host)] if c.host else [])]
        doc = {
            "uuid": str(uid), "name": test or c.nodeid, "fullName": f"{module.removesuffix('.py').replace('/', '.')}"
            f"#{test.split('[')[0]}", "historyId": hashlib.md5(f"{result.profile}:{c.nodeid}".encode()).hexdigest(),
            "status": STATUS.get(c.outcome, "unknown"), "statusDetails": details,
            "start": int(clock), "stop": int(clock + c.duration * 1000), "description": c.next_step,
            "labels": [{"name": k, "value": v} for k, v in labels], "attachments": attachments,
            "parameters": [{"name": "target", "value": c.target}],
            "steps": [_step(s, clock) for s in c.steps],
        }
        clock += c.duration * 1000
        (path / f"{uid}-result.json").write_text(json.dumps(doc), encoding="utf-8")


def _step(step: dict, clock: float) -> dict:
    # a stage's own time is not measured; it sits at the check's start, in order
    status = step.get("status", "passed")
    detail = printable(str(step.get("detail") or ""))
    return {"name": printable(str(step.get("name", "-"))), "status": STATUS.get(status, status),
            "statusDetails": {"message": detail} if detail else {}, "stage": "finished",
            "start": int(clock), "stop": int(clock), "steps": [], "attachments": [], "parameters": []}


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

    atomic_write(path, json.dumps(_categories(), indent=2) + "\n")
