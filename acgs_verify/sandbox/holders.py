"""Processes that hold a fault in place: real sessions doing real things until the sandbox stops them.

    python -m acgs_verify.sandbox.holders long-query       # one session in pg_sleep
    python -m acgs_verify.sandbox.holders lock              # one session holding a lock, one blocked on it
    python -m acgs_verify.sandbox.holders idle N            # N idle sessions
    python -m acgs_verify.sandbox.holders redis-slow        # DEBUG SLEEP, again and again
    python -m acgs_verify.sandbox.holders idle-in-transaction  # one session idle in an open transaction

Connection details come from the environment (ACGS_HOLDER_DSN, PGPASSWORD / ACGS_HOLDER_REDIS_URL,
ACGS_HOLDER_REDIS_PASSWORD), never from the command line, where `ps` would show a password. Every
session names itself application_name=acgs-sandbox:<what>, so the sandbox can end exactly these.
"""

from __future__ import annotations

import os
import sys
import threading
import time

APP_PREFIX = "acgs-sandbox:"
FOREVER = 24 * 3600


def _pg(name: str, autocommit: bool = True):
    import psycopg

    return psycopg.connect(os.environ["ACGS_HOLDER_DSN"], application_name=APP_PREFIX + name,
                           autocommit=autocommit, connect_timeout=5)


def long_query() -> None:
    _pg("db-long-query").execute("SELECT pg_sleep(%s) /* acgs-sandbox: db-long-query */", (FOREVER,))


def lock() -> None:
    blocker = _pg("db-lock-blocker", autocommit=False)
    blocker.execute("LOCK TABLE policies IN ACCESS EXCLUSIVE MODE")  # and the transaction stays open
    waiter = _pg("db-lock-blocked")
    threading.Thread(target=lambda: waiter.execute("SELECT count(*) FROM policies"), daemon=True).start()
    time.sleep(FOREVER)


def idle(n: int) -> None:
    sessions = [_pg("db-saturation") for _ in range(n)]
    time.sleep(FOREVER)
    del sessions


def idle_in_transaction() -> None:
    session = _pg("db-idle-in-transaction", autocommit=False)
    session.execute("SELECT 1 /* acgs-sandbox: db-idle-in-transaction */")  # BEGIN, and nothing ever ends it
    time.sleep(FOREVER)


def redis_slow() -> None:
    import redis

    def busy() -> None:
        client = redis.Redis.from_url(os.environ["ACGS_HOLDER_REDIS_URL"],
                                      password=os.environ.get("ACGS_HOLDER_REDIS_PASSWORD"), socket_timeout=5)
        while True:
            client.execute_command("DEBUG", "SLEEP", "0.2")  # the server does nothing else for 200 ms

    # two connections take turns, so the server is asleep nearly all the time, not just now and then
    for _ in range(2):
        threading.Thread(target=busy, daemon=True).start()
    time.sleep(FOREVER)


def main(argv: list[str]) -> int:
    kind = argv[0] if argv else ""
    if kind == "long-query":
        long_query()
    elif kind == "lock":
        lock()
    elif kind == "idle" and len(argv) == 2 and argv[1].isdigit():
        idle(int(argv[1]))
    elif kind == "redis-slow":
        redis_slow()
    elif kind == "idle-in-transaction":
        idle_in_transaction()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
