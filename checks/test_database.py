"""Database: runbook 'Database Issues', 'Database Metrics', 'Performance Optimization', 'Database Maintenance'.

Every session is read-only (acgs_verify.probes.postgres); `pg.get(database)` reuses one per worker.
"""

from acgs_verify.check import ProbeError, runbook
from acgs_verify.probes import pg_server, postgres, processes, units
from acgs_verify.words import plural


@runbook("DB-01")
def test_connect_and_select_1(database, pg, thresholds, check):
    """psql -h localhost -U acgs -d acgs_production -c "SELECT 1;" """
    ms = postgres.select_one(pg.get(database))
    limit = thresholds.db_connect_timeout_seconds
    check.below(ms / 1000, limit, "s", what="an answer in", shown=f"SELECT 1 answered in {ms:.0f} ms",
                value=round(ms, 1))


@runbook("DB-02")
def test_postgresql_server_is_running(database_host, hosts, pg, check):
    """sudo systemctl status postgresql  (the server is the one that listens on the database's port on its host,
    asked who it is: its data directory, its session's parent process, its start time)"""
    db, host = database_host, database_host.host  # the database, and the host its server runs on
    _, port = postgres.host_port(db.dsn)
    try:
        says = pg_server.server_says(pg.get(database_host.database))
    except ProbeError:  # a server that cannot be asked is judged by its port alone (DB-01 says why)
        says = None
    seen = pg_server.identify_server(processes.port_owners(hosts, host), port, db.process, says,
                                     lambda pid: pg_server.uptime(hosts, host, pid))
    found = [seen.measured]
    if seen.ok and seen.owner:
        server = pg_server.postgres_server(hosts, host, seen.owner)
        found.append(f"data directory {server['data_directory']}, {server['version']}")
    if seen.ok is not None and db.unit and units.uses_systemd(hosts, host):
        state = units.unit_state(hosts, host, db.unit)
        found.append(f"{db.unit} is {state}")
        seen = seen if state == "active" else processes.Identity(False, seen.measured, seen.owner, seen.warning)
    if seen.ok is None:
        check.skip(seen.measured)
    if seen.warning:
        check.warn(seen.warning)
    expected = f"a PostgreSQL server owning port {port}" + (", matching the pattern" if db.process else "")
    check.measured("; ".join(found), expected, value=list(seen.pids))
    if not seen.ok:
        check.fail(f"{'; '.join(found)}; expected {expected}")


@runbook("DB-03")
def test_connections_below_limit(database, pg, thresholds, check):
    """psql -c "SELECT count(*) FROM pg_stat_activity;" """
    used, most, source = postgres.connection_usage(pg.get(database))
    percent = 100 * used / most
    limit = thresholds.db_connections_max_percent
    check.below(percent, limit, "%", shown=f"{used} of max_connections {most} in use ({percent:.0f} %; {source})",
                value=round(percent, 1))


@runbook("DB-04")
def test_no_long_running_queries(database, pg, thresholds, check):
    """SELECT pid, now() - query_start AS duration, query FROM pg_stat_activity
    WHERE (now() - query_start) > interval '5 minutes';"""
    limit = thresholds.db_long_query_seconds
    slow = postgres.long_running(pg.get(database), limit)
    if slow:
        check.evidence("long-running queries", slow)
    shown = "; ".join(f"pid {q['pid']} running {q['seconds']:g} s: {q['query']}" for q in slow[:3]) or "none"
    check.equals(len(slow), 0, what=f"queries running longer than {limit:g} s", value=[q["pid"] for q in slow],
                 shown=f"{plural(len(slow), 'query', 'queries')} running longer than {limit:g} s ({shown})")


@runbook("DB-05")
def test_no_blocked_locks(database, pg, thresholds, check):
    """SELECT blocked_locks.pid AS blocked_pid, ... blocking_locks.pid AS blocking_pid ...
    FROM pg_catalog.pg_locks blocked_locks ... WHERE NOT blocked_locks.granted;"""
    blocked = postgres.blocked_locks(pg.get(database))
    if blocked:
        check.evidence("blocked and blocking sessions", blocked)
    shown = "; ".join(f"pid {b['blocked_pid']} ({b['blocked_query']}) waiting "
                      + ("for a time hidden from this role" if b["waiting_seconds"] is None
                         else f"{b['waiting_seconds']:g} s")
                      + f" on pid {b['blocking_pid']} ({b['blocking_state']}: {b['blocking_query']})"
                      for b in blocked[:3])
    most = thresholds.db_blocked_locks_max
    check.at_most(len(blocked), most, what="blocked sessions",
                  shown=f"{plural(len(blocked), 'blocked session')}" + (f": {shown}" if shown else ""),
                  value=[(b["blocked_pid"], b["blocking_pid"]) for b in blocked])


@runbook("DB-06")
def test_no_slow_statements(database, pg, thresholds, check):
    """SELECT query, mean_time, calls FROM pg_stat_statements ORDER BY mean_time DESC LIMIT 10;"""
    db = pg.get(database)
    reason = postgres.statements_unavailable(db)
    if reason:
        check.skip(reason)
    if not postgres.statements_recorded(db):
        check.skip("pg_stat_statements holds no statement of this database but acgs-verify's own (reset since the "
                   "last one?): nothing to judge yet")
    limit = thresholds.db_statement_mean_ms_max
    slow = postgres.slow_statements(db, limit)
    if slow:
        check.evidence("slowest statements", slow)
    shown = "; ".join(f"{s['mean_ms']:g} ms mean over {s['calls']} calls: {s['query']}" for s in slow[:3])
    check.equals(len(slow), 0, what=f"statements with a mean above {limit:g} ms",
                 shown=f"{plural(len(slow), 'statement')} with a mean above {limit:g} ms" +
                 (f" ({shown})" if shown else ""), value=[s["mean_ms"] for s in slow])


@runbook("DB-07")
def test_replication_lag(database, pg, thresholds, check):
    """SELECT client_addr, state, replay_lag FROM pg_stat_replication;  (on each replica: now() -
    pg_last_xact_replay_timestamp() while replay is behind)"""
    lags = postgres.replication_lags(pg, database)
    if lags is None:
        check.skip("no replicas: pg_stat_replication is empty and the profile lists none")
    check.evidence("replication", lags)
    limit = thresholds.db_replication_lag_seconds_max
    worst = max(lags["lag_seconds"].values())
    shown = ", ".join(f"{name} {lag:g} s" for name, lag in lags["lag_seconds"].items())
    trouble = f"; not streaming: {', '.join(lags['not_streaming'])}" if lags["not_streaming"] else ""
    check.below(worst, limit, "s", what="replay lag", shown=f"replay lag {shown}{trouble}", value=worst,
                also=(not trouble, "every replica streaming"))


@runbook("DB-08")
def test_buffer_cache_hit_ratio(database, pg, thresholds, check):
    """SELECT sum(blks_hit) / (sum(blks_hit) + sum(blks_read)) FROM pg_stat_database;"""
    hit, read = postgres.cache_hit(pg.get(database))
    if hit + read == 0:
        check.skip("no block reads since the statistics were reset: no ratio to judge yet")
    ratio = 100 * hit / (hit + read)
    limit = thresholds.db_cache_hit_percent_min
    check.at_least(ratio, limit, "%", shown=f"{ratio:.2f} % ({plural(hit, 'hit')}, {plural(read, 'read')})",
                   value=round(ratio, 2))


@runbook("DB-09")
def test_statistics_are_fresh(database, pg, thresholds, check):
    """SELECT schemaname, relname, last_analyze, last_autoanalyze FROM pg_stat_user_tables;"""
    days = thresholds.db_stats_max_age_days
    total, stale = postgres.stale_tables(pg.get(database), days)
    shown = ", ".join(f"{t['table']} (analyzed {t['last_analyzed']})" for t in stale[:5])
    check.equals(len(stale), 0, what=f"tables not analyzed in {days:g} days", value=[t["table"] for t in stale],
                 shown=f"{len(stale)} of {plural(total, 'table')} not analyzed in {days:g} days" +
                 (f": {shown}" if shown else ""))


@runbook("DB-10", applies=lambda t: bool(t.audit_table))
def test_audit_log_retention(database, pg, thresholds, check):
    """DELETE FROM audit_logs WHERE created_at < NOW() - INTERVAL '90 days';  (weekly maintenance)"""
    days = thresholds.audit_retention_days
    table = database.audit_table
    n, oldest = postgres.rows_older_than(pg.get(database), table, days)
    check.equals(n, 0, what=f"{table} rows older than {days:g} days",
                 shown=f"{plural(n, table + ' row')} older than {days:g} days" + (f" (oldest {oldest})" if n else ""))


@runbook("DB-11")
def test_table_bloat(database, pg, thresholds, check):
    """SELECT schemaname, tablename, pg_size_pretty(pg_total_relation_size(...)) FROM pg_tables ...  (Analyze bloat)"""
    tables = postgres.table_sizes(pg.get(database))
    check.evidence("table sizes (the runbook's bloat query)", tables[:20])
    floor, limit = thresholds.db_bloat_min_rows, thresholds.db_dead_tuple_percent_max
    big = [t for t in tables if t["live"] + t["dead"] >= floor]
    bloated = [t for t in big if (t["dead_percent"] or 0) >= limit]
    shown = "; ".join(f"{t['table']} {t['dead_percent']:g} % dead ({t['dead']} of {t['live'] + t['dead']} rows, "
                      f"{t['size']}{'' if t['autovacuum'] else ', autovacuum off'})" for t in bloated[:3])
    check.equals(len(bloated), 0, what=f"tables over {floor} rows with {limit:g} % or more dead tuples",
                 shown=f"{len(bloated)} of {plural(len(big), 'table')} over {floor} rows "
                 f"(of {plural(len(tables), 'user table')}) with {limit:g} % or more dead tuples" +
                 (f": {shown}" if shown else ""), value=[t["table"] for t in bloated])


@runbook("DB-12")
def test_index_usage(database, pg, thresholds, check):
    """SELECT schemaname, tablename, attname, n_distinct, correlation FROM pg_stats ...  (Check index usage; warns)"""
    db, floor = pg.get(database), thresholds.db_bloat_min_rows
    tables = postgres.table_sizes(db)
    unused = postgres.unused_indexes(db, floor)
    scanned = [t for t in tables if t["live"] >= floor and t["seq_scan"] > (t["idx_scan"] or 0)]
    check.measured(f"{plural(len(unused), 'unused index', 'unused indexes')} and {plural(len(scanned), 'table')} "
                   "read mostly by sequential scans among "
                   f"{plural(len(tables), 'user table')} (tables over {floor} rows)", expected="warns only",
                   value={"unused_indexes": [i["index"] for i in unused], "seq_scanned": [t["table"] for t in scanned]})
    findings = [f"index {i['index']} on {i['table']} ({i['size']}) never scanned" for i in unused[:3]]
    findings += [f"{t['table']} ({t['live']} rows) {t['seq_scan']} sequential vs {t['idx_scan'] or 0} index scans"
                 for t in scanned[:3]]
    if findings:
        check.warn("; ".join(findings))


@runbook("DB-13")
def test_connection_pools(database, pg, thresholds, check):
    """python scripts/connection_pool_stats.py  (idle in transaction; connections per application vs pool size)"""
    db, limit = pg.get(database), thresholds.db_idle_in_transaction_seconds_max
    by_app = postgres.connections_by_application(db)  # refuses a role that cannot see other sessions
    idle = postgres.idle_in_transaction(db, limit)
    over = {app: (n, database.pools[app]) for app, n in by_app.items()
            if app in database.pools and n > database.pools[app]}
    if idle:
        check.evidence("sessions idle in transaction", idle)
    problems = [f"pid {s['pid']} ({s['application'] or 'no application_name'}) idle in transaction "
                f"{s['seconds']:g} s" for s in idle[:3]]
    problems += [f"{app} holds {n} connections, pool size {size}" for app, (n, size) in over.items()]
    pools = ", ".join(f"{a or '(none)'} {n}" + (f"/{database.pools[a]}" if a in database.pools
                                                 else "") for a, n in by_app.items()) or "none but acgs-verify"
    check.equals(len(idle), 0, what=f"sessions idle in transaction over {limit:g} s",
                 shown=f"{plural(len(idle), 'session')} idle in transaction over {limit:g} s; "
                 f"connections per application: {pools}" + (f" ({'; '.join(problems)})" if problems else ""),
                 also=(not over, "each application within its pool size"),
                 value={"idle_in_transaction": [s["pid"] for s in idle], "connections": by_app})
