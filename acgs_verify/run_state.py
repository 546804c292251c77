"""The maintenance snapshot's database and Redis state, recorded by the run itself: after DB-01 on a database and
RD-01 on a Redis, over the very session the check used (probes/state.py), when the gate writes or compares a
snapshot. The collector gathers what the checks recorded into `result.extra["state"]`, and the gate stage reads it
from there: it opens no connection of its own.

    >>> record(item)                        # plugin.py, after a check's body ran
    >>> gather(state, report.user_properties)   # collector.py, from each report (xdist forwards them)
    {'tables': {'primary': {'public.audit_logs': 1200}}, 'redis': {'cache': {'keys': 3, ...}}, 'errors': []}
"""

from __future__ import annotations

from typing import Any

from acgs_verify.catalog import GATES
from acgs_verify.redact import one_line

STATE_PROPERTY = "acgs_state"  # the user property a check's report carries its part of the state in


def empty() -> dict:
    return {"tables": {}, "redis": {}, "errors": []}


def wanted(config) -> bool:
    """Whether this run's gate writes or compares a snapshot (the state is read only for those)."""
    gate = config.getoption("acgs_gate", None)
    return bool(gate in GATES and GATES[gate].get("snapshot"))


def record(item, target: Any) -> None:
    """After DB-01 (a database) or RD-01 (a Redis): its tables or keys, through the fixture the check used."""
    mark = item.get_closest_marker("runbook")
    check_id = mark.args[0] if mark is not None and mark.args else None
    if check_id not in ("DB-01", "RD-01") or target is None or not hasattr(target, "name"):
        return
    from acgs_verify.probes import state

    part = empty()
    profile = getattr(item.funcargs.get("pg") or item.funcargs.get("caches"), "profile", None)
    secrets = profile.secret_values() if profile is not None else []
    try:
        if check_id == "DB-01":
            part["tables"][target.name] = state.table_estimates(item.funcargs["pg"].get(target))
        else:
            part["redis"][target.name] = state.redis_keys(item.funcargs["caches"].get(target))
    except Exception as exc:  # any driver error means the same here: this source is not compared
        what = (f"database {target.name}: could not list tables" if check_id == "DB-01"
                else f"redis {target.name}: could not count keys")
        part["errors"].append(f"{what}: {one_line(exc, secrets)}")
    item.user_properties.append((STATE_PROPERTY, part))


def gather(state: dict, user_properties) -> None:
    """Merge the state parts a report carries into `state` (a report of each phase carries the same part)."""
    for key, part in user_properties:
        if key != STATE_PROPERTY or not isinstance(part, dict):
            continue
        state["tables"].update(part.get("tables") or {})
        state["redis"].update(part.get("redis") or {})
        state["errors"].extend(e for e in part.get("errors") or [] if e not in state["errors"])


def renew(state: dict, fresh: dict) -> None:
    """`fresh` (a --wait attempt's state) over `state`: a source read again drops its earlier error."""
    again = [f"database {n}:" for n in fresh["tables"]] + [f"redis {n}:" for n in fresh["redis"]]
    state["errors"] = [e for e in state["errors"] if not e.startswith(tuple(again))]
    gather(state, [(STATE_PROPERTY, fresh)])


def unrecorded(state: dict, profile) -> list[str]:
    """A line per database or Redis of the profile whose state no check recorded (DB-01/RD-01 filtered out)."""
    out = []
    for kind, check_id, sources, key in (("database", "DB-01", profile.databases, "tables"),
                                         ("redis", "RD-01", profile.redis, "redis")):
        for s in sources:
            if s.name not in state[key] and not any(e.startswith(f"{kind} {s.name}:") for e in state["errors"]):
                out.append(f"{kind} {s.name}: not compared: {check_id} did not run on it in this run")
    return out
