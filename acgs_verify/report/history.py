"""reports/history.jsonl: one line per run, appended, read back for the compliance trend.

>>> append_history(result, Path("reports"))
>>> read_history(Path("reports"), profile="production")[-1]["compliance_rate"]
0.98

Appending is one write(2) of one line to a file opened with O_APPEND, so two runs finishing at once never
interleave or overwrite each other's line; a torn last line (a crash mid-write) is skipped when read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from acgs_verify.results import RunResult

HISTORY_FILE = "history.jsonl"
TREND_POINTS = 60


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


def append_history(result: RunResult, report_dir: Path) -> Path:
    path = Path(report_dir) / HISTORY_FILE
    data = (json.dumps(history_entry(result), separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return path


def read_history(report_dir: Path, profile: str | None = None, limit: int = TREND_POINTS) -> list[dict]:
    path = Path(report_dir) / HISTORY_FILE
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    entries = []
    for line in text.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and (profile is None or e.get("profile") == profile):
            entries.append(e)
    return entries[-limit:]


def trend_of(result: RunResult, report_dir: Path) -> list[dict]:
    """The profile's recent runs plus this one: what the HTML report charts."""
    keep = ("run_id", "gate", "started", "exit_code", "compliance_rate")
    past = [e for e in read_history(report_dir, result.profile, TREND_POINTS - 1) if e.get("run_id") != result.run_id]
    return [{k: e.get(k) for k in keep} for e in [*past, history_entry(result)]]


def service_history(report_dir: Path, profile: str) -> list[dict]:
    """Every complete run of `profile` in history.jsonl, oldest first, as {"started": ISO, "services": {...}}
    (service_outcomes): what SVC-12's baseline and MON-02's availability are computed from."""
    return [{"started": e.get("started"), "services": e["services"]}
            for e in read_history(report_dir, profile, limit=1 << 62) if isinstance(e.get("services"), dict)]
