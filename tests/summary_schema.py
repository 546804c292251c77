"""summary.json against the JSON Schema the package ships (acgs_verify/schemas/summary.schema.json): every run a test
makes through run_cli (tests/conftest.py) has each summary.json it wrote checked here.

    >>> schema_errors(Path("reports/latest/summary.json"))
    []                                   # or ["checks/3/outcome: 'crashed' is not one of [...]", ...]
"""

from __future__ import annotations

import json
import os
import stat
from functools import cache
from pathlib import Path


@cache
def validator():
    import jsonschema

    from acgs_verify.report.summary import summary_schema

    schema = summary_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def schema_errors(path: Path) -> list[str]:
    data = json.loads(Path(path).read_text())
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
            for e in sorted(validator().iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))]


def summaries(report_dir: Path) -> dict[Path, tuple[int, int]]:
    """REPORT_DIR/<run id>/summary.json files, each with (inode, mtime in ns): a run directory only, no link followed
    (`latest` is the run it names, and some tests point links where no run should go)."""
    found = {}
    try:
        entries = list(os.scandir(report_dir))
    except OSError:
        return {}
    for entry in entries:
        if entry.is_dir(follow_symlinks=False) and not entry.name.startswith(".partial-"):
            path = Path(entry.path) / "summary.json"
            try:
                st = path.lstat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found[path] = (st.st_ino, st.st_mtime_ns)
    return found


def report_dir_of(args: tuple[str, ...], cwd: Path) -> Path | None:
    if "--report-dir" not in args or args.index("--report-dir") + 1 >= len(args):
        return None
    report_dir = Path(args[args.index("--report-dir") + 1])
    return report_dir if report_dir.is_absolute() else cwd / report_dir


def assert_written_summaries_valid(report_dir: Path | None, before: dict[Path, tuple[int, int]]) -> None:
    """After a run: every summary.json it wrote (new, or replaced since `before`) meets the shipped schema."""
    if report_dir is None:
        return
    for path, seen in summaries(report_dir).items():
        if before.get(path) != seen:
            errors = schema_errors(path)
            assert not errors, f"{path} does not meet summary.schema.json: {errors[:5]}"
