"""Resources and baselines end to end (SVC-11 memory, SVC-12 latency against past runs, SYS-06 network, DB-11 bloat,
DB-12 unused indexes, DB-13 pool and idle transactions, MON-02 availability): each against the live sandbox,
healthy and with its fault on; SVC-12 and MON-02 against a history.jsonl written by real runs.
"""

from __future__ import annotations

import json

import yaml

from acgs_verify.catalog import CATALOG, GATES
from tests.conftest import run_checks, run_cli, sandbox_admin
from tests.fault_runs import FaultBatches
from tests.test_run_sandbox import failed_ids
from tests.waiting import wait_for

NEW = ("SVC-11", "SVC-12", "SYS-06", "DB-11", "DB-12", "DB-13", "MON-02")
AUTH, DB = "auth@app-1", "primary"


def by_pair(summary) -> dict[tuple[str, str], dict]:
    return {(c["id"], c["target"]): c for c in summary["checks"]}


def test_healthy_sandbox_passes_these_checks_or_skips_saying_why(healthy_run):
    res, summary = healthy_run, healthy_run.summary
    assert res.returncode == 0, res.stdout[-3000:]
    checks = [c for c in summary["checks"] if c["id"] in NEW]
    assert {c["id"] for c in checks} == set(NEW)
    for c in checks:
        if c["id"] in ("SVC-12", "MON-02"):  # no history yet: skipped, saying how many runs there are
            assert c["outcome"] == "skipped" and "0 " in c["message"] and "history.jsonl" in c["message"], c
        else:
            assert c["outcome"] == "passed" and c["measured"], c
    sys06 = next(c for c in checks if c["id"] == "SYS-06" and c["target"] == "app-1")
    assert "TCP connect x10" in sys06["measured"]  # and ICMP, or why not
    # history.jsonl now records each service's SVC-01 outcome and SVC-06 p99, compactly
    line = json.loads((res.report_dir / "history.jsonl").read_text().splitlines()[-1])
    assert line["services"][AUTH]["up"] is True and line["services"][AUTH]["fast"] is True
    assert line["services"][AUTH]["p99_ms"] > 0


# fault -> the (ID, target) pair that must fail
FAULTS = {
    "service-memory:auth": {("SVC-11", AUTH)},
    "db-bloat": {("DB-11", DB)},
    "db-idle-in-transaction": {("DB-13", DB)},
}
# each threshold is read by its own check alone (SVC-11, DB-13): the three faults, on different checks, share one run
# with both (fault_runs.FaultBatches), which must fail exactly their three pairs
SETS = ("--set", "thresholds.service_rss_mb_max=200", "--set", "thresholds.db_idle_in_transaction_seconds_max=1")


def _idle_for(sandbox, seconds: float) -> None:
    """Wait (with a deadline) until the holder's transaction has been idle longer than `seconds`."""
    with sandbox_admin(sandbox) as conn:
        wait_for(f"the holder idle in transaction for over {seconds:g} s", lambda: conn.execute(
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE state = 'idle in transaction'"
            " AND now() - state_change > make_interval(secs => %s)", (seconds,)).fetchone()[0], 20, 0.1)


def _ready(sandbox, fault: str) -> None:
    if fault == "db-idle-in-transaction":
        _idle_for(sandbox, 1.2)


BATCHES = FaultBatches([tuple(FAULTS)], FAULTS, expected=lambda fault, sandbox: FAULTS[fault],
                       args=lambda fault: SETS, ready=_ready)


def test_each_fault_fails_exactly_its_check(healthy_sandbox, tmp_path):
    for fault, expected in FAULTS.items():
        batch = BATCHES.run(healthy_sandbox, fault, lambda *args: run_checks(healthy_sandbox, tmp_path / "r", *args))
        batch.assert_fails_exactly(fault)
        # nothing set aside as the machine's load either (FaultBatches would): exactly these pairs, as before
        assert batch.failed == batch.union, batch.res.stdout[-3000:]
        assert batch.res.returncode == 1  # P2/P3 only
        (cid, target), = expected
        message = batch.check(cid, fault)["message"]
        assert "Next:" in message and target in message, message
    assert "RSS" in batch.check("SVC-11", "service-memory:auth")["message"]


def test_unused_index_warns_naming_the_index(healthy_sandbox, tmp_path):
    healthy_sandbox.break_fault("db-unused-index")
    res = run_checks(healthy_sandbox, tmp_path / "reports", "--", "-k", "DB-12")
    summary = res.summary
    c = by_pair(summary)[("DB-12", DB)]
    assert res.returncode == 0 and c["outcome"] == "passed", res.stdout  # P3 "warns only"
    assert "sandbox_scans_note_idx" in c["warning"] and "never scanned" in c["warning"], c
    assert "sequential" in c["warning"]


def test_pool_over_its_size_fails_db13(healthy_sandbox, tmp_path):
    profile = yaml.safe_load(healthy_sandbox.profile_path.read_text())
    profile["databases"][0]["pools"] = {"acgs-sandbox:db-saturation": 10}
    path = tmp_path / "pools.yaml"
    path.write_text(yaml.safe_dump(profile))
    healthy_sandbox.break_fault("db-saturation")
    res = run_checks(path, tmp_path / "reports", "--", "-k", "DB-03 or DB-13")
    summary = res.summary
    assert failed_ids(summary) == {("DB-03", DB), ("DB-13", DB)}, res.stdout[-3000:]
    assert "acgs-sandbox:db-saturation holds 24 connections, pool size 10" in by_pair(summary)[("DB-13", DB)][
        "message"]


def test_network_latency_fails_over_its_threshold(healthy_sandbox, tmp_path):
    """No faithful loopback fault delays a TCP handshake (the kernel completes it; tc netem would touch every
    sandbox on the machine), so the failing side is shown with a threshold no real round trip meets."""
    res = run_checks(healthy_sandbox, tmp_path / "reports", "--set", "thresholds.network_p99_fail_ms=0.001", "--",
                     "-k", "SYS-06")
    summary = res.summary
    hosts = {c["target"] for c in summary["checks"]}
    assert "app-1" in hosts and failed_ids(summary) == {("SYS-06", h) for h in hosts}, res.stdout
    assert res.returncode == 1
    assert "expected p99 < 0.001 ms" in by_pair(summary)[("SYS-06", "app-1")]["message"]


def test_baseline_and_availability_from_real_runs(healthy_sandbox, tmp_path):
    reports = tmp_path / "reports"
    # a baseline of 3 runs and availability from 3 runs on (defaults 5 and 20): as many runs as show it
    few = ("--set", "thresholds.baseline_runs=3", "--set", "thresholds.availability_min_runs=3")
    for i in range(3):
        res = run_checks(healthy_sandbox, reports, *few, "--", "-k", "SVC-01 or SVC-06 or SVC-12 or MON-02")
        summary = res.summary
        c = by_pair(summary)[("SVC-12", AUTH)]
        assert c["outcome"] == "skipped" and f"{i} earlier run{'' if i == 1 else 's'} " in c["message"], c
        assert by_pair(summary)[("MON-02", AUTH)]["outcome"] == "skipped"
    # one outage among four runs: auth was available in 3 of 4
    healthy_sandbox.break_fault("service-down:auth")
    run_checks(healthy_sandbox, reports, "--", "-k", "SVC-01 or SVC-06")
    healthy_sandbox.heal_fault("service-down:auth")
    healthy_sandbox.break_fault("slow:auth")
    # 5 samples of the slow service (150 ms each), not 20: its p99 is as far above the baseline
    res = run_checks(healthy_sandbox, reports, *few, "--set", "thresholds.latency_samples=5", "--", "-k",
                     "SVC-06 or SVC-12 or MON-02")
    summary = res.summary
    checks = by_pair(summary)
    svc12, mon02 = checks[("SVC-12", AUTH)], checks[("MON-02", AUTH)]
    assert svc12["outcome"] == "failed", svc12
    assert "x the baseline" in svc12["message"] and "median p99 of the last 3 passing runs" in svc12["message"]
    assert svc12["value"]["factor"] >= 5 and svc12["value"]["baseline_ms"] < 100
    assert mon02["outcome"] == "failed" and "75.00 % available" in mon02["message"] and "3 of 4" in mon02["message"]
    assert ">= 99.9 %" in mon02["message"]
    for c in summary["checks"]:  # every other service was up in all four runs
        if c["id"] == "MON-02" and c["target"] != AUTH:
            assert c["outcome"] == "passed" and "100.00 %" in c["measured"], c
        if c["id"] == "SVC-12":
            assert c["outcome"] != "skipped", c  # the baseline exists for every service now
    assert res.returncode == 2  # SVC-06 and SVC-12 are P1


def test_catalog_lists_these_checks_and_the_gates_run_them():
    res = run_cli("catalog", "--json")
    rows = {r["id"]: r for r in json.loads(res.stdout)}
    for cid in NEW:
        assert rows[cid]["covered"] and rows[cid]["tests"] >= 1, rows[cid]
        assert CATALOG[cid].evidence
    for gate in ("pre-maintenance", "post-maintenance", "compliance"):
        assert GATES[gate]["ids"] is None  # every check, the new ones included
    assert not set(NEW) & set(GATES["smoke"]["ids"])  # the catalog's smoke gate is "is it up" only


def test_no_tables_and_no_view_of_other_sessions_are_not_passes(healthy_sandbox):
    """DB-11/12 on a database without a user table, DB-13 for a role that sees only its own sessions: ProbeError."""
    import pytest

    from acgs_verify.check import ProbeError
    from acgs_verify.probes import postgres
    from acgs_verify.profile import Thresholds
    from acgs_verify.sandbox.components.postgres import primary_port

    with sandbox_admin(healthy_sandbox, "postgres") as admin:
        admin.execute("CREATE ROLE h8_plain LOGIN PASSWORD 'h8-plain-pw'")
        admin.execute("CREATE DATABASE h8_empty OWNER h8_plain")
        try:
            dsn = f"postgresql://h8_plain@127.0.0.1:{primary_port(healthy_sandbox.port_offset)}/h8_empty"
            pg = postgres.connect(dsn, "h8-plain-pw", Thresholds())
            try:
                with pytest.raises(ProbeError, match="no user table"):
                    postgres.table_sizes(pg)
                with pytest.raises(ProbeError, match="sees only its own sessions"):
                    postgres.connections_by_application(pg)
            finally:
                pg.conn.close()
        finally:
            admin.execute("DROP DATABASE IF EXISTS h8_empty")
            admin.execute("DROP ROLE IF EXISTS h8_plain")
