"""An untidy host, built from real servers on loopback for discover's tests (issue 24, item 5):

- two PostgreSQL clusters, both trust-auth (no password needed): a bare one on the runbook's port (5432 + offset)
  and, on a port of the kernel's choosing, the one that holds acgs_production (seeded as the sandbox seeds it);
- two Redis servers without passwords: a bare one on the runbook's port, and the one the services hold
  connections to;
- three ACGS-like services (the sandbox's service app) started from subdirectories of an application tree that
  is not at the runbook's path, two of them reporting the same name (`auth`) on different ports;
- a backup root that only a backup script names (`BACKUP_DIR=` in the script a crontab line runs), holding ten
  nights of backups made the runbook's way (pg_dump | gzip, tar of config, application and logs).

Everything lives under one folder (the layout's prefix, as in the sandbox: logs in PREFIX/var/log/acgs); nothing
is written outside it but the clusters' data directories, which the postgres user must own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from acgs_verify.sandbox.constants import CONSTITUTIONAL_HASH
from tests.servers import server

REPO = Path(__file__).resolve().parent.parent
APP = "srv/acgs-platform"  # under the prefix; not the runbook's /home/acgs/ACGS, so only the walk up finds it
DUMPS = "srv/nightly-dumps"  # only the backup script names it
DAYS = 10


def _listens(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def postgres_cluster(name: str, port: int | None = None, seeded: bool = False) -> Iterator[dict]:
    """A trust-auth cluster on 127.0.0.1 (run as the postgres user when the tests run as root): on `port`, or on
    one the kernel picks; `seeded`: role acgs owning acgs_production with the sandbox's schema and audit rows."""
    import psycopg

    from acgs_verify.pgbin import server_bindir
    from acgs_verify.sandbox import pg_seed

    try:
        bindir = Path(server_bindir())
    except LookupError:
        pytest.skip("needs PostgreSQL (.ci/run installs it)")
    datadir = Path(tempfile.mkdtemp(prefix=f"acgs-untidy-{name}-", dir="/tmp"))
    user = "postgres" if os.geteuid() == 0 else None
    if user:
        shutil.chown(datadir, user)
    admin = "admin" if seeded else "acgs"
    subprocess.run([str(bindir / "initdb"), "-D", str(datadir), "-A", "trust", "-U", admin, "--no-sync"], user=user,
                   check=True, capture_output=True, timeout=120)
    with open(datadir / "postgresql.conf", "a") as conf:
        conf.write(pg_seed.server_settings(40) if seeded else
                   "listen_addresses = '127.0.0.1'\nunix_socket_directories = ''\nfsync = off\n")

    def argv(picked: int) -> list[str]:
        return [str(bindir / "postgres"), "-D", str(datadir), "-p", str(port or picked)]

    def accepts(picked: int) -> bool:
        with contextlib.suppress(psycopg.OperationalError), psycopg.connect(
                host="127.0.0.1", port=port or picked, user=admin, dbname="postgres", connect_timeout=2):
            return True
        return False

    try:
        with server(f"postgres {name}", argv, accepts, datadir / "server.log", 60, user=user) as (picked, proc):
            port = port or picked
            if seeded:
                with psycopg.connect(host="127.0.0.1", port=port, user=admin, dbname="postgres",
                                     autocommit=True) as conn:
                    pg_seed.create_role_and_database(conn, "acgs", "unused-under-trust", "acgs_production")
                with psycopg.connect(host="127.0.0.1", port=port, user=admin, dbname="acgs_production",
                                     autocommit=True) as conn:
                    pg_seed.create_schema(conn, "acgs")
                    pg_seed.seed(conn)
                    pg_seed.settle_statistics(conn)
            yield {"port": port, "datadir": str(datadir), "pid": proc.pid}
    finally:
        shutil.rmtree(datadir, ignore_errors=True)


@contextlib.contextmanager
def redis_on(directory: Path, port: int | None = None) -> Iterator[int]:
    """redis-server without a password on `port` (or the kernel's pick), no persistence."""
    import redis

    directory.mkdir(parents=True, exist_ok=True)

    def argv(picked: int) -> list[str]:
        return ["redis-server", "--port", str(port or picked), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                "no", "--dir", str(directory)]

    def answers(picked: int) -> bool:
        with contextlib.closing(redis.Redis(host="127.0.0.1", port=port or picked, socket_timeout=1,
                                            retry=None)) as client, contextlib.suppress(redis.ConnectionError):
            return bool(client.ping())
        return False

    with server("redis-server", argv, answers, directory / "redis.log", 15) as (picked, _):
        yield port or picked


def seed_cache(port: int) -> None:
    """What the ACGS services keep in their Redis: the constitutional hash (CC-06 reads it)."""
    import redis

    from acgs_verify.sandbox.components.redis import HASH_KEY

    with contextlib.closing(redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)) as client:
        client.set(HASH_KEY, CONSTITUTIONAL_HASH)


# a service of the sandbox's app that holds a connection to its Redis, as a real service's pool does; argv[3] is
# `uvicorn`, so ps shows a uvicorn server running the app on its port (the code holds no space: ps joins argv with
# spaces, and a code with spaces would push `uvicorn` past the words a server is recognised by)
HOLD_REDIS = ("held=__import__('socket').create_connection(('127.0.0.1',"
              "int(__import__('os').environ['UNTIDY_REDIS'])));"
              "held.sendall(b'PING\\r\\n');sys=__import__('sys');sys.argv=sys.argv[1:];"
              "__import__('uvicorn.main').main.main()")  # no space: ps shows argv joined by spaces


@contextlib.contextmanager
def service(prefix: Path, factory: str, cwd: Path, redis_port: int) -> Iterator[dict]:
    def argv(port: int) -> list[str]:
        return [sys.executable, "-c", HOLD_REDIS, "uvicorn", "--factory", f"acgs_verify.sandbox.service_app:{factory}",
                "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]

    cwd.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(prefix), "PYTHONPATH": str(REPO),
           "ACGS_SANDBOX_DIR": str(prefix), "UNTIDY_REDIS": str(redis_port)}
    with server(f"service {factory}", argv, _listens, prefix / "services.out", 20, cwd=cwd, env=env) as (port, p):
        yield {"port": port, "pid": p.pid, "cwd": str(cwd)}


def write_tree(prefix: Path) -> Path:
    """The application tree: config/ (a secret file and keys at 0600), policies, and the services' folders."""
    app = prefix / APP
    files = {"config/production.env": "JWT_SECRET_KEY=untidy-not-a-real-secret\n",
             "config/keys/app.key": "untidy application signing key (not a real key)\n",
             "config/policies/constitutional.rego": "package acgs.constitutional\n\nconstitutional_hash := "
                                                    f'"{CONSTITUTIONAL_HASH}"\n\ndefault allow := false\n',
             "README.md": "# ACGS\n"}
    for rel, text in files.items():
        path = app / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o600 if "config/" in rel and not rel.endswith(".rego") else 0o644)
    (prefix / "var/log/acgs").mkdir(parents=True, exist_ok=True)
    return app


def forget_statements(port: int) -> None:
    """pg_stat_statements without the fixture's own statements (the seeding, pg_dump's catalog queries): on a loaded
    test machine one of them can pass DB-06's 100 ms mean, which says nothing of a server in service."""
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user="admin", dbname="acgs_production", autocommit=True) as c:
        c.execute("SELECT pg_stat_statements_reset()")


def write_backups(prefix: Path, pg_port: int) -> Path:
    """DAYS nights of backups under PREFIX/DUMPS, the newest an hour old, and the crontab line and script that name
    that folder (the script is never run: it only has to be read)."""
    from acgs_verify.pgbin import server_bindir

    root, work = prefix / DUMPS, prefix / "run/backup-parts"
    work.mkdir(parents=True, exist_ok=True)
    dump = subprocess.run(f"{Path(server_bindir()) / 'pg_dump'} -h 127.0.0.1 -p {pg_port} -U acgs acgs_production"
                          f" | gzip -c > {work / 'database.sql.gz'}", shell=True, check=True, timeout=120,
                          capture_output=True)
    assert dump.returncode == 0
    for name, rel in (("config", f"{APP}/config/"), ("application", f"{APP}/"), ("logs", "var/log/acgs/")):
        res = subprocess.run(["tar", "-czf", str(work / f"{name}.tar.gz"), "-C", str(prefix), rel],
                             capture_output=True, timeout=60)
        assert res.returncode in (0, 1), res.stderr
    now = time.time()
    for k in range(DAYS):
        mtime = now - 3600 - k * 86400
        d = root / time.strftime("%Y%m%d", time.localtime(mtime))
        d.mkdir(parents=True)
        for part in work.iterdir():
            shutil.copyfile(part, d / part.name)
            os.utime(d / part.name, (mtime, mtime))
        os.utime(d, (mtime, mtime))
    script = prefix / "opt/acgs/bin/nightly-backup.sh"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(f"#!/bin/sh\n# nightly backup\nset -eu\nBACKUP_DIR={root}\nDATE=$(date +%Y%m%d)\n"
                      'mkdir -p "$BACKUP_DIR/$DATE"\n')
    cron = prefix / "etc/cron.d/acgs-backup"
    cron.parent.mkdir(parents=True, exist_ok=True)
    cron.write_text(f"SHELL=/bin/sh\n# the nightly dump\n30 2 * * * acgs {script} >/dev/null 2>&1\n")
    return root
