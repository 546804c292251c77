"""PostgreSQL probes: read-only sessions, one per database per process, and the runbook's queries.

>>> pool = PgPool(profile)
>>> db = pool.get(profile.databases[0])        # ProbeError('cannot connect to postgresql://...: ...') once
>>> select_one(db)
1.3                                             # milliseconds for SELECT 1
>>> connection_usage(db)
(4, 30, 'client backends in pg_stat_activity')   # in use, max_connections, where the count comes from
>>> long_running(db, 300)
[{'pid': 4242, 'seconds': 412.0, 'state': 'active', 'query': 'SELECT pg_sleep(3600)'}]

Every session is read-only by construction: default_transaction_read_only=on, statement_timeout,
lock_timeout and idle_in_transaction_session_timeout are set at connect time, in autocommit mode (no
transaction is ever left open). Sessions name themselves application_name=acgs-verify, and the queries
that look at other sessions leave out every acgs-verify session, so a check never reports itself.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any
from urllib.parse import urlsplit

from acgs_verify.errors import ProbeError
from acgs_verify.hosts import reach
from acgs_verify.profile import Database, Profile
from acgs_verify.redact import display_url, one_line
from acgs_verify.words import plural

APPLICATION_NAME = "acgs-verify"
# Every statement the checks send starts with this comment, which pg_stat_statements keeps in the text it stores:
# DB-06 leaves them out, as the checker's own load is not the application's (CC-05 follows 100,000 audit rows, and
# on a busy server one such query past 100 ms failed the next run's DB-06).
STATEMENT_MARK = "/* acgs-verify */ "
# pg_stat_statements' rows (as `s`) that DB-06 judges: this database's, not the checker's own; with OURS as %(ours)s
APPLICATION_STATEMENTS = ("s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
                          " AND s.query NOT LIKE %(ours)s")
OURS = STATEMENT_MARK.strip() + "%"
LOCK_TIMEOUT_MS = 2000  # a check never waits on a lock longer than this: it would rather fail than queue
QUERY_TEXT_MAX = 200  # query text shown in a failure message


class Pg:
    """One open read-only session: `rows(sql, params)` and `value(sql, params)`."""

    def __init__(self, conn, label: str, secrets: list[str]):
        self.conn = conn
        self.label = label
        self._secrets = secrets

    def rows(self, query, params: Any = None) -> list[dict[str, Any]]:
        import psycopg
        from psycopg import sql
        from psycopg.rows import dict_row

        marked = sql.SQL(STATEMENT_MARK) + query if isinstance(query, sql.Composable) else STATEMENT_MARK + query
        try:
            with self.conn.cursor(row_factory=dict_row) as cur:
                cur.execute(marked, params)
                return list(cur.fetchall()) if cur.description else []
        except psycopg.Error as exc:
            raise ProbeError(f"query on {self.label} failed: {_one_line(exc, self._secrets)}") from None

    def value(self, query, params: Any = None) -> Any:
        rows = self.rows(query, params)
        return next(iter(rows[0].values())) if rows else None


class PgPool:
    """Sessions keyed by database (and replica DSN), opened on first use, closed by close().

    A database that cannot be reached is tried once: its other checks fail at once with the same reason.
    """

    def __init__(self, profile: Profile):
        self.profile = profile
        self._open: dict[str, Pg] = {}
        self._failed: dict[str, str] = {}
        self._unreachable: dict[str, ProbeError] = {}

    def get(self, database: Database) -> Pg:
        return self._session(database.name, database.dsn, database)

    def replica(self, database: Database, dsn: str) -> Pg:
        return self._session(f"{database.name} replica {dsn}", dsn, database)

    def _session(self, key: str, dsn: str, database: Database) -> Pg:
        if key in self._unreachable:
            raise self._unreachable[key]
        if key in self._failed:
            raise ProbeError(self._failed[key])
        if key not in self._open:
            try:
                for address, port in tcp_endpoints(dsn):  # a server that does not answer: at once, not per check
                    reach.gate(address, port, kind="postgres", target=f"database {database.name}")
            except reach.Unreachable as exc:
                self._unreachable[key] = exc
                raise
            try:
                self._open[key] = connect(dsn, self.profile.secret(f"databases.{database.name}"),
                                          self.profile.thresholds, self.profile.secret_values())
            except ProbeError as exc:
                self._failed[key] = str(exc)
                raise
        return self._open[key]

    def close(self) -> None:
        for pg in self._open.values():
            # closing a session to a server that went away is not a finding
            with contextlib.suppress(Exception):
                pg.conn.close()
        self._open.clear()


def connect(dsn: str, password: str | None, thresholds, secrets: list[str] = ()) -> Pg:
    """A read-only session on `dsn`; ProbeError with one line (no password in it) if it cannot be had."""
    import psycopg

    statement_ms = int(thresholds.db_statement_timeout_seconds * 1000)
    options = (f"-c default_transaction_read_only=on -c statement_timeout={statement_ms} "
               f"-c lock_timeout={min(LOCK_TIMEOUT_MS, statement_ms)} "
               f"-c idle_in_transaction_session_timeout={statement_ms}")
    kwargs: dict[str, Any] = {
        "application_name": APPLICATION_NAME,
        # libpq counts whole seconds (and at least 2); the hard deadline below covers the rest
        "connect_timeout": max(2, math.ceil(thresholds.db_connect_timeout_seconds)),
        "options": options,
        "autocommit": True,
    }
    if password is not None:
        kwargs["password"] = password
    secrets = [*secrets, *([password] if password else [])]
    shown = display_url(dsn)
    started = time.monotonic()
    try:
        conn = psycopg.connect(dsn, **kwargs)
    except (psycopg.Error, OSError, ValueError) as exc:  # ValueError: a host name the resolver refuses
        took = time.monotonic() - started
        raise ProbeError(f"cannot connect to {shown} (after {took:.1f} s): {_one_line(exc, secrets)}") from None
    pg = Pg(conn, shown, secrets)
    # a server or pooler that ignored the startup options must not get our queries
    if pg.value("SHOW default_transaction_read_only") != "on":
        conn.close()
        raise ProbeError(f"{shown}: the session did not become read-only; refusing to run checks on it")
    return pg


def _one_line(exc: Exception, secrets) -> str:
    # psycopg prefixes every connection error with what the message says anyway
    return one_line(exc, secrets).removeprefix("connection failed: ").rstrip(".")


def _ident(name: str):
    """'audit_logs' or 'schema.audit_logs' as a quoted SQL identifier."""
    from psycopg import sql

    return sql.Identifier(*name.split(".", 1))


def _truncate(text: str | None, limit: int = QUERY_TEXT_MAX) -> str:
    one = " ".join((text or "").split())
    return one if len(one) <= limit else one[: limit - 3] + "..."


def tcp_endpoints(dsn: str) -> list[tuple[str, int]]:
    """The (address, port) pairs libpq would try over TCP for `dsn` (a URL or key=value conninfo); none for a
    unix socket directory or a DSN libpq cannot read (its connect says why)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 -- the connect that follows names libpq's own error
        return []
    hosts = str(params.get("hostaddr") or params.get("host") or "").split(",")
    ports = str(params.get("port") or "5432").split(",")
    found = []
    for i, address in enumerate(hosts):
        port = ports[i] if i < len(ports) else ports[-1]
        if address and not address.startswith("/") and port.strip().isdigit():
            found.append((address.strip(), int(port)))
    return found


def host_port(dsn: str) -> tuple[str, int]:
    """('db-1', 5432) from a DSN, for checks that look for the server on its host."""
    parts = urlsplit(dsn)
    return parts.hostname or "localhost", parts.port or 5432


# ---------------------------------------------------------------------------------------- the probes


def select_one(pg: Pg) -> float:
    """`SELECT 1` -> milliseconds it took (DB-01)."""
    started = time.monotonic()
    if pg.value("SELECT 1") != 1:
        raise ProbeError(f"{pg.label}: SELECT 1 did not answer 1")
    return (time.monotonic() - started) * 1000


def hidden_sessions(pg: Pg) -> int:
    """Sessions in pg_stat_activity whose details this role may not see (0 for a superuser or a member of
    pg_read_all_stats / pg_monitor): other roles' rows show only a pid, with no backend_type, state or start."""
    return int(pg.value("SELECT count(*) FROM pg_stat_activity WHERE backend_type IS NULL"))


def connection_usage(pg: Pg) -> tuple[int, int, str]:
    """(connections in use, max_connections, where the count comes from) (DB-03).

    -> (4, 30, 'client backends in pg_stat_activity'). A role that cannot see other roles' sessions there would
    count only its own: then the count is pg_stat_database's numbackends, which every role may read, named so.
    """
    hidden = hidden_sessions(pg)
    row = pg.rows("SELECT (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend') AS used,"
                  " (SELECT sum(numbackends) FROM pg_stat_database) AS backends,"
                  " current_setting('max_connections')::int AS max, current_user AS role")[0]
    if hidden:
        return int(row["backends"]), int(row["max"]), (
            f"backends of pg_stat_database.numbackends (role {row['role']} cannot see {hidden} of the sessions "
            "in pg_stat_activity: not in pg_read_all_stats)")
    return int(row["used"]), int(row["max"]), "client backends in pg_stat_activity"


_NOT_ME = "application_name IS DISTINCT FROM %(app)s AND pid <> pg_backend_pid()"


def _sessions_over(pg: Pg, query: str, seconds: float) -> list[dict[str, Any]]:
    """Rows of a pg_stat_activity `query` taking `seconds` as %(s)s and excluding us (_NOT_ME), with `seconds`
    rounded to 0.1 and `query` cut to QUERY_TEXT_MAX: what DB-04 and DB-13 list."""
    rows = pg.rows(query, {"s": seconds, "app": APPLICATION_NAME})
    for r in rows:
        r["seconds"] = round(r["seconds"], 1)
        r["query"] = _truncate(r["query"])
    return rows


def long_running(pg: Pg, seconds: float) -> list[dict[str, Any]]:
    """Active statements running longer than `seconds`, longest first (DB-04), other than our own. ProbeError
    when the role may not see other sessions' state: an empty list would then mean nothing.

    A statement waiting on a lock is not counted: it is DB-05's finding (any blocked lock fails it), whose next
    step ends the blocker; cancelling the waiter, as DB-04's next step says, would be the wrong act."""
    hidden = hidden_sessions(pg)
    if hidden:
        role = pg.value("SELECT current_user")
        raise ProbeError(f"role {role} cannot see the state or start of {hidden} sessions in pg_stat_activity "
                         f"(not superuser, not in pg_read_all_stats or pg_monitor); cannot tell whether any runs "
                         f"longer than {seconds:g} s")
    return _sessions_over(pg, (
        "SELECT pid, usename AS user, datname AS database, state,"
        " extract(epoch FROM now() - query_start)::float AS seconds, query"
        " FROM pg_stat_activity"
        " WHERE state = 'active' AND backend_type = 'client backend' AND query_start IS NOT NULL"
        " AND wait_event_type IS DISTINCT FROM 'Lock'"
        f" AND now() - query_start > make_interval(secs => %(s)s) AND {_NOT_ME}"
        " ORDER BY query_start LIMIT 20"), seconds)


def blocked_locks(pg: Pg) -> list[dict[str, Any]]:
    """Sessions waiting on a lock, each with the session blocking it (DB-05): the runbook's query, through
    pg_blocking_pids() so every kind of lock counts."""
    rows = pg.rows(
        "SELECT blocked.pid AS blocked_pid, blocked.query AS blocked_query,"
        " extract(epoch FROM now() - blocked.query_start)::float AS waiting_seconds,"
        " blocking.pid AS blocking_pid, blocking.state AS blocking_state, blocking.query AS blocking_query"
        " FROM pg_stat_activity blocked"
        " JOIN LATERAL unnest(pg_blocking_pids(blocked.pid)) AS b(pid) ON true"
        " JOIN pg_stat_activity blocking ON blocking.pid = b.pid"
        " WHERE blocked.application_name IS DISTINCT FROM %(app)s AND blocked.pid <> pg_backend_pid()"
        " ORDER BY blocked.query_start LIMIT 20", {"app": APPLICATION_NAME})
    for r in rows:
        # None: the waiter is another role's session, whose query_start this role may not see
        r["waiting_seconds"] = None if r["waiting_seconds"] is None else round(r["waiting_seconds"], 1)
        r["blocked_query"] = _truncate(r["blocked_query"])
        r["blocking_query"] = _truncate(r["blocking_query"])
    return rows


def statements_unavailable(pg: Pg) -> str | None:
    """Why pg_stat_statements cannot be read here, or None when it can (DB-06 skips with this reason)."""
    if not pg.value("SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"):
        return "the pg_stat_statements extension is not installed in this database (CREATE EXTENSION)"
    try:
        pg.value("SELECT 1 FROM pg_stat_statements LIMIT 1")
    except ProbeError as exc:
        if "shared_preload_libraries" in str(exc):  # the extension exists but the library is not loaded
            return "pg_stat_statements is not loaded (shared_preload_libraries)"
        raise
    return None


def statements_recorded(pg: Pg) -> int:
    """How many statements of this database pg_stat_statements holds, besides acgs-verify's own (DB-06's evidence:
    none, as after pg_stat_statements_reset(), is nothing to judge)."""
    return int(pg.value(f"SELECT count(*) FROM pg_stat_statements s WHERE {APPLICATION_STATEMENTS}", {"ours": OURS}))


def slow_statements(pg: Pg, mean_ms: float, limit: int = 10) -> list[dict[str, Any]]:
    """Statements whose mean execution time exceeds `mean_ms`, slowest first (DB-06): the runbook's
    `SELECT query, mean_time, calls FROM pg_stat_statements ORDER BY mean_time DESC LIMIT 10`, without the
    statements acgs-verify itself sent (STATEMENT_MARK)."""
    from psycopg import sql

    cols = {r["column_name"] for r in pg.rows(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'pg_stat_statements'")}
    mean = "mean_exec_time" if "mean_exec_time" in cols else "mean_time"  # renamed in PostgreSQL 13
    rows = pg.rows(sql.SQL(
        "SELECT s.query, s.calls, round(s.{mean}::numeric, 1)::float AS mean_ms FROM pg_stat_statements s"
        " WHERE s.{mean} > %(ms)s AND " + APPLICATION_STATEMENTS + " ORDER BY s.{mean} DESC LIMIT %(n)s").format(
        mean=sql.Identifier(mean)), {"ms": mean_ms, "n": limit, "ours": OURS})
    for r in rows:
        r["query"] = _truncate(r["query"])
    return rows


def replication(pg: Pg) -> list[dict[str, Any]]:
    """Standbys streaming from this primary (pg_stat_replication): name, address, state, replay lag in
    seconds (None when the server has no fresh sample) and bytes not yet replayed (DB-07).

    ProbeError when the role may see that standbys exist but not how they are (not superuser, not in
    pg_read_all_stats / pg_monitor): PostgreSQL then leaves every column but the pid and the name NULL, and a
    NULL state is no "not streaming"."""
    rows = pg.rows(
        "SELECT application_name AS name, host(client_addr) AS address, state,"
        " round(extract(epoch FROM replay_lag)::numeric, 1)::float AS replay_lag_seconds,"
        " pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint AS replay_bytes_behind"
        " FROM pg_stat_replication ORDER BY application_name")
    hidden = [r for r in rows if r["state"] is None]  # a wal sender always has a state for those who may see it
    if hidden:
        role = pg.value("SELECT current_user")
        raise ProbeError(f"{pg.label}: role {role} cannot see the state, address or lag of "
                         f"{plural(len(hidden), 'replica')} in pg_stat_replication (not superuser, not in "
                         "pg_monitor or pg_read_all_stats); grant pg_monitor to judge replication")
    return rows


def replica_lag(pg: Pg, settle_seconds: float = 0.3) -> dict[str, Any]:
    """How far a standby's replay is behind, asked of the standby itself (DB-07).

    Replay that has caught up with the WAL received counts as 0 s. Replay that stays behind what was
    received (checked twice, `settle_seconds` apart, so WAL arriving right now is not mistaken for lag)
    is as old as the last transaction it replayed: now() - pg_last_xact_replay_timestamp().
    """
    query = ("SELECT pg_is_in_recovery() AS in_recovery,"
             " CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() END AS paused,"
             " pg_last_wal_receive_lsn()::text AS received, pg_last_wal_replay_lsn()::text AS replayed,"
             " pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::bigint AS behind,"
             " extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float AS since_last_replay")
    first = pg.rows(query)[0]
    if not first["in_recovery"]:
        raise ProbeError(f"{pg.label} is not a standby (pg_is_in_recovery() is false)")
    row = first
    if (first["behind"] or 0) > 0:
        time.sleep(settle_seconds)
        row = pg.rows(query)[0]
        caught_up = pg.value("SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), %s::pg_lsn) >= 0",
                             (first["received"],))
        if caught_up:
            row = {**row, "behind": 0}
    lag = float(row["since_last_replay"] or 0.0) if (row["behind"] or 0) > 0 else 0.0
    return {"lag_seconds": round(lag, 1), "paused": bool(row["paused"]), "bytes_behind": int(row["behind"] or 0),
            "received": row["received"], "replayed": row["replayed"]}


def replication_lags(pool: PgPool, database: Database) -> dict[str, Any] | None:
    """Replay lag of every replica of `database`, seen from the primary and asked of each replica the profile
    lists (DB-07); None when there is no replica at all.

    -> {'lag_seconds': {'walreceiver@127.0.0.1 (streaming)': 0.0, 'postgresql://acgs@db-2:5432/acgs_production': 0.0},
        'not_streaming': [], 'pg_stat_replication': [...], 'replicas': {...}}
    """
    standbys = replication(pool.get(database))
    asked = {display_url(dsn): replica_lag(pool.replica(database, dsn)) for dsn in database.replicas}
    if not standbys and not asked:
        return None
    lags = {f"{s['name']}@{s['address']} ({s['state']})": s["replay_lag_seconds"] or 0.0 for s in standbys}
    lags.update({dsn + (" (replay paused)" if r["paused"] else ""): r["lag_seconds"] for dsn, r in asked.items()})
    not_streaming = [s["name"] for s in standbys if s["state"] != "streaming"]
    # a replica whose replay is paused still receives WAL (pg_stat_replication says streaming) but applies none:
    # it serves ever older data, however small its lag looks right after the pause
    not_streaming += [f"{dsn} (replay paused)" for dsn, r in asked.items() if r["paused"]]
    if len(standbys) < len(asked):
        not_streaming.append(f"{plural(len(asked) - len(standbys), 'listed replica')} missing from pg_stat_replication")
    return {"lag_seconds": lags, "not_streaming": not_streaming, "pg_stat_replication": standbys, "replicas": asked}


def cache_hit(pg: Pg) -> tuple[int, int]:
    """(blks_hit, blks_read) of this database since its statistics were reset (DB-08)."""
    row = pg.rows("SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()")[0]
    return int(row["blks_hit"]), int(row["blks_read"])


def stale_tables(pg: Pg, days: float) -> tuple[int, list[dict[str, Any]]]:
    """(user tables, those whose last analyze or autoanalyze is older than `days` or never happened) (DB-09)."""
    rows = pg.rows(
        "SELECT schemaname || '.' || relname AS table, greatest(last_analyze, last_autoanalyze) AS analyzed"
        " FROM pg_stat_user_tables ORDER BY 1")
    if not rows:  # pg_stat_user_tables lists every table whatever the role's privileges: there is none
        raise ProbeError(f"{pg.label}: pg_stat_user_tables lists no user table in this database "
                         "(the wrong database, or an empty one); no statistics to judge")
    cutoff = pg.value("SELECT now() - make_interval(secs => %s)", (days * 86400,))
    stale = [{"table": r["table"], "last_analyzed": r["analyzed"].isoformat(timespec="seconds")
              if r["analyzed"] else "never"} for r in rows if r["analyzed"] is None or r["analyzed"] < cutoff]
    return len(rows), stale


def rows_older_than(pg: Pg, table: str, days: float) -> tuple[int, str | None]:
    """(rows of `table` created more than `days` ago, the oldest created_at) (DB-10); ProbeError when the role
    sees no row of the table at all (require_rows)."""
    from psycopg import sql

    require_rows(pg, table, "judge retention")

    row = pg.rows(sql.SQL(
        "SELECT count(*) AS n, min(created_at) AS oldest FROM {t}"
        " WHERE created_at < now() - make_interval(secs => %(s)s)").format(t=_ident(table)),
        {"s": days * 86400})[0]
    return int(row["n"]), row["oldest"].isoformat(timespec="seconds") if row["oldest"] else None


def decision_compliance(pg: Pg, database: Database) -> tuple[int, int]:
    """(compliant, all) governance decisions in the audit table within the database's compliance window
    (CC-04): rows of `decision_event_type` whose event_data->>compliance_field is true. ProbeError when the role
    sees no row of the table at all (require_rows): hidden decisions are not an absence of decisions."""
    from psycopg import sql

    require_rows(pg, database.audit_table, "count governance decisions")

    row = pg.rows(sql.SQL(
        "SELECT count(*) AS total, count(*) FILTER (WHERE (event_data ->> %(f)s)::boolean) AS compliant"
        " FROM {t} WHERE event_type = %(e)s AND timestamp > now() - make_interval(secs => %(s)s)"
    ).format(t=_ident(database.audit_table)),
        {"f": database.compliance_field, "e": database.decision_event_type,
         "s": database.compliance_window_hours * 3600})[0]
    return int(row["compliant"]), int(row["total"])


def visibility(pg: Pg, table: str) -> dict[str, Any]:
    """What this session's role can see of `table`, from facts row-level security does not hide: the planner's
    estimate (pg_class.reltuples) and the live-row counter (pg_stat_user_tables.n_live_tup).

    -> {'role': 'acgs_monitor', 'visible': False, 'estimated_rows': 3000, 'row_security': True,
        'bypasses_rls': False, 'owner': 'acgs_app'}
    """
    facts = pg.rows(
        "SELECT current_user AS role, c.relrowsecurity AS row_security, c.relforcerowsecurity AS forced,"
        " pg_get_userbyid(c.relowner) AS owner, greatest(c.reltuples, 0)::bigint AS reltuples,"
        " coalesce(pg_stat_get_live_tuples(c.oid), 0) AS live,"
        " (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user) AS bypasses_rls"
        " FROM pg_class c WHERE c.oid = to_regclass(%s)", (table,))
    if not facts:
        raise ProbeError(f"{pg.label}: no table {table} in this database (or not on the role's search_path)")
    f = facts[0]
    from psycopg import sql

    visible = bool(pg.value(sql.SQL("SELECT EXISTS (SELECT 1 FROM {t})").format(t=_ident(table))))
    return {"role": f["role"], "visible": visible, "estimated_rows": int(max(f["reltuples"], f["live"])),
            "row_security": bool(f["row_security"]), "bypasses_rls": bool(f["bypasses_rls"]),
            "owner": f["owner"], "forced": bool(f["forced"])}


def require_rows(pg: Pg, table: str, purpose: str) -> dict[str, Any]:
    """visibility(), or ProbeError when the role sees no row of `table`: that it holds nothing wrong is then not
    known. 'role acgs_monitor sees 0 of audit_logs' 3000 rows (row-level security ...); cannot verify the chain'."""
    seen = visibility(pg, table)
    if seen["visible"]:
        return seen
    rls = seen["row_security"] and not seen["bypasses_rls"] and (seen["role"] != seen["owner"] or seen["forced"])
    if seen["estimated_rows"]:
        why = (f"row-level security on {table} hides them from it; only its policies' roles and the owner "
               f"{seen['owner']} see them" if rls else "row-level security?")
        raise ProbeError(f"role {seen['role']} sees 0 of {table}' {seen['estimated_rows']} rows ({why}); "
                         f"cannot {purpose}")
    if rls:
        raise ProbeError(f"role {seen['role']} sees no row of {table}, which has row-level security on, and the "
                         f"statistics count none (empty, or never analyzed); cannot {purpose}")
    raise ProbeError(f"{table} is empty (role {seen['role']} sees no row, and the statistics count none); "
                     f"cannot {purpose}")


# what the real systems write as the predecessor of a chain's first row
_GENESIS = ("({c} IS NULL OR btrim({c}) = '' OR {c} ~ '^(0x)?0+$'"
            " OR lower(btrim({c})) IN ('genesis', 'none', 'null'))")
# the columns a chain may be kept per, tried in this order: the first no link crosses names the chains
CHAIN_PARTITIONS = ("tenant_id", "service_name")
CHAINS_SHOWN = 100  # audit_chain's per_chain: a fleet of tenants is counted in full, listed up to this many


def _columns(pg: Pg, table: str) -> list[str]:
    return [r["attname"] for r in pg.rows(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped"
        " ORDER BY attnum", (table,))]


def audit_chain(pg: Pg, table: str, expected_hash: str, max_rows: int) -> dict[str, Any]:
    """The hash chains of the newest `max_rows` audit rows (by timestamp), followed link by link (CC-05).

    -> {'rows': 3000, 'chains': {'by': 'tenant_id', 'count': 5}, 'breaks': 1,
        'first_break': {'id': 1501, 'chain': 'tenant-2', 'kind': 'names no row', 'prev_hash': '..', 'ids': [1501]},
        'wrong_hash': 0, 'first_wrong_hash': None,
        'per_chain': [{'chain': 'tenant-1', 'rows': 600, 'wrong_hash': 0, 'breaks': 0}, ...]}
    Each row's prev_hash names the row whose current_hash it is, or is a genesis value (NULL, '', zeros,
    'genesis'). A break is a row whose prev_hash names no row of the table (kind 'names no row'), or two rows
    naming the same predecessor (kind 'fork', `ids` both). Chains are per tenant (or per service) when no link
    crosses from one tenant to another and there are several; else one chain. All of it runs in SQL.
    ProbeError when the role sees no row (require_rows).
    """
    from psycopg import sql

    require_rows(pg, table, "verify the chain")
    cols = _columns(pg, table)
    ts = next((sql.Identifier(c) for c in ("timestamp", "created_at") if c in cols), sql.Identifier("id"))
    parts = [c for c in CHAIN_PARTITIONS if c in cols]
    extra = sql.SQL("").join(sql.SQL(", {}::text AS {}").format(sql.Identifier(c), sql.Identifier(c)) for c in parts)
    t = _ident(table)
    recent = sql.SQL(
        "WITH recent AS MATERIALIZED (SELECT id, {ts} AS ts, prev_hash, current_hash, constitutional_hash{extra}"
        " FROM {t} ORDER BY {ts} DESC, id DESC LIMIT %(n)s) ").format(ts=ts, extra=extra, t=t)
    genesis = sql.SQL(_GENESIS)
    params = {"n": max_rows, "h": expected_hash}
    crossings = sql.SQL("").join(
        sql.SQL(", count(*) FILTER (WHERE p.{c} IS DISTINCT FROM r.{c}) AS {x},"
                " count(DISTINCT r.{c}) AS {d}").format(c=sql.Identifier(c), x=sql.Identifier("cross_" + c),
                                                        d=sql.Identifier("distinct_" + c)) for c in parts)
    links = pg.rows(recent + sql.SQL(
        "SELECT count(*) AS links{x} FROM recent r JOIN recent p ON p.current_hash = r.prev_hash").format(
        x=crossings), params)[0]
    by = next((c for c in parts if links["links"] and not links["cross_" + c] and links["distinct_" + c] > 1), None)
    chain = sql.Identifier(by) if by else sql.SQL("NULL::text")
    summary = pg.rows(recent + sql.SQL(
        "SELECT count(*) AS rows, count(DISTINCT {chain}) AS chains,"
        " count(*) FILTER (WHERE constitutional_hash IS DISTINCT FROM %(h)s) AS wrong_hash FROM recent").format(
        chain=chain), params)[0]
    # a row whose predecessor is not in the window may still be in the table: looked up there, not guessed
    orphans = pg.rows(recent + sql.SQL(
        "SELECT id, {chain} AS chain, prev_hash, ts, count(*) OVER () AS n FROM recent r"
        " WHERE NOT {g} AND NOT EXISTS (SELECT 1 FROM {t} p WHERE p.current_hash = r.prev_hash)"
        " ORDER BY ts, id LIMIT 1").format(chain=chain, g=genesis.format(c=sql.SQL("r.prev_hash")), t=t), params)
    forks = pg.rows(recent + sql.SQL(
        "SELECT array_agg(id ORDER BY ts, id) AS ids, min({chain}) AS chain, prev_hash, min(ts) AS ts,"
        " count(*) OVER () AS n FROM recent WHERE NOT {g} GROUP BY prev_hash HAVING count(*) > 1"
        " ORDER BY min(ts) LIMIT 1").format(chain=chain, g=genesis.format(c=sql.SQL("prev_hash"))), params)
    found = [{"id": r["id"], "chain": r["chain"], "kind": "names no row", "prev_hash": r["prev_hash"],
              "ids": [r["id"]], "ts": r["ts"]} for r in orphans]
    found += [{"id": r["ids"][-1], "chain": r["chain"], "kind": "fork", "prev_hash": r["prev_hash"],
               "ids": list(r["ids"]), "ts": r["ts"]} for r in forks]
    first = min(found, key=lambda f: (f["ts"], f["id"])) if found else None
    if first:
        first.pop("ts")
    out: dict[str, Any] = {
        "rows": int(summary["rows"]), "chains": {"by": by, "count": int(summary["chains"]) if by else 1},
        "breaks": sum(int(r["n"]) for r in orphans[:1] + forks[:1]), "first_break": first,
        "wrong_hash": int(summary["wrong_hash"]), "first_wrong_hash": None}
    # each chain's own counts, for the report's steps (CC-05 per tenant); the first CHAINS_SHOWN by name
    per = pg.rows(recent + sql.SQL(
        "SELECT {chain} AS chain, count(*) AS rows,"
        " count(*) FILTER (WHERE constitutional_hash IS DISTINCT FROM %(h)s) AS wrong_hash"
        " FROM recent GROUP BY 1 ORDER BY 1 LIMIT %(c)s").format(chain=chain), {**params, "c": CHAINS_SHOWN})
    # NOT EXISTS in WHERE, as above: an anti-join, where a FILTER's subquery would scan the table per row
    orphaned = {r["chain"]: int(r["n"]) for r in pg.rows(recent + sql.SQL(
        "SELECT {chain} AS chain, count(*) AS n FROM recent r WHERE NOT {g}"
        " AND NOT EXISTS (SELECT 1 FROM {t} p WHERE p.current_hash = r.prev_hash) GROUP BY 1").format(
        chain=chain, g=genesis.format(c=sql.SQL("r.prev_hash")), t=t), params)}
    forked = {r["chain"]: int(r["forks"]) for r in pg.rows(recent + sql.SQL(
        "SELECT c AS chain, count(*) AS forks FROM (SELECT {chain} AS c FROM recent WHERE NOT {g}"
        " GROUP BY 1, prev_hash HAVING count(*) > 1) f GROUP BY c").format(
        chain=chain, g=genesis.format(c=sql.SQL("prev_hash"))), params)}
    out["per_chain"] = [{"chain": r["chain"], "rows": int(r["rows"]), "wrong_hash": int(r["wrong_hash"]),
                         "breaks": orphaned.get(r["chain"], 0) + forked.get(r["chain"], 0)} for r in per]
    if out["wrong_hash"]:
        out["first_wrong_hash"] = pg.rows(recent + sql.SQL(
            "SELECT id, constitutional_hash FROM recent WHERE constitutional_hash IS DISTINCT FROM %(h)s"
            " ORDER BY ts, id LIMIT 1"), params)[0]
    return out


# ------------------------------------------------------------- DB-11, DB-12, DB-13 (Database/Application Optimization)


# Sizes from pg_class.relpages (as of the last VACUUM/ANALYZE), not pg_total_relation_size(): that one takes a lock
# on the table, and a table someone holds ACCESS EXCLUSIVE (DB-05's case) would time these checks out.
_BLOCK = "current_setting('block_size')::bigint"
_TOTAL_PAGES = ("(c.relpages::bigint + coalesce((SELECT sum(ic.relpages) FROM pg_index x JOIN pg_class ic"
                " ON ic.oid = x.indexrelid WHERE x.indrelid = c.oid), 0)::bigint + coalesce((SELECT t.relpages"
                " FROM pg_class t WHERE t.oid = c.reltoastrelid), 0)::bigint)")


def table_sizes(pg: Pg) -> list[dict[str, Any]]:
    """Every user table with its live and dead tuples and sizes, largest first (DB-11/DB-12): the runbook's
    bloat query (sizes from pg_class, without a lock), joined with pg_stat_user_tables.

    -> [{'table': 'public.audit_logs', 'live': 3000, 'dead': 12, 'dead_percent': 0.4, 'size': '1208 kB',
         'table_size': '896 kB', 'seq_scan': 4, 'idx_scan': 120, 'autovacuum': True}]
    ProbeError when the role sees no user table at all: "no bloat" over nothing is not a pass.
    """
    rows = pg.rows(
        "SELECT s.schemaname || '.' || s.relname AS table, s.n_live_tup::bigint AS live, s.n_dead_tup::bigint AS dead,"
        " round(100.0 * s.n_dead_tup / nullif(s.n_live_tup + s.n_dead_tup, 0), 1)::float AS dead_percent,"
        f" pg_size_pretty({_TOTAL_PAGES} * {_BLOCK}) AS size, pg_size_pretty(c.relpages::bigint * {_BLOCK})"
        " AS table_size, s.seq_scan::bigint AS seq_scan, s.idx_scan::bigint AS idx_scan,"
        " coalesce(c.reloptions, '{}') @> ARRAY['autovacuum_enabled=false'] IS NOT TRUE AS autovacuum"
        " FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid"
        f" ORDER BY {_TOTAL_PAGES} DESC")
    if not rows:
        raise ProbeError(f"{pg.label}: pg_stat_user_tables shows no user table to this role")
    return rows


def unused_indexes(pg: Pg, min_rows: int) -> list[dict[str, Any]]:
    """Indexes never scanned since the statistics were reset, on tables of at least `min_rows` rows, leaving out
    those that enforce a constraint (primary key, unique): the runbook's 'Check index usage' (DB-12).

    -> [{'index': 'public.ix_scans_note', 'table': 'public.scans', 'size': '448 kB'}]
    """
    return pg.rows(
        "SELECT i.schemaname || '.' || i.indexrelname AS index, i.schemaname || '.' || i.relname AS table,"
        f" pg_size_pretty(ic.relpages::bigint * {_BLOCK}) AS size"
        " FROM pg_stat_user_indexes i JOIN pg_index x ON x.indexrelid = i.indexrelid"
        " JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_stat_user_tables t ON t.relid = i.relid"
        " WHERE i.idx_scan = 0 AND NOT x.indisunique AND NOT x.indisprimary"
        " AND t.n_live_tup >= %(n)s ORDER BY ic.relpages DESC LIMIT 20", {"n": min_rows})


def idle_in_transaction(pg: Pg, seconds: float) -> list[dict[str, Any]]:
    """Sessions `idle in transaction` for longer than `seconds`, longest first (DB-13), other than our own.

    -> [{'pid': 4242, 'application': 'billing', 'user': 'acgs', 'seconds': 75.2, 'query': 'SELECT 1'}]
    """
    return _sessions_over(pg, (
        "SELECT pid, application_name AS application, usename AS user,"
        " extract(epoch FROM now() - state_change)::float AS seconds, query FROM pg_stat_activity"
        " WHERE state IN ('idle in transaction', 'idle in transaction (aborted)')"
        f" AND now() - state_change > make_interval(secs => %(s)s) AND {_NOT_ME}"
        " ORDER BY state_change LIMIT 20"), seconds)


def sees_other_sessions(pg: Pg) -> bool:
    """Whether this role may read other sessions' state and query in pg_stat_activity (superuser or a member of
    pg_read_all_stats); without it their rows show `<insufficient privilege>` and nothing can be judged."""
    return bool(pg.value("SELECT rolsuper OR pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER')"
                         " FROM pg_roles WHERE rolname = current_user"))


def connections_by_application(pg: Pg) -> dict[str, int]:
    """Client sessions per application_name, other than acgs-verify's (DB-13, connection_pool_stats.py).

    -> {'acgs-auth-service': 12, '': 3}
    ProbeError when the role may not see other sessions (sees_other_sessions): a count of its own would say
    nothing about any pool.
    """
    if not sees_other_sessions(pg):
        raise ProbeError(f"{pg.label}: this role sees only its own sessions in pg_stat_activity "
                         "(grant pg_read_all_stats to judge connection pools)")
    rows = pg.rows("SELECT coalesce(application_name, '') AS app, count(*) AS n FROM pg_stat_activity"
                   f" WHERE backend_type = 'client backend' AND {_NOT_ME} GROUP BY 1 ORDER BY 2 DESC",
                   {"app": APPLICATION_NAME})
    return {r["app"]: int(r["n"]) for r in rows}
