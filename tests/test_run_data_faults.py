"""Whole runs of `acgs-verify run` against the sandbox's real PostgreSQL and Redis, with each data fault on.

Each fault is a real state of a real server (a session in pg_sleep, a held lock, a paused replica, a
changed audit row, a sleeping Redis ...); exactly its checks fail, on the right target, and nothing else.
A full run changes nothing on the servers, and no password appears in anything a run prints or writes.
"""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest

from tests.conftest import run_checks, run_cli, sandbox_admin
from tests.fault_runs import FaultBatches, switch_on_and_off
from tests.test_run_sandbox import failed_ids
from tests.waiting import wait_for

DB, HOST_DB, ENV, CACHE = "primary", "primary@app-1", "sandbox", "cache"
DATA_CHECKS = ("--", "-k", "test_database.py or test_cache.py or CC-04 or CC-05 or CC-06")

# fault -> (the (ID, target) pairs that must fail, --set arguments, the age in seconds the fault reaches first)
FAULTS: dict[str, tuple[set, list[str], float]] = {
    "db-down": ({(f"DB-{i:02d}", DB) for i in range(1, 14) if i != 2} | {("DB-02", HOST_DB), ("CC-04", ENV),
                                                                       ("CC-05", DB)}, [], 0),
    # stopped, while another PostgreSQL with the primary's port on its command line runs on the host
    "db-down-decoy": ({(f"DB-{i:02d}", DB) for i in range(1, 14) if i != 2} | {("DB-02", HOST_DB), ("CC-04", ENV),
                                                                             ("CC-05", DB)}, [], 0),
    "db-long-query": ({("DB-04", DB)}, ["thresholds.db_long_query_seconds=1"], 1.2),
    "db-lock": ({("DB-05", DB)}, [], 0),
    "db-saturation": ({("DB-03", DB)}, [], 0),
    "db-slow-statements": ({("DB-06", DB)}, [], 0),
    "db-stale-stats": ({("DB-09", DB)}, [], 0),
    "db-replica-lag": ({("DB-07", DB)}, ["thresholds.db_replication_lag_seconds_max=1"], 1.2),
    "audit-old-rows": ({("DB-10", DB)}, [], 0),
    "audit-chain-break": ({("CC-05", DB)}, [], 0),
    "audit-wrong-hash": ({("CC-05", DB)}, [], 0),
    "low-compliance": ({("CC-04", ENV)}, [], 0),
    # the layouts of a real deployment: per-tenant chains are intact, a break in one of them is found, and rows
    # that row-level security hides from the checker are no evidence for any check that reads them
    "field-audit": (set(), [], 0),
    "audit-tenant-break": ({("CC-05", DB)}, [], 0),
    "audit-rls-hidden": ({("CC-05", DB), ("CC-04", ENV), ("DB-10", DB)}, [], 0),
    "redis-down": ({("RD-01", CACHE), ("RD-02", CACHE), ("RD-03", CACHE), ("CC-06", CACHE)}, [], 0),
    "redis-wrong-hash": ({("CC-06", CACHE)}, [], 0),
    "redis-slow": ({("RD-02", CACHE)}, [], 0),
    "redis-low-hit-rate": ({("RD-03", CACHE)}, [], 0),
}

# what each failure message must show beyond the IDs: the evidence an SRE acts on
EVIDENCE = {
    "db-long-query": ("DB-04", ("pid ", "pg_sleep")),
    "db-lock": ("DB-05", ("waiting", "LOCK TABLE policies", "SELECT count(*) FROM policies")),
    "db-slow-statements": ("DB-06", ("ms mean over 3 calls", "pg_sleep")),
    "audit-chain-break": ("CC-05", ("first broken link: row id 1501",)),
    "db-replica-lag": ("DB-07", ("replay paused",)),
    "audit-tenant-break": ("CC-05", ("5 chains by tenant_id", "chain tenant-2", "which names no row")),
    "audit-rls-hidden": ("CC-05", ("role acgs sees 0 of audit_logs' 3000 rows (row-level security",
                                   "cannot verify the chain")),
}


def test_healthy_sandbox_passes_every_data_check(healthy_sandbox, tmp_path):
    res = run_checks(healthy_sandbox, tmp_path / "reports", *DATA_CHECKS)
    summary = res.summary
    assert res.returncode == 0, res.stdout[-3000:]
    outcomes = {(c["id"], c["target"]): c["outcome"] for c in summary["checks"]}
    data_ids = {f"DB-{i:02d}" for i in range(1, 11)} | {"RD-01", "RD-02", "RD-03", "CC-04", "CC-05", "CC-06"}
    ran = {cid for cid, _ in outcomes}
    assert data_ids <= ran
    # none of them skipped: pg_stat_statements and the replica exist, so DB-06 and DB-07 ran for real
    assert all(o == "passed" for (cid, _), o in outcomes.items() if cid in data_ids), outcomes


def _ready(sandbox, fault: str) -> None:
    age = FAULTS[fault][2]
    if fault == "db-long-query":  # the fact DB-04 judges: the session has been in its query for over 1 s
        wait_for(f"a pg_sleep running for more than {age:g} s", lambda: _long_query_running(sandbox, age), 30)
    elif fault == "db-replica-lag":  # the fact DB-07 judges: replay behind what arrived, for over the threshold
        wait_for(f"the replica's replay behind for more than {age:g} s", lambda: _replay_behind(sandbox, age), 30)


# faults on different checks and different tables or servers share a run, each batch with at most one fault of
# the audit chain (CC-05); the per-tenant layout only with faults that leave CC-04, CC-05 and DB-10 alone (it must
# pass them); a stopped server: a run of its own. The two faults that need a wait and a threshold share one run
# with both thresholds: each is read by its own check alone (DB-04, DB-07), and neither fault holds what the
# other's check judges (no other statement runs long, no replica is paused by a sleeping session).
BATCH_LIST = [
    ("db-down",), ("db-down-decoy",), ("redis-down",), ("db-long-query", "db-replica-lag"),
    ("audit-chain-break", "low-compliance", "db-lock", "redis-wrong-hash"),
    ("audit-wrong-hash", "audit-old-rows", "db-saturation", "redis-slow"),
    ("audit-tenant-break", "db-slow-statements"),
    ("audit-rls-hidden", "redis-low-hit-rate"),
    ("field-audit", "db-stale-stats"),
]


def _args(fault: str) -> tuple[str, ...]:
    """The --set arguments of every fault of `fault`'s batch: the batch's one run needs them all."""
    batch = next(b for b in BATCH_LIST if fault in b)
    return tuple(a for f in batch for o in FAULTS[f][1] for a in ("--set", o))


BATCHES = FaultBatches(BATCH_LIST, FAULTS, expected=lambda fault, sandbox: FAULTS[fault][0], args=_args,
                       ready=_ready)


@pytest.mark.parametrize("fault", FAULTS)
def test_each_data_fault_fails_exactly_its_checks(healthy_sandbox, tmp_path, fault):
    expected = FAULTS[fault][0]
    batch = BATCHES.run(healthy_sandbox, fault, lambda *args: run_checks(healthy_sandbox, tmp_path / "reports", *args))
    batch.assert_fails_exactly(fault)
    summary = batch.summary
    if not expected:  # a layout that is right: it fails nothing, on evidence rather than by skipping
        assert {c["outcome"] for c in summary["checks"] if c["id"] in ("CC-04", "CC-05", "DB-10")} == {"passed"}
        return
    # each failure says its next step (the terminal may fold failures of one cause into one line; the summary
    # keeps each one's message)
    messages = {(c["id"], c["target"]): c["message"] for c in summary["checks"]}
    for pair in expected:
        assert "Next:" in messages[pair], messages[pair]
    if fault in EVIDENCE:
        check_id, words = EVIDENCE[fault]
        message = batch.check(check_id, fault)["message"]
        for word in words:
            assert word in message, message


def _long_query_running(sandbox, seconds: float) -> bool:
    with sandbox_admin(sandbox) as admin:
        return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE"
                             " '%%pg_sleep%%' AND now() - query_start > make_interval(secs => %s)"
                             " AND pid <> pg_backend_pid()", [seconds]).fetchone()[0] > 0


def _replay_behind(sandbox, seconds: float) -> bool:
    """Asked of the replica, as DB-07's probe asks it: WAL received and not replayed, the last replayed
    transaction older than `seconds`."""
    with sandbox_admin(sandbox, "postgres", replica=True) as replica:
        return replica.execute("SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) > 0"
                               " AND now() - pg_last_xact_replay_timestamp() > make_interval(secs => %s)",
                               [seconds]).fetchone()[0]


def _sessions_named(sandbox, application_name: str) -> int:
    with sandbox_admin(sandbox) as admin:
        return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                             [application_name]).fetchone()[0]


# ------------------------------------------------------------------------------------------ read-only


def _database_state(sandbox) -> dict:
    with sandbox_admin(sandbox) as admin:
        admin.execute("SELECT pg_stat_clear_snapshot()")
        counters = {r[0]: r[1:] for r in admin.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del, n_tup_hot_upd FROM pg_stat_user_tables").fetchall()}
        content = {t: admin.execute(f"SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM {t} t").fetchone()[0]
                   for t in ("audit_logs", "policies")}
        tables = admin.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()[0]
    return {"counters": counters, "content": content, "tables": tables}


def _redis_state(sandbox) -> dict:
    import redis

    from acgs_verify.sandbox.components.redis import redis_port

    password = sandbox.secret("redis")
    client = redis.Redis(host="127.0.0.1", port=redis_port(sandbox.port_offset), password=password,
                         decode_responses=True)
    try:
        keys = sorted(client.scan_iter(count=1000))
        values = client.mget(keys)
        return {k: hashlib.sha256((v or "").encode()).hexdigest() for k, v in zip(keys, values, strict=True)}
    finally:
        client.close()


@pytest.fixture(scope="module")
def healed_run(sandbox, tmp_path_factory) -> SimpleNamespace:
    """One whole run, after faults were switched on and off again, with the servers' state taken just before and
    after it. Two tests read it: the healed sandbox passes every check, and a run changes nothing on the servers."""
    switch_on_and_off(sandbox, ("db-down", "db-stale-stats", "low-compliance", "redis-down", "redis-low-hit-rate"))
    # the heals' own writes reach pg_stat_user_tables when their sessions end: before the state is taken
    wait_for("the sandbox's sessions ended", lambda: not _sessions_named(sandbox, "acgs-sandbox"), 10)
    before_db, before_redis = _database_state(sandbox), _redis_state(sandbox)
    res = run_checks(sandbox, tmp_path_factory.mktemp("healed-run") / "reports")
    # a backend's counters reach pg_stat_user_tables when it ends, which may be just after the run exits
    wait_for("the run's sessions ended", lambda: not _sessions_named(sandbox, "acgs-verify"), 10)
    return SimpleNamespace(res=res, before_db=before_db, before_redis=before_redis,
                           after_db=_database_state(sandbox), after_redis=_redis_state(sandbox))


def test_heal_restores_each_fault(healed_run):
    """After every fault was switched on and off again (none stayed on: switch_on_and_off), the sandbox is what it
    was: every check passes."""
    res = healed_run.res
    assert res.returncode == 0 and failed_ids(res.summary) == set(), res.stdout[-3000:]


def test_a_full_run_leaves_the_servers_unchanged(healed_run):
    assert healed_run.res.returncode == 0, healed_run.res.stdout[-3000:]
    assert healed_run.after_db == healed_run.before_db
    assert healed_run.after_redis == healed_run.before_redis
    before_db, before_redis = healed_run.before_db, healed_run.before_redis
    assert len(before_redis) > 300 and set(before_db["counters"]) == {"audit_logs", "policies"}


# ------------------------------------------------------------------------------------------- secrets


def test_passwords_appear_nowhere_a_run_prints_or_writes(healthy_sandbox, tmp_path):
    real = [healthy_sandbox.secret(name) for name in ("db", "redis")]
    wrong = "Wr0ng-but-secret-pass"
    (tmp_path / "wrong.password").write_text(wrong + "\n")
    report_dir = tmp_path / "reports"
    res = run_cli("run", "--profile", str(healthy_sandbox.profile_path), "--report-dir", str(report_dir),
                  "--set", f"databases.primary.password_file={tmp_path / 'wrong.password'}",
                  "--set", f"redis.cache.password_file={tmp_path / 'wrong.password'}")
    assert res.returncode == 2
    db01 = next(x for x in res.stdout.splitlines() if x.startswith("FAIL P0 DB-01[primary]"))
    assert "password authentication failed" in db01
    rd01 = next(x for x in res.stdout.splitlines() if x.startswith("FAIL P0 RD-01[cache]"))
    assert "cannot reach" in rd01
    written = "".join(p.read_text(errors="replace") for p in report_dir.rglob("*") if p.is_file())
    for secret in [wrong, *real]:
        assert secret not in res.stdout and secret not in res.stderr and secret not in written
