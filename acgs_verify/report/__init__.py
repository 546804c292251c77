"""Report writers. Each reads a RunResult (or summary.json) and writes one file; none reaches into pytest.

WRITERS maps a file name in the run directory to the function that writes it. junit.xml is written by
pytest's own junitxml plugin during the run (with each case's ID, severity and section as properties).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from acgs_verify.report.summary import write_summary
from acgs_verify.results import RunResult

WRITERS: dict[str, Callable[[RunResult, Path], None]] = {
    "summary.json": write_summary,
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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
