"""The PostgreSQL and Redis probes against the sandbox's real servers, and against servers having bad days.

Uses the session sandbox (tests/conftest.py). Bad days are real too: a port nobody listens on, a socket
that accepts and never answers, a wrong password, a database that does not exist, a host name the
resolver refuses without sending a query.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from pathlib import Path

import psycopg
import pytest

from acgs_verify.check import ProbeError
from acgs_verify.probes import postgres
from acgs_verify.probes.postgres import PgPool
from acgs_verify.probes.redis import READ_COMMANDS, RedisPool, RedisProbe, hit_rate
from acgs_verify.profile import load_profile
from tests.conftest import sandbox_admin
from tests.hostile import accepted
from tests.servers import silent_listener
from tests.waiting import wait_for


def _profile(sandbox, *overrides: str):
    return load_profile(str(sandbox.profile_path), overrides)


@pytest.fixture
def pool(sandbox):
    p = PgPool(_profile(sandbox))
    yield p
    p.close()


@pytest.fixture
def db(sandbox, pool):
    return pool.get(pool.profile.databases[0])


@pytest.fixture
def rcache(sandbox):
    p = RedisPool(_profile(sandbox))
    yield p.get(p.profile.redis[0])
    p.close()


@pytest.fixture
def black_hole():
    """A loopback port that completes the TCP handshake (the kernel's backlog) and never says a word."""
    with silent_listener() as s:
        yield s.getsockname()[1]


# --------------------------------------------------------------------------------- read-only sessions


def test_sessions_are_read_only_with_timeouts_and_named(db, sandbox):
    settings = {r["name"]: r["setting"] for r in db.rows(
        "SELECT name, setting FROM pg_settings WHERE name IN ('default_transaction_read_only', 'statement_timeout',"
        " 'lock_timeout', 'application_name', 'idle_in_transaction_session_timeout')")}
    assert settings["default_transaction_read_only"] == "on"
    assert settings["application_name"] == "acgs-verify"
    assert int(settings["statement_timeout"]) == 15000 and 0 < int(settings["lock_timeout"]) <= 2000
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        db.conn.execute("UPDATE policies SET version = version")
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        db.conn.execute("CREATE TABLE scratch (a int)")


def test_statement_timeout_ends_a_query_as_a_probe_error(sandbox):
    pool = PgPool(_profile(sandbox, "thresholds.db_statement_timeout_seconds=0.3"))
    try:
        db = pool.get(pool.profile.databases[0])
        with pytest.raises(ProbeError, match="statement timeout"):
            db.value("SELECT pg_sleep(60)")  # ended by the server at 0.3 s, or this test would take a minute
    finally:
        pool.close()


def test_one_session_per_database_reused(pool):
    database = pool.profile.databases[0]
    first = pool.get(database)
    pid = first.value("SELECT pg_backend_pid()")
    assert pool.get(database) is first and first.value("SELECT pg_backend_pid()") == pid
    pool.close()
    assert first.conn.closed


def _until_cancelled(conn, query: str) -> None:
    """`query` on `conn` in a thread, until the test cancels it."""
    with contextlib.suppress(psycopg.errors.QueryCanceled):
        conn.execute(query)


def test_own_sessions_never_count_as_long_running_or_blocked(sandbox, db, pool):
    """Another acgs-verify session in pg_sleep is left out; the same query under another name is not."""
    password = pool.profile.secret("databases.primary")
    ours = postgres.connect(pool.profile.databases[0].dsn, password, pool.profile.thresholds)
    theirs = psycopg.connect(pool.profile.databases[0].dsn, password=password, autocommit=True,
                             application_name="someone-else")
    threads = [threading.Thread(target=_until_cancelled, args=(c, "SELECT pg_sleep(60)")) for c in (ours.conn, theirs)]
    try:
        for t in threads:
            t.start()
        wait_for("both sessions in pg_sleep for over 0.3 s", lambda: db.value(
            "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'"
            " AND now() - query_start > interval '0.3 s'") == 2, 30)
        found = postgres.long_running(db, 0.3)
        assert [r["query"] for r in found] == ["SELECT pg_sleep(60)"]
        assert found[0]["pid"] != db.value("SELECT pg_backend_pid()") and found[0]["seconds"] >= 0.3
        assert postgres.blocked_locks(db) == []
    finally:
        for c in (ours.conn, theirs):
            c.cancel()
        for t in threads:
            t.join()
        ours.conn.close()
        theirs.close()
        with sandbox_admin(sandbox) as admin:  # the sleeps were real statements: leave no slow one behind
            admin.execute("SELECT pg_stat_statements_reset()")


# ------------------------------------------------------------------------------------ the measures


def test_probes_measure_the_healthy_sandbox(db, pool, sandbox):
    assert postgres.select_one(db) < 5000
    used, most, source = postgres.connection_usage(db)
    assert most == 30 and 1 <= used < 10 and source == "client backends in pg_stat_activity"
    assert postgres.statements_unavailable(db) is None
    assert postgres.slow_statements(db, 100) == []
    standbys = postgres.replication(db)
    assert [s["state"] for s in standbys] == ["streaming"]
    replica = pool.replica(pool.profile.databases[0], pool.profile.databases[0].replicas[0])
    lag = postgres.replica_lag(replica)
    assert lag["lag_seconds"] == 0 and lag["paused"] is False
    hit, read = postgres.cache_hit(db)
    assert hit / (hit + read) >= 0.99
    total, stale = postgres.stale_tables(db, 7)
    assert total == 2 and stale == []
    assert postgres.rows_older_than(db, "audit_logs", 90) == (0, None)
    compliant, decisions = postgres.decision_compliance(db, pool.profile.databases[0])
    assert decisions > 200 and compliant / decisions >= 0.99
    chain = postgres.audit_chain(db, "audit_logs", "cdd01ef066bc6cf2", 100_000)
    assert chain["rows"] == 3000 and chain["breaks"] == 0 and chain["wrong_hash"] == 0


def test_replica_lag_refuses_a_primary(db):
    with pytest.raises(ProbeError, match="not a standby"):
        postgres.replica_lag(db)


def test_audit_chain_finds_the_first_broken_link(healthy_sandbox, db):
    healthy_sandbox.break_fault("audit-chain-break")
    chain = postgres.audit_chain(db, "audit_logs", "cdd01ef066bc6cf2", 100_000)
    assert chain["breaks"] == 1 and chain["first_break"]["id"] == 1501
    assert chain["first_break"]["kind"] == "names no row" and chain["chains"] == {"by": None, "count": 1}
    # only the newest rows are walked when the profile says so: the break is older than the newest 100
    assert postgres.audit_chain(db, "audit_logs", "cdd01ef066bc6cf2", 100)["breaks"] == 0


# ------------------------------------------------------------------ the audit chain as real systems keep it


def test_per_tenant_chains_are_followed_link_by_link(healthy_sandbox, db):
    """Five tenants, ids interleaved, each chain from its own genesis value (NULL, '', zeros, 'genesis'): intact."""
    healthy_sandbox.break_fault("field-audit")
    chain = postgres.audit_chain(db, "audit_logs", "cdd01ef066bc6cf2", 100_000)
    assert chain["rows"] == 3000 and chain["chains"] == {"by": "tenant_id", "count": 5}
    assert chain["breaks"] == 0 and chain["first_break"] is None and chain["wrong_hash"] == 0


def test_a_break_inside_one_tenants_chain_names_the_tenant_and_the_row(healthy_sandbox, db, sandbox):
    healthy_sandbox.break_fault("audit-tenant-break")
    with sandbox_admin(sandbox) as admin:
        forged = admin.execute("SELECT id FROM audit_logs WHERE prev_hash = %s",
                               (hashlib.sha256(b"tampered").hexdigest(),)).fetchone()[0]
    chain = postgres.audit_chain(db, "audit_logs", "cdd01ef066bc6cf2", 100_000)
    assert chain["breaks"] == 1 and chain["chains"] == {"by": "tenant_id", "count": 5}
    first = chain["first_break"]
    assert (first["chain"], first["id"], first["kind"]) == ("tenant-2", forged, "names no row")


def test_two_rows_claiming_one_predecessor_are_a_fork(healthy_sandbox, db, sandbox):
    healthy_sandbox.break_fault("field-audit")
    with sandbox_admin(sandbox) as admin:
        a, b = admin.execute("SELECT id, prev_hash FROM audit_logs WHERE tenant_id = 'tenant-1'"
                             " ORDER BY timestamp, id OFFSET 100 LIMIT 2").fetchall()
        admin.execute("UPDATE audit_logs SET prev_hash = %s WHERE id = %s", (a[1], b[0]))
        try:
            chain = postgres.audit_chain(db, "audit_logs", "cdd01ef066bc6cf2", 100_000)
        finally:
            admin.execute("UPDATE audit_logs SET prev_hash = %s WHERE id = %s", (b[1], b[0]))
    assert chain["breaks"] == 1 and chain["first_break"]["kind"] == "fork"
    assert chain["first_break"]["chain"] == "tenant-1" and chain["first_break"]["ids"] == [a[0], b[0]]


def test_rows_hidden_by_row_level_security_are_no_evidence(healthy_sandbox, db, pool):
    """The checker's role sees none of audit_logs' rows: no probe that reads the table answers as if it were fine."""
    healthy_sandbox.break_fault("audit-rls-hidden")
    seen = postgres.visibility(db, "audit_logs")
    assert seen["visible"] is False and seen["row_security"] is True and seen["estimated_rows"] == 3000
    hidden = r"role acgs sees 0 of audit_logs' 3000 rows \(row-level security"
    with pytest.raises(ProbeError, match=hidden + r".*cannot verify the chain"):
        postgres.audit_chain(db, "audit_logs", "cdd01ef066bc6cf2", 100_000)
    with pytest.raises(ProbeError, match=hidden):
        postgres.rows_older_than(db, "audit_logs", 90)
    with pytest.raises(ProbeError, match=hidden):
        postgres.decision_compliance(db, pool.profile.databases[0])


def test_an_empty_database_has_no_statistics_to_call_fresh(healthy_sandbox, pool):
    """DB-09 in a database without a user table measured nothing: it says so instead of '0 of 0 stale'."""
    profile = pool.profile
    dsn = profile.databases[0].dsn.rsplit("/", 1)[0] + "/postgres"
    other = postgres.connect(dsn, profile.secret("databases.primary"), profile.thresholds)
    try:
        with pytest.raises(ProbeError, match="no user table"):
            postgres.stale_tables(other, 7)
    finally:
        other.conn.close()


def test_a_role_without_pg_read_all_stats_is_told_what_it_cannot_see(healthy_sandbox, pool, sandbox):
    """Without pg_read_all_stats, pg_stat_activity shows other roles' sessions with no type, state or start: DB-04
    would find no long query and DB-03 would count one connection. Neither may pass on that."""
    dsn = pool.profile.databases[0].dsn.replace("postgresql://acgs@", "postgresql://acgs_h3_monitor@")
    with sandbox_admin(sandbox) as admin:
        admin.execute("CREATE ROLE acgs_h3_monitor LOGIN PASSWORD 'monitor-pw'")
        sleeper = threading.Thread(target=admin.execute, args=("SELECT pg_sleep(1.5)",))
        sleeper.start()
        try:
            monitor = postgres.connect(dsn, "monitor-pw", pool.profile.thresholds)
            try:
                wait_for("a session hidden from the monitor", lambda: postgres.hidden_sessions(monitor), 10)
                with pytest.raises(ProbeError, match=r"role acgs_h3_monitor cannot see the state .*pg_read_all_stats"):
                    postgres.long_running(monitor, 0.3)
                used, _, source = postgres.connection_usage(monitor)
                assert used >= 2 and source.startswith("backends of pg_stat_database.numbackends (role acgs_h3")
            finally:
                monitor.conn.close()
        finally:
            sleeper.join()
            admin.execute("DROP ROLE acgs_h3_monitor")
            admin.execute("SELECT pg_stat_statements_reset()")


def test_the_checkers_own_slow_statements_are_not_the_applications(db, sandbox):
    """DB-06 judges the application's statements: one as slow sent by the checks (CC-05's audit-chain queries on a
    busy server) is left out, and the same statement sent by another client is a finding."""
    with sandbox_admin(sandbox) as admin:  # no slow statement another test left behind
        admin.execute("SELECT pg_stat_statements_reset()")
    try:
        recorded = postgres.statements_recorded(db)  # the reset itself, at most
        db.rows("SELECT pg_sleep(0.15) AS checker")
        assert postgres.slow_statements(db, 100) == []
        assert postgres.statements_recorded(db) == recorded  # none of them the checker's: it is not what DB-06 judges
        with sandbox_admin(sandbox) as admin:
            admin.execute("SELECT pg_sleep(0.15) AS application")
        assert postgres.statements_recorded(db) > recorded
        (slow,) = postgres.slow_statements(db, 100)
        assert "application" in slow["query"] and slow["calls"] == 1 and slow["mean_ms"] >= 150, slow
    finally:
        with sandbox_admin(sandbox) as admin:
            admin.execute("SELECT pg_stat_statements_reset()")


def test_slow_statements_absent_extension_is_a_reason_not_a_pass(healthy_sandbox, pool):
    """In a database without pg_stat_statements DB-06 gets a reason to skip, never an empty list."""
    profile = pool.profile
    dsn = profile.databases[0].dsn.rsplit("/", 1)[0] + "/postgres"
    other = postgres.connect(dsn, profile.secret("databases.primary"), profile.thresholds)
    try:
        assert "not installed" in postgres.statements_unavailable(other)
    finally:
        other.conn.close()


def test_redis_probe_reads_and_refuses_every_write(rcache, sandbox):
    cache = rcache
    assert cache.ping() < 1000
    assert cache.get("acgs:constitutional_hash") == "cdd01ef066bc6cf2"
    hits, misses = hit_rate(cache.info("stats"))
    assert hits + misses >= 1000 and hits / (hits + misses) >= 0.85
    lat = cache.latency(5)
    assert len(lat.samples_ms) == 5 and not lat.failures
    for write in ("SET", "DEL", "FLUSHALL", "CONFIG", "EVAL", "DEBUG", "set"):
        with pytest.raises(ProbeError, match="read commands only"):
            cache.command(write, "acgs:constitutional_hash", "x")
    assert cache.get("acgs:constitutional_hash") == "cdd01ef066bc6cf2"
    assert not {"SET", "DEL", "EVAL", "CONFIG"} & READ_COMMANDS


# --------------------------------------------------------------------------------------- bad days


def _assert_one_clean_line(exc: ProbeError, *secrets: str) -> str:
    text = str(exc)
    assert "\n" not in text and text.strip() == text
    for s in secrets:
        assert s not in text
    return text


def _pg_connect(sandbox, dsn: str, password: str | None = None, timeout: float = 2):
    profile = _profile(sandbox, f"thresholds.db_connect_timeout_seconds={timeout}")
    real = profile.secret("databases.primary")
    with pytest.raises(ProbeError) as exc:
        postgres.connect(dsn, real if password is None else password, profile.thresholds, [real])
    return exc.value, real


def test_wrong_password_is_one_line_without_the_password(sandbox):
    dsn = _profile(sandbox).databases[0].dsn
    exc, real = _pg_connect(sandbox, dsn, password="not-the-Pa55word")
    text = _assert_one_clean_line(exc, "not-the-Pa55word", real)
    assert "password authentication failed" in text


def test_unknown_database_is_one_line(sandbox):
    dsn = _profile(sandbox).databases[0].dsn.rsplit("/", 1)[0] + "/no_such_db"
    exc, real = _pg_connect(sandbox, dsn)
    assert 'database "no_such_db" does not exist' in _assert_one_clean_line(exc, real)


def test_refused_connection_is_one_line_at_once(sandbox, closed_port):
    exc, real = _pg_connect(sandbox, f"postgresql://acgs@127.0.0.1:{closed_port}/acgs_production")
    assert "Connection refused" in _assert_one_clean_line(exc, real)


def test_silent_server_fails_within_the_connect_timeout(sandbox, black_hole):
    exc, real = _pg_connect(sandbox, f"postgresql://acgs@127.0.0.1:{black_hole}/acgs_production", timeout=2)
    assert "timeout" in _assert_one_clean_line(exc, real).lower()


def test_dns_failure_is_one_line_and_sends_no_query(sandbox):
    # a 70-character label is refused by the resolver library itself: no packet leaves this machine
    host = "a" * 70 + ".invalid"
    exc, real = _pg_connect(sandbox, f"postgresql://acgs@{host}:5432/acgs_production")
    assert "label" in _assert_one_clean_line(exc, real)
    with pytest.raises(ProbeError, match="cannot reach"):
        RedisProbe(f"redis://{host}:6379/0", None, timeout=1)


def test_redis_wrong_password_and_silent_server(sandbox, black_hole):
    url = _profile(sandbox).redis[0].url
    with pytest.raises(ProbeError) as exc:
        RedisProbe(url, "not-the-Pa55word", timeout=1, secrets=["not-the-Pa55word"])
    text = _assert_one_clean_line(exc.value, "not-the-Pa55word")
    assert "cannot reach" in text and ("invalid" in text.lower() or "WRONGPASS" in text)
    with pytest.raises(ProbeError, match="[Tt]imeout"):
        RedisProbe(f"redis://127.0.0.1:{black_hole}/0", "x", timeout=1)


def test_an_unreachable_database_is_tried_once(sandbox):
    with silent_listener() as hole:  # completes the handshake and never answers; its accept queue counts attempts
        port = hole.getsockname()[1]
        profile = _profile(sandbox, f"databases.primary.dsn=postgresql://acgs@127.0.0.1:{port}/acgs_production",
                           "thresholds.db_connect_timeout_seconds=1")
        pool = PgPool(profile)
        with pytest.raises(ProbeError, match="timeout"):
            pool.get(profile.databases[0])
        with pytest.raises(ProbeError, match="timeout"):
            pool.get(profile.databases[0])  # the first reason again, without a second connection
        assert accepted(hole) == 1


def test_sandbox_files_hold_no_password_in_the_profile(sandbox):
    text = Path(sandbox.profile_path).read_text()
    secret_file = sandbox.secret_file("db")
    assert secret_file.read_text().strip() not in text
    assert oct(secret_file.stat().st_mode & 0o777) == "0o600"


def test_db06_judges_nothing_where_pg_stat_statements_holds_only_the_checkers_statements(sandbox, tmp_path):
    """A database whose pg_stat_statements was just reset holds no statement of the application's: DB-06 skips,
    saying so, rather than passing on nothing; once the application has run a statement, it judges."""
    from acgs_verify.sandbox.components.postgres import primary_port
    from acgs_verify.sandbox.constants import ADMIN
    from tests.conftest import run_checks

    name = "acgs_quiet_statements"
    profile = tmp_path / "quiet.yaml"
    profile.write_text(f"databases: [{{name: quiet, dsn: 'postgresql://{ADMIN}@127.0.0.1:"
                       f"{primary_port(sandbox.port_offset)}/{name}', password_env: ACGS_QUIET_PASSWORD}}]\n")
    env = {"ACGS_QUIET_PASSWORD": sandbox.secret("pg-admin")}
    with sandbox_admin(sandbox, "postgres") as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        with sandbox_admin(sandbox, name) as app:
            app.execute("CREATE EXTENSION pg_stat_statements")
        with sandbox_admin(sandbox) as admin:  # from another database, where the reset itself is recorded
            admin.execute("SELECT pg_stat_statements_reset(0, (SELECT oid FROM pg_database WHERE datname = %s), 0)",
                          (name,))
        res = run_checks(profile, tmp_path / "r1", "--", "-k", "DB-06", env=env)
        db06 = res.checks[("DB-06", "quiet")]
        assert db06["outcome"] == "skipped" and "nothing to judge yet" in db06["message"], db06
        with sandbox_admin(sandbox, name) as app:
            app.execute("SELECT count(*) FROM pg_class")
        res = run_checks(profile, tmp_path / "r2", "--", "-k", "DB-06", env=env)
        assert res.checks[("DB-06", "quiet")]["outcome"] == "passed", res.output
    finally:
        with sandbox_admin(sandbox, "postgres") as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
