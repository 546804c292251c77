"""Report writers. Each reads a RunResult (or summary.json) and writes one file; none reaches into pytest.

WRITERS maps a file name in the run directory to the function that writes it. junit.xml is ours too
(report/junit.py), from the result model: it replaces what pytest's junitxml plugin wrote during the run, so its names,
counts and outcomes are the run's. reports/history.jsonl is appended once the run is complete (report/history.py).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from acgs_verify.report.allure import ALLURE_DIR, write_categories, write_environment, write_results
from acgs_verify.report.html import write_html
from acgs_verify.report.junit import write_junit
from acgs_verify.report.markdown import write_markdown
from acgs_verify.report.prometheus import write_metrics
from acgs_verify.report.summary import write_summary
from acgs_verify.results import RunResult

WRITERS: dict[str, Callable[[RunResult, Path], None]] = {
    "summary.json": write_summary,
    "junit.xml": write_junit,
    "report.html": write_html,
    "report.md": write_markdown,
    "metrics.prom": write_metrics,
    ALLURE_DIR: write_results,
    f"{ALLURE_DIR}/environment.properties": write_environment,
    f"{ALLURE_DIR}/categories.json": write_categories,
}


def write_all(result: RunResult, run_dir: Path) -> list[Path]:
    written = []
    for name, writer in WRITERS.items():
        path = run_dir / name
        writer(result, path)
        written.append(path)
    return written


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write to a temporary file beside `path`, then rename: a reader never sees half a file."""
    with atomic_file(path) as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write in pieces (a report too big to hold as one text), renamed to `path` once whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # reports are read by others (node_exporter, a web server); mkstemp makes 0600
        with os.fdopen(fd, "wb") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def mask_files(paths: list[Path], secrets: list[str]) -> int:
    """Mask secrets in files other tools wrote during the run (junit.xml, Allure results): each form a text may
    hold it in (redact.secret_forms: whitespace-normalised, escaped), raw, JSON-escaped and XML-escaped. Returns
    how many files changed."""
    import json
    from xml.sax.saxutils import escape

    from acgs_verify.redact import secret_forms

    forms = set()
    for secret in secrets:
        if secret and len(secret) >= 3:
            for s in secret_forms(secret):
                forms |= {s, json.dumps(s)[1:-1], escape(s, {'"': "&quot;", "'": "&apos;"}), escape(s)}
    forms = {f for f in forms if len(f) >= 3}
    if not forms:
        return 0
    changed = 0
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        masked = text
        for form in sorted(forms, key=len, reverse=True):
            masked = masked.replace(form, "***")
        if masked != text:
            atomic_write(path, masked)
            changed += 1
    return changed
