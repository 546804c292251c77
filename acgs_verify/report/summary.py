"""summary.json: the run's result model as JSON, a published format with a version (results.SCHEMA_VERSION) and a
JSON Schema shipped in the package (schemas/summary.schema.json; docs/summary.schema.json is the same file).

    >>> read_summary(Path("reports/latest/summary.json"))   # RunResult; SummaryFormatError for a newer major

Readers (`acgs-verify report`, `merge`, `diff`) go through RunResult.from_dict: unknown fields ignored, missing
optional ones filled, a newer major version refused in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

from acgs_verify.results import RunResult


def write_summary(result: RunResult, path: Path) -> None:
    from acgs_verify.report import atomic_write

    atomic_write(path, json.dumps(result.as_dict(), indent=2, default=str) + "\n")


def read_summary(path: Path) -> RunResult:
    return RunResult.from_dict(json.loads(Path(path).read_text()))


def summary_schema() -> dict:
    """The JSON Schema of summary.json this version writes (acgs_verify/schemas/summary.schema.json, also
    docs/summary.schema.json)."""
    from importlib.resources import files

    return json.loads(files("acgs_verify").joinpath("schemas", "summary.schema.json").read_text(encoding="utf-8"))
