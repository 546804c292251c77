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
    """The text json.dumps(result.as_dict(), indent=2) would be, written a check at a time: at 200 hosts the whole
    dict and its text were 40-60 MB on top of the run's peak (issue 24 item 7)."""
    from acgs_verify.report import atomic_file

    head = result.as_dict(checks=False)
    with atomic_file(path) as f:
        text = json.dumps(head, indent=2, default=str)
        if not result.checks:
            f.write(json.dumps({**head, "checks": []}, indent=2, default=str).encode() + b"\n")
            return
        f.write(text[:-2].encode() + b',\n  "checks": [\n')  # the head without its closing "\n}"
        for i, c in enumerate(result.checks):
            one = json.dumps(c.as_dict(), indent=2, default=str).replace("\n", "\n    ")  # no raw newline inside
            f.write(f"    {one}{',' if i < len(result.checks) - 1 else ''}\n".encode())
        f.write(b"  ]\n}\n")


def read_summary(path: Path) -> RunResult:
    return RunResult.from_dict(json.loads(Path(path).read_text()))


def summary_schema() -> dict:
    """The JSON Schema of summary.json this version writes (acgs_verify/schemas/summary.schema.json, also
    docs/summary.schema.json)."""
    from importlib.resources import files

    return json.loads(files("acgs_verify").joinpath("schemas", "summary.schema.json").read_text(encoding="utf-8"))
