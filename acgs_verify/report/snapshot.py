"""The state snapshot a pre-maintenance run writes, built from its RunResult alone.

>>> snap = snapshot_of(result)
>>> snap["checks"]["SVC-01[auth@app-1]"]["outcome"], snap["services"]["auth@app-1"]
('passed', {'answered': True, 'version': '4.0.0'})

It holds every check's outcome and measured values, each service's version (from its health body), and
whatever database and Redis facts the run collected (`result.extra["state"]`: tables with row estimates,
Redis key counts). post-maintenance and rollback compare a new run's snapshot with it (report/diff.py).
"""

from __future__ import annotations

import json
from pathlib import Path

from acgs_verify.results import FAILED_OUTCOMES, INTERRUPTED, RunResult

SNAPSHOT_FILE = "snapshot.json"
SNAPSHOT_FORMAT = 1
HEALTH_CHECK, HEALTH_BODY_CHECK, HEALTH_BODY_EVIDENCE = "SVC-01", "SVC-02", "health body"


def snapshot_of(result: RunResult) -> dict:
    state = result.extra.get("state") or {}
    return {
        "format": SNAPSHOT_FORMAT,
        "run_id": result.run_id,
        "profile": result.profile,
        "gate": result.gate,
        "started": result.started,
        "constitutional_hash": result.constitutional_hash,
        "checks": {
            c.name: {"id": c.id, "target": c.target, "severity": c.severity, "outcome": c.outcome,
                     "waived": bool(c.waived), "measured": c.measured, "expected": c.expected, "value": c.value,
                     "message": c.finding()[0] if c.outcome in FAILED_OUTCOMES else ""}
            for c in result.checks
        },
        "services": service_versions(result),
        "tables": state.get("tables", {}),
        "redis": state.get("redis", {}),
        "state_errors": state.get("errors", []),
    }


def service_versions(result: RunResult) -> dict[str, dict]:
    """Each service target the run asked for its health: did it answer, and which version it said it runs."""
    services: dict[str, dict] = {}
    for c in result.checks:
        if c.id == HEALTH_CHECK:
            services.setdefault(c.target, {"answered": False, "version": None})
            # interrupted: whether it answered is not known (None), which diff does not take for vanished
            services[c.target]["answered"] = None if c.outcome == INTERRUPTED else c.outcome == "passed"
        if c.id == HEALTH_BODY_CHECK and HEALTH_BODY_EVIDENCE in c.evidence:
            try:
                body = json.loads(c.evidence[HEALTH_BODY_EVIDENCE])
            except ValueError:
                continue
            version = body.get("version") if isinstance(body, dict) else None
            services.setdefault(c.target, {"answered": True, "version": None})
            services[c.target]["version"] = str(version) if version is not None else None
    return dict(sorted(services.items()))


def write_snapshot(result: RunResult, path: Path) -> None:
    from acgs_verify.report import atomic_write

    atomic_write(path, json.dumps(snapshot_of(result), indent=2, default=str) + "\n")


def read_snapshot(path: Path) -> dict:
    """A snapshot.json, or the snapshot of a run directory / summary.json (what `acgs-verify diff` compares)."""
    path = Path(path)
    if path.is_dir():
        path = path / SNAPSHOT_FILE if (path / SNAPSHOT_FILE).is_file() else path / "summary.json"
    data = json.loads(path.read_text())
    if "checks" in data and isinstance(data["checks"], list):  # a summary.json
        return snapshot_of(RunResult.from_dict(data))
    return data
