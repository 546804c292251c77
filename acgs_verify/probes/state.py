"""Database and Redis facts for the maintenance snapshot: which tables exist (with row estimates), how many keys.

>>> table_estimates(pg.get(database))       # through the session DB-01 used: no connection of its own
{'public.audit_logs': 1200, 'public.policies': 14}
>>> redis_keys(caches.get(cache))           # through the RedisProbe RD-01 used, and its read-only allow-list
{'keys': 3, 'names': ['acgs:constitutional_hash', ...]}

Both read through the connections the run's checks already hold (probes/postgres.py: read-only, with timeouts;
probes/redis.py: DBSIZE and a bounded SCAN, which its allow-list lets through), so the gate stage judges what the
run measured instead of connecting again (acgs_verify/run_state.py records them while the run goes on).
"""

from __future__ import annotations

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


def table_estimates(pg) -> dict[str, int]:
    """{schema.table: estimated rows} of one database, over an open read-only session (probes.postgres.Pg)."""
    return {r["name"]: int(r["rows"]) for r in pg.rows(TABLES_SQL)}


def redis_keys(cache) -> dict:
    """{'keys': DBSIZE, 'names': sorted key names, or None when there are more than MAX_KEY_NAMES}, over an open
    probes.redis.RedisProbe: each reply within its deadline and size cap, and a bounded number of SCAN pages (a
    server that answers every SCAN with another cursor and no key would otherwise be asked forever)."""
    count = int(cache.command("DBSIZE"))
    names: list[str] | None = None
    if count <= MAX_KEY_NAMES:
        names, cursor = [], 0
        for _ in range(MAX_SCAN_PAGES):
            cursor, page = _scan_reply(cache.command("SCAN", cursor, "COUNT", 500))
            names.extend(page)
            if len(names) > MAX_KEY_NAMES:  # the keyspace grew while we read it: compare by count
                names = None
                break
            if not cursor:
                break
        else:
            names = None  # the scan did not end: compare by count
    return {"keys": count, "names": sorted(names) if names is not None else None}


def _scan_reply(reply) -> tuple[int, list[str]]:
    """(next cursor, key names) from a SCAN reply, whatever shape redis-py parsed it into; ValueError for a reply
    that is not one (a hostile server's), which the caller records as an error."""
    if not isinstance(reply, list | tuple) or len(reply) != 2 or not isinstance(reply[1], list | tuple):
        raise ValueError(f"SCAN answered {str(reply)[:80]!r}, not a cursor and a list of keys")
    return int(reply[0]), [str(k) for k in reply[1]]
