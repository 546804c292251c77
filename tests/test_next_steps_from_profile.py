"""A failure's next step names what the profile knows: the service's unit, log and port, never `<unit>`.

The catalog's next steps are templates ({restart}, {tail}, {unit}); check.py fills them from the target where the
message is built, and the reports take the same words. Where the host runs no systemd, or the profile names no
unit, the step says what to restart instead.
"""

from __future__ import annotations

import json
import re

import pytest

from acgs_verify.catalog import CATALOG
from tests.conftest import run_cli

SERVICE_CHECKS = ("SVC-01", "SVC-03", "SVC-04")


def _run(sandbox, tmp_path, *sets: str) -> dict[tuple[str, str], dict]:
    reports = tmp_path / "reports"
    res = run_cli("run", "--profile", str(sandbox.profile_path), "--report-dir", str(reports),
                  *[a for s in sets for a in ("--set", s)], "--", "-k", " or ".join(SERVICE_CHECKS))
    assert res.returncode == 2, res.stdout[-3000:] + res.stderr
    summary = json.loads((reports / "latest" / "summary.json").read_text())
    return {(c["id"], c["target"]): c for c in summary["checks"]}, (reports / "latest" / "report.md").read_text()


def _auth(sandbox) -> dict:
    import yaml

    profile = yaml.safe_load(sandbox.profile_path.read_text())
    return next(s for s in profile["services"] if s["name"] == "auth")


@pytest.fixture
def auth_down(healthy_sandbox):
    healthy_sandbox.break_fault("service-down:auth")
    return healthy_sandbox


def _failures(checks: dict) -> list[dict]:
    found = [checks[(cid, "auth@app-1")] for cid in SERVICE_CHECKS]
    assert all(c["outcome"] == "failed" for c in found), found
    return found


def test_a_stopped_service_on_a_systemd_host_names_its_unit_and_log(auth_down, tmp_path):
    auth = _auth(auth_down)
    checks, markdown = _run(auth_down, tmp_path, "hosts.app-1.systemd=true")
    for c in _failures(checks):
        for text in (c["message"], c["next_step"]):
            assert f"`sudo systemctl restart {auth['unit']}`" in text, text
            assert f"`tail -f {auth['log']}`" in text, text
            assert not re.search(r"[<>]", text.split(". Next: ")[-1]), text
    assert "<unit>" not in markdown and "<log>" not in markdown


def test_a_stopped_service_without_systemd_says_what_to_restart_instead(auth_down, tmp_path):
    """The sandbox's host runs no systemd (its profile names the units all the same)."""
    auth = _auth(auth_down)
    checks, markdown = _run(auth_down, tmp_path)
    for c in _failures(checks):
        step = c["message"].split(". Next: ")[-1]
        assert "systemctl" not in step and "runs no systemd" in step, step
        assert f"port {auth['port']}" in step and f"`tail -f {auth['log']}`" in step, step
        assert not re.search(r"[<>]", step), step
        assert c["next_step"] == step
    assert "<unit>" not in markdown and "<log>" not in markdown


def test_the_catalog_page_keeps_the_general_words():
    assert CATALOG["SVC-03"].next_step == "Service Outage: `sudo systemctl restart <unit>`, then `tail -f <log>`"
    assert all("{" not in e.next_step for e in CATALOG.values())


def test_a_message_too_long_to_keep_is_cut_in_what_was_found_never_in_its_next_step():
    from acgs_verify.collector import MESSAGE_MAX
    from acgs_verify.results import CheckResult, shortened

    log = "/srv/" + "deep/" * 40 + "auth_service.log"  # a real tree can be this deep; the step names it whole
    step = f"Service Outage: `sudo systemctl restart acgs-auth`, then `tail -f {log}`"
    message = shortened("SVC-03 app-1/auth: " + "no answer on 127.0.0.1:8016; " * 40 + f"checked. Next: {step}",
                        MESSAGE_MAX)
    assert len(message) == MESSAGE_MAX and message.endswith(f"... Next: {step}"), message
    found, next_step = CheckResult(nodeid="", id="SVC-03", section="", severity="P0", title="", target="app-1/auth",
                                   outcome="failed", message=message).finding()
    assert next_step == step and found.startswith("no answer on 127.0.0.1:8016;"), found
    # a step that leaves the finding no room is cut like any other text
    crowded = "x" * 100 + ". Next: " + "y" * MESSAGE_MAX
    assert shortened(crowded, MESSAGE_MAX) == crowded[: MESSAGE_MAX - 3] + "..."


# The runbook's own deployment, as literals: a next step that names one of them names a system the profile may not
# describe (CC-04 said `curl -f http://localhost:8003/health and :8005/health` whatever the profile held)
RUNBOOK_LITERALS = (r"localhost", r":80\d\d\b", r"\b80\d\d\b", r"/var/log/acgs", r"acgs-[\w-]+-service", r"\b5432\b",
                    r"\b6379\b", r"/var/backups/acgs", r"/home/acgs", r"/etc/ssl/acgs", r"\bpostgresql\b",
                    r"\buvicorn\b", r"(?<![\w/>])scripts/", r"\breports/", r"\bredis-server\b")

ELSEWHERE = {
    "name": "elsewhere", "constitutional_hash": "cdd01ef066bc6cf2",
    "hosts": [{"name": "web-7", "address": "127.0.0.71", "backend": "ssh", "roles": ["app"], "systemd": True},
              {"name": "web-8", "address": "127.0.0.72", "backend": "ssh", "roles": ["app"], "systemd": False},
              {"name": "store-2", "address": "127.0.0.73", "backend": "ssh", "roles": ["db", "cache"]}],
    "services": [{"name": "gate", "port": 18116, "unit": "gatekeeper.service", "log": "/srv/logs/gate.log",
                  "ready_path": "/ready", "live_path": "/live", "metrics_path": "/prom"},
                 {"name": "judge", "port": 18103, "log": "/srv/logs/judge.log"}],
    "databases": [{"name": "main", "dsn": "postgresql://checker@127.0.0.73:15999/ledger", "unit": "pg-ledger"},
                  {"name": "side", "dsn": "postgresql://checker@127.0.0.73:15998/side", "unit": None}],
    "redis": [{"name": "kv", "url": "redis://127.0.0.73:16999/2"}],
    "paths": {"logs": "/srv/logs", "alerts_log": "/srv/logs/alarms.log", "app_root": "/opt/gov",
              "backups": "/data/dumps", "policies": None},
    "certificates": ["/opt/gov/tls/leaf.pem"], "tls_endpoints": ["https://127.0.0.74:18443"],
    "security": {"secret_files": ["/opt/gov/secret.env"], "keys": [{"name": "app", "path": "/opt/gov/app.key"}]},
}


def _target_kinds() -> dict[str, set[str]]:
    """Each catalog ID -> the target kinds its check function is parametrized over (its fixture arguments)."""
    import importlib
    import inspect

    from acgs_verify.targets import TARGET_KINDS
    from tests.conftest import REPO

    kinds: dict[str, set[str]] = {}
    for path in sorted((REPO / "checks").glob("test_*.py")):
        module = importlib.import_module(f"checks.{path.stem}")
        for _, fn in inspect.getmembers(module, inspect.isfunction):
            for mark in getattr(fn, "pytestmark", []):
                if mark.name == "runbook":
                    kinds[mark.args[0]] = set(inspect.signature(fn).parameters) & set(TARGET_KINDS)
    return kinds


def test_every_next_step_names_only_what_the_profile_holds():
    from acgs_verify.check import next_step_for
    from acgs_verify.profile import Profile
    from acgs_verify.targets import TARGET_KINDS

    profile = Profile.model_validate(ELSEWHERE)
    kinds = _target_kinds()
    assert set(kinds) == set(CATALOG)
    rendered = []
    for cid, e in CATALOG.items():
        rendered.append((cid, "catalog page", e.next_step))
        for kind in kinds[cid] or {"environment"}:
            for target in TARGET_KINDS[kind](profile):
                for systemd in (True, False, None):  # None last: the steps looked at below
                    rendered.append((cid, target.id, next_step_for(e, target, systemd, profile)))
    wrong = [(cid, tid, lit, step) for cid, tid, step in rendered for lit in RUNBOOK_LITERALS if re.search(lit, step)]
    assert not wrong, "\n".join(f"{cid}[{tid}] names {lit!r}: {step}" for cid, tid, lit, step in wrong)
    steps = {(cid, tid): step for cid, tid, step in rendered}
    # and the steps name this profile's own facts instead
    assert "`curl -f http://127.0.0.71:18116/health`" in steps["CC-04", "elsewhere"], steps["CC-04", "elsewhere"]
    assert "`cp -r /srv/logs ...`" in steps["CC-05", "main"]
    assert "`pg_isready -h 127.0.0.73 -p 15999`" in steps["DB-01", "main"]
    assert "`sudo systemctl status pg-ledger`" in steps["DB-01", "main"]
    assert "pg-ledger" not in steps["DB-01", "side"] and "names no unit" in steps["DB-01", "side"]
    assert "`redis-cli -h 127.0.0.73 -p 16999 ping`" in steps["RD-01", "kv"]
    assert "/opt/gov/scripts/backup_full_system.sh" in steps["BK-01", "backups@store-2"]
    assert "`ss -tlnp 'sport = :18116'`" in steps["SVC-01", "gate@web-7"]
    assert "{" not in "".join(steps.values())
