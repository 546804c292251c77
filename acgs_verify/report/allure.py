"""allure-results/environment.properties and categories.json, beside the results allure-pytest writes.

The test results themselves come from allure-pytest during the run (`acgs-verify run` loads it with
--alluredir); the plugin adds severity, epic and feature labels and attaches each check's evidence.
"""

from __future__ import annotations

import json
from pathlib import Path

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
]


def _prop(value: str) -> str:
    # java.util.Properties: escape backslashes, separators and line breaks
    return (str(value).replace("\\", "\\\\").replace("\n", "\\n").replace("=", "\\=").replace(":", "\\:"))


def write_environment(result: RunResult, path: Path) -> None:
    from acgs_verify.report import atomic_write

    props = {"profile": result.profile, "gate": result.gate, "constitutional_hash": result.constitutional_hash,
             "run_id": result.run_id, "started": result.started, "verdict": result.summary_line().split(" - ")[0]}
    atomic_write(path, "".join(f"{k}={_prop(v)}\n" for k, v in props.items()))


def write_categories(result: RunResult, path: Path) -> None:
    from acgs_verify.report import atomic_write

    atomic_write(path, json.dumps(CATEGORIES, indent=2) + "\n")
