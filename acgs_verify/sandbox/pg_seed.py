"""What the sandbox puts into its PostgreSQL, and the data faults it switches on and off.

The schema follows the real system (docs/design.md, "What real deployments look like"):
audit_logs(id, timestamp, created_at, event_data jsonb, prev_hash, current_hash, tenant_id, user_id,
service_name, event_type, constitutional_hash) and policies(id, name, content, version, created_at,
updated_at, constitutional_hash). A few thousand audit rows over the last 60 days, chained by hash, the
last day's governance decisions ~99.7 % compliant.

Each BREAK function changes real rows (or the replica's replay) and returns what HEAL needs to put
them back exactly.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from collections.abc import Callable
from typing import Any

from acgs_verify.sandbox.components.base import poll, wait_until
from acgs_verify.sandbox.constants import CONSTITUTIONAL_HASH, OTHER_HASH

AUDIT_ROWS = 3000
RECENT_ROWS = 600  # within the last day: the compliance window's decisions
POLICIES = 40
GENESIS = "0" * 64
EVENT_TYPES = ("governance_decision", "policy_evaluation", "governance_decision", "constitutional_validation",
               "auth_login", "governance_decision", "policy_update")
SERVICES = ("constitutional-ai", "policy-governance", "governance-synthesis", "formal-verification", "auth")
WARM_UP_SCANS = 60


def server_settings(max_connections: int) -> str:
    return f"""
# acgs-verify sandbox
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = {max_connections}
shared_buffers = 32MB
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = top
wal_level = replica
max_wal_senders = 4
wal_keep_size = 64MB
hot_standby = on
fsync = off
synchronous_commit = off
timezone = 'UTC'
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
"""


def create_role_and_database(conn, role: str, password: str, database: str) -> None:
    from psycopg import sql

    conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(password)))
    # a monitoring role: other sessions' text and pg_stat_statements of every role (pg_read_all_stats), and the
    # server's data directory, which DB-02 matches with the postmaster's -D (pg_read_all_settings)
    conn.execute(sql.SQL("GRANT pg_monitor TO {}").format(sql.Identifier(role)))
    conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(database), sql.Identifier(role)))


def create_restore_role(conn, role: str, password: str) -> None:
    """The restore drill's role: it creates (and drops) its scratch databases, and restores a dump into them.
    A superuser, because a plain dump recreates the extensions (pg_stat_statements, pg_prewarm), which only a
    superuser may create, and sets owners (ALTER ... OWNER TO acgs). Never used by the read-only checks."""
    from psycopg import sql

    conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER CREATEDB PASSWORD {}").format(
        sql.Identifier(role), sql.Literal(password)))


def create_schema(conn, owner: str) -> None:
    from psycopg import sql

    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")  # the sandbox's own warm-up after a restart
    conn.execute("""
        CREATE TABLE audit_logs (
            id bigserial PRIMARY KEY,
            timestamp timestamptz NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            event_data jsonb NOT NULL,
            prev_hash text,
            current_hash text NOT NULL,
            tenant_id text,
            user_id text,
            service_name text,
            event_type text NOT NULL,
            constitutional_hash text NOT NULL)""")
    conn.execute("CREATE INDEX audit_logs_timestamp_idx ON audit_logs (timestamp)")
    conn.execute("CREATE INDEX audit_logs_event_type_idx ON audit_logs (event_type, timestamp)")
    conn.execute("CREATE INDEX audit_logs_created_at_idx ON audit_logs (created_at)")
    conn.execute("""
        CREATE TABLE policies (
            id serial PRIMARY KEY,
            name text NOT NULL UNIQUE,
            content text NOT NULL,
            version text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            constitutional_hash text NOT NULL)""")
    for table in ("audit_logs", "policies"):
        conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier(table), sql.Identifier(owner)))


def chain_hash(prev_hash: str, ts: dt.datetime, event_type: str, event_data: str) -> str:
    """current_hash of an audit row: SHA-256 over its predecessor's hash and its own content."""
    text = f"{prev_hash}|{ts.isoformat()}|{event_type}|{event_data}|{CONSTITUTIONAL_HASH}"
    return hashlib.sha256(text.encode()).hexdigest()


def audit_rows(now: dt.datetime, n: int = AUDIT_ROWS, seed: int = 42) -> list[tuple]:
    rnd = random.Random(seed)
    old = n - RECENT_ROWS
    rows, prev, decisions = [], GENESIS, 0
    for i in range(n):
        if i < old:  # 60 days ago .. a day ago
            ts = now - dt.timedelta(days=60) + dt.timedelta(days=59) * (i / old)
        else:  # the last day, up to five minutes ago
            ts = now - dt.timedelta(hours=23) + dt.timedelta(hours=22, minutes=55) * ((i - old) / RECENT_ROWS)
        event_type = EVENT_TYPES[i % len(EVENT_TYPES)]
        data: dict[str, Any] = {"request_id": f"req-{i:06d}", "policy_id": f"policy-{rnd.randrange(POLICIES):03d}"}
        if event_type == "governance_decision":
            decisions += 1
            data.update(decision=rnd.choice(("allow", "allow", "allow", "deny")),
                        compliant=decisions % 300 != 7, score=round(rnd.uniform(0.9, 1.0), 4))
        elif event_type == "auth_login":
            data.update(result="success", method="password")
        else:
            data.update(result="ok", duration_ms=rnd.randrange(1, 40))
        event_data = json.dumps(data, sort_keys=True)
        current = chain_hash(prev, ts, event_type, event_data)
        rows.append((ts, ts, event_data, prev, current, f"tenant-{rnd.randrange(5)}", f"user-{rnd.randrange(60):03d}",
                     rnd.choice(SERVICES), event_type, CONSTITUTIONAL_HASH))
        prev = current
    return rows


def seed(conn) -> None:
    now = dt.datetime.now(dt.UTC)
    with conn.cursor() as cur, cur.copy(
            "COPY audit_logs (timestamp, created_at, event_data, prev_hash, current_hash, tenant_id, user_id,"
            " service_name, event_type, constitutional_hash) FROM STDIN") as copy:
        for row in audit_rows(now):
            copy.write_row(row)
    with conn.cursor() as cur, cur.copy(
            "COPY policies (name, content, version, created_at, updated_at, constitutional_hash) FROM STDIN") as copy:
        for i in range(POLICIES):
            created = now - dt.timedelta(days=90 - i)
            content = json.dumps({"principle": f"principle-{i}", "rules": [f"rule-{i}-{j}" for j in range(5)],
                                  "constitutional_hash": CONSTITUTIONAL_HASH})
            copy.write_row((f"policy-{i:03d}", content, f"1.{i % 4}.0", created, created, CONSTITUTIONAL_HASH))


def warm_up(conn, scans: int = WARM_UP_SCANS) -> None:
    """Read the tables until they sit in shared buffers, as a server in service has them (DB-08)."""
    for _ in range(scans):
        conn.execute("SELECT count(*), max(length(event_data::text)) FROM audit_logs").fetchall()
        conn.execute("SELECT count(*), max(length(content)) FROM policies").fetchall()


def settle_statistics(conn, statements: bool = True) -> None:
    """Statistics as on a server in service: fresh ANALYZE, a warm cache and (with `statements`) no statements
    from the seeding. Also after a restart, whose cold cache would otherwise weigh on the hit ratio for long."""
    # a cold cache (after a restart) is filled before the counting starts: tables, indexes and catalogs
    conn.execute("SELECT pg_prewarm(oid) FROM pg_class WHERE relkind IN ('r', 'i', 't') AND relpersistence = 'p'")
    # this session's own counters (those reads) reach the shared statistics when it next goes idle: now,
    # before the reset, not after it
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute("SELECT pg_stat_reset()")  # this also forgets each table's last analyze: ANALYZE again
    conn.execute("ANALYZE")
    warm_up(conn)
    if statements:
        conn.execute("SELECT pg_stat_statements_reset()")


# -------------------------------------------------------------------------------------- data faults


def _ids(conn, query: str, *params) -> list[int]:
    return [r[0] for r in conn.execute(query, params).fetchall()]


def _rows_changed(pick: str, change: str, back: str) -> tuple[Callable, Callable]:
    """The BREAK and HEAL of a fault that sets `change` on the audit rows `pick` selects (their ids are the undo)
    and `back` on those same rows again."""
    def break_(conn, replica) -> list[int]:
        ids = _ids(conn, pick)
        conn.execute(f"UPDATE audit_logs SET {change} WHERE id = ANY(%s)", (ids,))
        return ids

    def heal(conn, replica, ids) -> None:
        conn.execute(f"UPDATE audit_logs SET {back} WHERE id = ANY(%s)", (ids,))

    return break_, heal


_old_rows, _heal_old_rows = _rows_changed(
    "SELECT id FROM audit_logs ORDER BY id LIMIT 5",
    "created_at = created_at - interval '120 days', timestamp = timestamp - interval '120 days'",
    "created_at = created_at + interval '120 days', timestamp = timestamp + interval '120 days'")


def _chain_break(conn, replica) -> dict:
    row = conn.execute("SELECT id, prev_hash FROM audit_logs ORDER BY id OFFSET %s LIMIT 1",
                       (AUDIT_ROWS // 2,)).fetchone()
    forged = hashlib.sha256(b"tampered").hexdigest()
    conn.execute("UPDATE audit_logs SET prev_hash = %s WHERE id = %s", (forged, row[0]))
    return {"id": row[0], "prev_hash": row[1]}


def _heal_chain_break(conn, replica, undo) -> None:
    conn.execute("UPDATE audit_logs SET prev_hash = %s WHERE id = %s", (undo["prev_hash"], undo["id"]))


def _wrong_hash(conn, replica) -> list[list]:
    rows = conn.execute("SELECT id, constitutional_hash FROM audit_logs ORDER BY id DESC LIMIT 3").fetchall()
    conn.execute("UPDATE audit_logs SET constitutional_hash = %s WHERE id = ANY(%s)",
                 (OTHER_HASH, [r[0] for r in rows]))
    return [list(r) for r in rows]


def _heal_wrong_hash(conn, replica, undo) -> None:
    for row_id, value in undo:
        conn.execute("UPDATE audit_logs SET constitutional_hash = %s WHERE id = %s", (value, row_id))


# one recent compliant decision in six turns non-compliant: ~83 % of the window
_low_compliance, _heal_low_compliance = _rows_changed(
    "SELECT id FROM (SELECT id, row_number() OVER (ORDER BY id) AS n FROM audit_logs"
    " WHERE event_type = 'governance_decision' AND timestamp > now() - interval '24 hours'"
    " AND (event_data->>'compliant')::boolean) d WHERE n %% 6 = 0",
    "event_data = jsonb_set(event_data, '{compliant}', 'false')",
    "event_data = jsonb_set(event_data, '{compliant}', 'true')")


def _stale_stats(conn, replica) -> None:
    # what a server whose statistics were reset, or never analyzed, looks like: no last (auto)analyze
    conn.execute("SELECT pg_stat_reset_single_table_counters(relid) FROM pg_stat_user_tables")
    return None


def _heal_stale_stats(conn, replica, undo) -> None:
    conn.execute("ANALYZE")


def _wait(what: str, test: Callable[[], bool], timeout: float = 20) -> None:
    wait_until(f"timed out after {timeout:.0f} s waiting for {what}", test, timeout, interval=0.1)


def _lsn(conn) -> str:
    # the insert position: a commit that wrote nothing else is flushed (and sent) a moment later by walwriter
    return conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0]


def _replica_reached(r, column: str, lsn: str) -> bool:
    return r.execute(f"SELECT pg_wal_lsn_diff({column}(), %s::pg_lsn) >= 0", (lsn,)).fetchone()[0]


def _replica_lag(conn, replica) -> None:
    conn.execute("SELECT txid_current()")  # a commit the replica replays before the pause: lag counts from it
    lsn = _lsn(conn)
    with replica() as r:
        _wait("the replica to replay the last commit", lambda: _replica_reached(r, "pg_last_wal_replay_lsn", lsn))
        r.execute("SELECT pg_wal_replay_pause()")
        _wait("replay to pause", lambda: r.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] == "paused")
        conn.execute("SELECT txid_current()")  # WAL that arrives and is not replayed
        lsn = _lsn(conn)
        _wait("the replica to receive WAL", lambda: _replica_reached(r, "pg_last_wal_receive_lsn", lsn))
    return None


def _heal_replica_lag(conn, replica, undo) -> None:
    with replica() as r:
        r.execute("SELECT pg_wal_replay_resume()")
        conn.execute("SELECT txid_current()")
        lsn = _lsn(conn)
        _wait("the replica to catch up", lambda: _replica_reached(r, "pg_last_wal_replay_lsn", lsn))
    # and the primary's own view (pg_stat_replication.replay_lag) has dropped the paused period again
    _wait("pg_stat_replication to show the replica caught up", lambda: conn.execute(
        "SELECT coalesce(bool_and(coalesce(extract(epoch FROM replay_lag), 0) < 1), false)"
        " FROM pg_stat_replication").fetchone()[0], timeout=30)


# ------------------------------------------------------------------ the layouts real deployments have

# how the real system marks the first row of a chain differs: each tenant gets a different spelling here
TENANT_GENESIS = {"tenant-0": None, "tenant-1": "", "tenant-2": GENESIS, "tenant-3": "genesis", "tenant-4": GENESIS}
CHECKER_HIDDEN_FROM = "acgs_audit_owner"  # audit-rls-hidden: the application role that owns audit_logs


def _hashes(conn) -> list[list]:
    return [list(r) for r in conn.execute("SELECT id, prev_hash, current_hash FROM audit_logs ORDER BY id")]


def _set_hashes(conn, replica, rows) -> None:
    """Write (id, prev_hash, current_hash) back in one statement, through a temporary table."""
    conn.execute("CREATE TEMP TABLE sandbox_hashes (id bigint PRIMARY KEY, prev_hash text, current_hash text)")
    with conn.cursor() as cur, cur.copy("COPY sandbox_hashes (id, prev_hash, current_hash) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    with conn.transaction():
        # flushed (and sent) at commit, not up to wal_writer_delay later: the replica replays it at once
        conn.execute("SET LOCAL synchronous_commit = on")
        conn.execute("UPDATE audit_logs a SET prev_hash = h.prev_hash, current_hash = h.current_hash"
                     " FROM sandbox_hashes h WHERE h.id = a.id")
        xid = conn.execute("SELECT xid(pg_current_xact_id())::text").fetchone()[0]
    committed = _lsn(conn)  # what follows commits asynchronously: the replica need not wait for it
    conn.execute("DROP TABLE sandbox_hashes")
    # this session's count of the dead versions reaches the shared statistics when it next goes idle, or up to a
    # second later: before the VACUUM, or the VACUUM's "0 dead" would be overwritten by them afterwards
    conn.execute("SELECT pg_stat_force_next_flush()")
    # the statistics stay what a server in service has (DB-08, DB-09 judge them), and the rewritten rows' dead
    # versions are vacuumed as autovacuum would, some time later (DB-11 judges them). The replica's
    # hot_standby_feedback holds the primary's horizon at what it last reported (once a second): until it reports
    # past this update, VACUUM may not remove the old versions, and every rewrite would leave 3000 dead rows.
    _ask_feedback(replica, committed)
    poll(lambda: not conn.execute("SELECT count(*) FROM pg_stat_replication WHERE backend_xmin IS NOT NULL"
                                   " AND age(backend_xmin) >= age(%s::xid)", (xid,)).fetchone()[0], timeout=5)
    conn.execute("VACUUM (ANALYZE) audit_logs")
    warm_up(conn, scans=5)


def _ask_feedback(replica, lsn: str) -> None:
    """Once the replica has replayed up to `lsn`, have it report its horizon now rather than at its next second:
    its walreceiver sends hot_standby_feedback at once when its configuration is reloaded. (The caller still
    waits for the report; this only brings it forward.)"""
    with replica() as r:
        # milliseconds away: polled finely
        wait_until("timed out after 5 s waiting for the replica to replay the rewrite",
                   lambda: _replica_reached(r, "pg_last_wal_replay_lsn", lsn), 5, interval=0.01)
        r.execute("SELECT pg_reload_conf()")


def tenant_chains(conn) -> list[tuple]:
    """(id, prev_hash, current_hash) of every audit row, chained per tenant in timestamp order, as ACGS's own
    schema keeps them: ids interleave across tenants, each tenant's chain starts at its own genesis value."""
    prev: dict[str, str | None] = {}
    out = []
    for row_id, tenant, ts, event_type, data in conn.execute(
            "SELECT id, tenant_id, timestamp, event_type, event_data::text FROM audit_logs ORDER BY timestamp, id"):
        before = prev[tenant] if tenant in prev else TENANT_GENESIS.get(tenant, GENESIS)
        current = chain_hash(before or "", ts, event_type, data)
        out.append((row_id, before, current))
        prev[tenant] = current
    return out


def _field_audit(conn, replica) -> list[list]:
    undo = _hashes(conn)
    _set_hashes(conn, replica, tenant_chains(conn))
    return undo


def _heal_field_audit(conn, replica, undo) -> None:
    _set_hashes(conn, replica, undo)


def _tenant_break(conn, replica) -> dict:
    """Per-tenant chains, then one row in the middle of tenant-2's chain names a predecessor that does not exist."""
    undo = _hashes(conn)
    _set_hashes(conn, replica, tenant_chains(conn))
    row_id = conn.execute("SELECT id FROM audit_logs WHERE tenant_id = 'tenant-2' ORDER BY timestamp, id"
                          " OFFSET (SELECT count(*) / 2 FROM audit_logs WHERE tenant_id = 'tenant-2') LIMIT 1"
                          ).fetchone()[0]
    conn.execute("UPDATE audit_logs SET prev_hash = %s WHERE id = %s",
                 (hashlib.sha256(b"tampered").hexdigest(), row_id))
    return {"id": row_id, "hashes": undo}


def _heal_tenant_break(conn, replica, undo) -> None:
    _set_hashes(conn, replica, undo["hashes"])


def _rls_hidden(conn, replica) -> dict:
    """The checker's role becomes what production gives a monitor: SELECT on audit_logs, which another role owns
    and row-level security keeps to that owner, so the checker sees none of its rows."""
    from psycopg import sql

    checker, acl = conn.execute("SELECT pg_get_userbyid(relowner), relacl::text FROM pg_class"
                                " WHERE oid = 'audit_logs'::regclass").fetchone()
    owner = sql.Identifier(CHECKER_HIDDEN_FROM)
    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(owner))
    conn.execute(sql.SQL("ALTER TABLE audit_logs OWNER TO {}").format(owner))
    conn.execute(sql.SQL("GRANT SELECT ON audit_logs TO {}").format(sql.Identifier(checker)))
    conn.execute("ALTER TABLE audit_logs ENABLE ROW LEVEL SECURITY")
    conn.execute(sql.SQL("CREATE POLICY audit_logs_owner_only ON audit_logs TO {} USING (true)").format(owner))
    return {"owner": checker, "acl": acl}


def _heal_rls_hidden(conn, replica, undo) -> None:
    from psycopg import sql

    checker = sql.Identifier(undo["owner"])
    conn.execute("DROP POLICY IF EXISTS audit_logs_owner_only ON audit_logs")
    conn.execute("ALTER TABLE audit_logs DISABLE ROW LEVEL SECURITY")
    # the grant goes before the owner changes back: afterwards it would be the owner's own, and stay
    conn.execute(sql.SQL("REVOKE SELECT ON audit_logs FROM {}").format(checker))
    conn.execute(sql.SQL("ALTER TABLE audit_logs OWNER TO {}").format(checker))
    if undo.get("acl") is None:
        # the owner's privileges are now spelled out; the table had the implicit default (NULL), as created
        conn.execute("UPDATE pg_class SET relacl = NULL WHERE oid = 'audit_logs'::regclass")
    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(CHECKER_HIDDEN_FROM)))


BREAK: dict[str, Callable] = {
    "audit-old-rows": _old_rows, "audit-chain-break": _chain_break, "audit-wrong-hash": _wrong_hash,
    "low-compliance": _low_compliance, "db-stale-stats": _stale_stats, "db-replica-lag": _replica_lag,
    "field-audit": _field_audit, "audit-tenant-break": _tenant_break, "audit-rls-hidden": _rls_hidden,
}
HEAL: dict[str, Callable] = {
    "audit-old-rows": _heal_old_rows, "audit-chain-break": _heal_chain_break, "audit-wrong-hash": _heal_wrong_hash,
    "low-compliance": _heal_low_compliance, "db-stale-stats": _heal_stale_stats,
    "db-replica-lag": _heal_replica_lag,
    "field-audit": _heal_field_audit, "audit-tenant-break": _heal_tenant_break, "audit-rls-hidden": _heal_rls_hidden,
}
# faults that each rewrite every audit row's hashes: one at a time, so each heal puts back what it found
RESHAPE_AUDIT = ("field-audit", "audit-tenant-break")


# ------------------------------------------------- DB-11 / DB-12 faults: tables of their own, dropped on heal

BLOAT_TABLE, SCANS_TABLE = "sandbox_bloat", "sandbox_scans"
FAULT_ROWS = 20_000  # over the default db_bloat_min_rows (10 000)


def _bloat(conn, replica) -> None:
    """db-bloat: a table of FAULT_ROWS rows, 60 % of them deleted, autovacuum off on it, so the dead tuples stay."""
    conn.execute(f"CREATE TABLE {BLOAT_TABLE} (id int PRIMARY KEY, note text) WITH (autovacuum_enabled = false)")
    conn.execute(f"INSERT INTO {BLOAT_TABLE} SELECT g, md5(g::text) FROM generate_series(1, %s) g", (FAULT_ROWS,))
    conn.execute(f"DELETE FROM {BLOAT_TABLE} WHERE id % 5 < 3")
    conn.execute("SELECT pg_stat_force_next_flush()")  # the counts first, so ANALYZE's are not added to them
    conn.execute(f"ANALYZE {BLOAT_TABLE}")  # fresh statistics: DB-09 stays passing, only DB-11 sees the fault
    conn.execute("SELECT pg_stat_force_next_flush()")


def _unused_index(conn, replica) -> None:
    """db-unused-index: a large table with an index nothing uses, read only by sequential scans."""
    conn.execute(f"CREATE TABLE {SCANS_TABLE} (id int, note text)")
    conn.execute(f"INSERT INTO {SCANS_TABLE} SELECT g, md5(g::text) FROM generate_series(1, %s) g", (FAULT_ROWS,))
    conn.execute(f"CREATE INDEX {SCANS_TABLE}_note_idx ON {SCANS_TABLE} (note)")
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.execute(f"ANALYZE {SCANS_TABLE}")
    for _ in range(5):
        conn.execute(f"SELECT count(*) FROM {SCANS_TABLE} WHERE id > 0")  # no index on id: a sequential scan
    conn.execute("SELECT pg_stat_force_next_flush()")


def _drop(table: str) -> Callable:
    return lambda conn, replica, undo: conn.execute(f"DROP TABLE IF EXISTS {table}")


BREAK.update({"db-bloat": _bloat, "db-unused-index": _unused_index})
HEAL.update({"db-bloat": _drop(BLOAT_TABLE), "db-unused-index": _drop(SCANS_TABLE)})
