"""reports/history.jsonl: one line per run, appended, read back for the compliance trend.

>>> append_history(result, Path("reports"))
>>> read_history(Path("reports"), profile="production")[-1]["compliance_rate"]
0.98

Appending is one write(2) of one line to a file opened with O_APPEND, so two runs finishing at once never
interleave or overwrite each other's line; a torn last line (a crash mid-write) is skipped when read.

The file is opened with O_NOFOLLOW for both: a history.jsonl that is a symlink (or a hard link, or no regular
file) is neither appended to nor read, with one warning. Reading is capped (the last MAX_READ_BYTES), and a line
that is not an entry (not JSON, a field of the wrong type, too long) is skipped with one warning naming the line,
so one bad line never breaks the reports of every later run.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from acgs_verify.results import RunResult

HISTORY_FILE = "history.jsonl"
TREND_POINTS = 60
MB = 1024 * 1024
MAX_READ_BYTES = 32 * MB  # read of history.jsonl: years of nightly runs of a large fleet, not a planted 1 GiB line
MAX_LINE_BYTES = 1 * MB  # one run's line: a few KB per hundred services


def history_entry(result: RunResult) -> dict:
    return {"run_id": result.run_id, "profile": result.profile, "gate": result.gate, "started": result.started,
            "duration": round(result.duration, 3), "exit_code": result.exit_code,
            "compliance_rate": result.compliance_rate, "totals": result.totals,
            "services": service_outcomes(result)}


def service_outcomes(result: RunResult) -> dict[str, dict]:
    """Per service target, what MON-02 and SVC-12 read back: SVC-01 passed (`up`), SVC-06's p99 and whether
    SVC-06 passed (`fast`); only the checks that ran are recorded.

    -> {"auth@app-1": {"up": true, "p99_ms": 1.9, "fast": true}}
    """
    out: dict[str, dict] = {}
    for c in result.checks:
        if c.outcome == "skipped" or c.id not in ("SVC-01", "SVC-06"):
            continue
        entry = out.setdefault(c.target, {})
        if c.id == "SVC-01":
            entry["up"] = not c.failed
        else:
            entry["fast"] = not c.failed
            if isinstance(c.value, dict) and isinstance(c.value.get("p99_ms"), int | float):
                entry["p99_ms"] = c.value["p99_ms"]
    return out


def append_history(result: RunResult, report_dir: Path, warn: Callable[[str], None] | None = None) -> Path | None:
    """Append the run's line; None, and one warning, where history.jsonl is not a plain file of its own (a symlink
    to a file elsewhere, a hard link, a FIFO): it is never written through another name."""
    warn = warn or _stderr
    path = Path(report_dir) / HISTORY_FILE
    data = (json.dumps(history_entry(result), separators=(",", ":")) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY
                     | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        warn(f"{path}: not appended to: {_why(exc)}")
        return None
    try:
        st = os.fstat(fd)
        problem = _not_own_file(st)
        if problem:
            warn(f"{path}: not appended to: {problem}")
            return None
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


def unsafe(report_dir: Path) -> str | None:
    """Why this run's line will not be appended to REPORT_DIR/history.jsonl, said before the reports are written
    (so that they say it too); None when it will be."""
    path = Path(report_dir) / HISTORY_FILE
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path}: not appended to: {_why(exc)}"
    if stat.S_ISLNK(st.st_mode):
        return f"{path}: not appended to: {LINK}"
    problem = _not_own_file(st)
    return f"{path}: not appended to: {problem}" if problem else None


LINK = "it is a symlink, and history is never written or read through one"


def _not_own_file(st: os.stat_result) -> str | None:
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if st.st_nlink > 1:  # another name of it, anywhere on the filesystem, would be written too
        return f"it has {st.st_nlink} names (hard links), and history is only written to a file of its own"
    return None


def _why(exc: OSError) -> str:
    return LINK if exc.errno == errno.ELOOP else (exc.strerror or str(exc))


def _stderr(message: str) -> None:
    print(f"acgs-verify: WARNING: {message}", file=sys.stderr)


def read_history(report_dir: Path, profile: str | None = None, limit: int = TREND_POINTS,
                 warn: Callable[[str], None] | None = None) -> list[dict]:
    """The last `limit` entries (of `profile`), oldest first. A line that is not an entry (not JSON, a field of the
    wrong type, longer than MAX_LINE_BYTES) is skipped, and `warn` is told, in one line naming the file and the
    line; only the last MAX_READ_BYTES of the file are read. Without `warn`, skipped lines go unsaid."""
    path = Path(report_dir) / HISTORY_FILE
    entries = []
    for entry in _entries(path, warn or (lambda _: None)):
        if profile is None or entry.get("profile") == profile:
            entries.append(entry)
    return entries[-limit:]


def _entries(path: Path, warn: Callable[[str], None]) -> list[dict]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        return []
    except OSError as exc:
        warn(f"{path}: not read: {_why(exc)}; the trend, SVC-12 and MON-02 see no earlier runs")
        return []
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            warn(f"{path}: not read: not a regular file; the trend, SVC-12 and MON-02 see no earlier runs")
            return []
        start = max(0, st.st_size - MAX_READ_BYTES)
        data = os.pread(fd, st.st_size - start, start)
    finally:
        os.close(fd)
    if start:
        # the first line read is most likely the end of one that began before: from the first whole line on
        cut = data.find(b"\n") + 1
        warn(f"{path}: {st.st_size} bytes; only its last {MAX_READ_BYTES // MB} MiB were read (earlier runs are not "
             "in the trend, SVC-12 or MON-02)")
        data, start = data[cut:], start + cut
    lines = data.split(b"\n")
    out, offset = [], start
    for number, line in enumerate(lines, 1):
        # a line number where the whole file was read; where only its end was, the line's byte offset
        where = f"{path}:{number}" if not start else f"{path}: the line at byte {offset}"
        offset += len(line) + 1
        if not line.strip():
            continue
        last = number == len(lines)  # no newline after it: a line being appended right now, or torn by a crash
        if len(line) > MAX_LINE_BYTES:
            problem: str | None = f"longer than {MAX_LINE_BYTES // MB} MiB"
        else:
            try:
                entry = json.loads(line)
                problem = entry_problem(entry)
            except (ValueError, RecursionError):
                problem = "not JSON"
        if problem is None:
            out.append(entry)
        elif not last:
            warn(f"{where}: skipped, {problem}")
    return out


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _text(v: Any) -> bool:
    return isinstance(v, str) and len(v) <= 1000


def _started(v: Any) -> bool:
    if not _text(v):
        return False
    try:
        datetime.fromisoformat(v)
    except ValueError:
        return False
    return True


def _services(v: Any) -> bool:
    if not isinstance(v, dict):
        return False
    for target, e in v.items():
        if not isinstance(target, str) or not isinstance(e, dict):
            return False
        if any(k in e and not isinstance(e[k], bool) for k in ("up", "fast")):
            return False
        if "p99_ms" in e and not (_number(e["p99_ms"]) and e["p99_ms"] >= 0):
            return False
    return True


# what an entry's fields must be, for the readers (the trend chart, SVC-12, MON-02) to use them as they are;
# a field may be missing (older lines have no `services`): each reader asks for what it needs
FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "run_id": (_text, "a string"),
    "profile": (_text, "a string"),
    "gate": (_text, "a string"),
    "started": (_started, "an ISO 8601 time"),
    "duration": (_number, "a number"),
    "exit_code": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255, "an exit code"),
    "compliance_rate": (lambda v: v is None or (_number(v) and 0 <= v <= 1), "null or a number from 0 to 1"),
    "totals": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(n, int)
                                                      and not isinstance(n, bool) for k, n in v.items()),
               "counts by outcome"),
    "services": (_services, 'per service target {"up": bool, "fast": bool, "p99_ms": number}'),
}
def entry_problem(entry: Any) -> str | None:
    """Why a parsed line is not a history entry, naming the field; None when it is one."""
    if not isinstance(entry, dict):
        return "not a JSON object"
    for name, (ok, what) in FIELDS.items():
        if name in entry and not ok(entry[name]):
            return f"{name} is not {what}"
    return None


def trend_of(result: RunResult, report_dir: Path) -> list[dict]:
    """The profile's recent runs plus this one: what the HTML report charts. What was wrong with history.jsonl
    (a skipped line, a symlink) is said in the run's notes and on stderr, one line each."""
    keep = ("run_id", "gate", "started", "exit_code", "compliance_rate")

    def warn(message: str) -> None:
        _stderr(message)
        if message not in result.notes:
            result.notes.append(message)

    past = [e for e in read_history(report_dir, result.profile, TREND_POINTS - 1, warn)
            if e.get("run_id") != result.run_id]
    return [{k: e.get(k) for k in keep} for e in [*past, history_entry(result)]]


def service_history(report_dir: Path, profile: str) -> list[dict]:
    """Every complete run of `profile` in history.jsonl, oldest first, as {"started": ISO, "services": {...}}
    (service_outcomes): what SVC-12's baseline and MON-02's availability are computed from."""
    return [{"started": e["started"], "services": e["services"]}
            for e in read_history(report_dir, profile, limit=1 << 62) if "started" in e and "services" in e]
