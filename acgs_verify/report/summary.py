"""summary.json: the run's result model as JSON (docs/design.md lists its fields)."""

from __future__ import annotations

import json
from pathlib import Path

from acgs_verify.results import RunResult


def write_summary(result: RunResult, path: Path) -> None:
    from acgs_verify.report import atomic_write

    atomic_write(path, json.dumps(result.as_dict(), indent=2, default=str) + "\n")


def read_summary(path: Path) -> RunResult:
    return RunResult.from_dict(json.loads(Path(path).read_text()))
