"""Database and Redis facts for the maintenance snapshot: which tables exist (with row estimates), how many keys.

>>> collect_state(profile)
{'tables': {'primary': {'public.audit_logs': 1200, 'public.policies': 14}},
 'redis': {'cache': {'keys': 3, 'names': ['acgs:constitutional_hash', ...]}}, 'errors': []}

Nothing is recorded for a profile without databases or Redis. Each read is one read-only query: PostgreSQL through
the checks' own kind of session (probes/postgres.py: read-only, with timeouts, named acgs-verify), Redis with DBSIZE
and a bounded SCAN. A source that cannot be read is named in `errors` and left out, so the comparison says it could
not compare instead of "everything vanished".
"""

from __future__ import annotations

from acgs_verify.profile import Profile
from acgs_verify.redact import one_line

MAX_KEY_NAMES = 1000  # name the keys of a small keyspace; a large one is compared by count only
MAX_SCAN_PAGES = 100  # SCAN COUNT 500 walks 1000 keys' table in a handful of pages

TABLES_SQL = """
SELECT n.nspname || '.' || c.relname AS name,
       COALESCE(NULLIF(c.reltuples, -1)::bigint, s.n_live_tup, 0) AS rows
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%'
ORDER BY 1
"""


def table_estimates(dsn: str, password: str | None, thresholds) -> dict[str, int]:
    """{schema.table: estimated rows} of one database, through the checks' own read-only session kind."""
    from acgs_verify.probes.postgres import connect

    pg = connect(dsn, password, thresholds)
    try:
        return {r["name"]: int(r["rows"]) for r in pg.rows(TABLES_SQL)}
    finally:
        pg.conn.close()


def redis_keys(url: str, password: str | None, timeout: float) -> dict:
    """{'keys': DBSIZE, 'names': sorted key names, or None when there are more than MAX_KEY_NAMES}."""
    from acgs_verify.probes.redis import bounded_client

    # each reply within `timeout` and MAX_REPLY_BYTES (probes/redis.py), and a bounded number of SCAN pages: a
    # server that answers every SCAN with another cursor and no key would otherwise be asked forever
    client = bounded_client(url, password, timeout, decode_responses=True)
    try:
        count = int(client.dbsize())
        names: list[str] | None = None
        if count <= MAX_KEY_NAMES:
            names, cursor = [], None
            for _ in range(MAX_SCAN_PAGES):
                cursor, page = client.scan(cursor=cursor or 0, count=500)
                names.extend(page)
                if len(names) > MAX_KEY_NAMES:  # the keyspace grew while we read it: compare by count
                    names = None
                    break
                if not int(cursor):
                    break
            else:
                names = None  # the scan did not end: compare by count
        return {"keys": count, "names": sorted(names) if names is not None else None}
    finally:
        client.close()


def collect_state(profile: Profile) -> dict:
    """Every database's tables and every Redis's key count the profile names (empty when it names none)."""
    state: dict = {"tables": {}, "redis": {}, "errors": []}
    timeout = profile.thresholds.connect_timeout_seconds
    secrets = profile.secret_values()
    for db in profile.databases:
        try:
            state["tables"][db.name] = table_estimates(db.dsn, profile.secret(f"databases.{db.name}"),
                                                       profile.thresholds)
        except Exception as exc:  # any driver error means the same here: this source is not compared
            state["errors"].append(f"database {db.name}: could not list tables: {one_line(exc, secrets)}")
    for r in profile.redis:
        try:
            state["redis"][r.name] = redis_keys(r.url, profile.secret(f"redis.{r.name}"), timeout)
        except Exception as exc:
            state["errors"].append(f"redis {r.name}: could not count keys: {one_line(exc, secrets)}")
    return state

