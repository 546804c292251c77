"""The restore drill (BK-07): the latest dump restored into a scratch database made for it, then dropped.

>>> drill = restore_drill(admin_dsn, password, Path(".../20250701/database.sql.gz"), "plain",
...                       ["audit_logs", "policies"], timeout=600)
>>> drill.restored, drill.counts, drill.dropped
(True, {'audit_logs': 3000, 'policies': 40}, True)
>>> restore_drill(..., Path(".../20250701_020000/database.sql"), "plain", ...)  # a plain dump: fed as it is
>>> drill.error                       # when it did not restore: psql's or pg_restore's own last line
'psql:<stdin>:1234: ERROR:  invalid input syntax for type bigint: "x1"'

The one probe that writes, and only to a database it creates (acgs_verify_drill_<time>_<pid>_<random>) and drops
again: in a `finally`, with SIGINT and SIGTERM held back while it drops (they take effect right after), and with
SIGTERM raising KeyboardInterrupt for the drill's duration, so a plain `kill` goes through that `finally` too.
A drill database left behind by a process killed outright (SIGKILL) is dropped by the next drill on that server
once it is older than LEFTOVER_AGE_SECONDS.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from acgs_verify.probes.backups import pg_tool, scan_archive
from acgs_verify.probes.errors import ProbeError
from acgs_verify.redact import display_url, mask, one_line

PREFIX = "acgs_verify_drill_"
NAME_RE = re.compile(rf"^{PREFIX}(\d{{10}})_\d+_[0-9a-f]{{8}}$")
LEFTOVER_AGE_SECONDS = 3600


@dataclass
class DrillResult:
    database: str
    restored: bool = False
    error: str | None = None  # why the restore failed (the tool's last error line)
    counts: dict[str, int | None] = field(default_factory=dict)  # restore table -> rows; None: table missing
    dropped: bool = False
    leftovers: list[str] = field(default_factory=list)  # older drill databases dropped first
    seconds: float = 0.0


@dataclass
class DrillPlan:
    skip: str | None = None  # why the drill does not run
    database: object = None  # the profile's Database
    password: str | None = None


def drill_plan(profile, gate: str | None) -> DrillPlan:
    """Whether BK-07 runs, against which database and with which credential, or why not."""
    from acgs_verify.catalog import GATES

    wanted = profile.backups.restore_drill
    if wanted is None:
        wanted = bool(gate and GATES.get(gate, {}).get("restore_drill"))
    if not wanted:
        return DrillPlan("the restore drill is opt-in: --set backups.restore_drill=true "
                         "(on by default in the pre-maintenance gate)")
    name = profile.backups.restore_database
    db = next((d for d in profile.databases if name is None or d.name == name), None)
    if db is None:
        return DrillPlan(f"backups.restore_database {name!r} is not a database of the profile" if name
                         else "the profile names no database to restore next to")
    if not db.admin_dsn:
        return DrillPlan(f"no credential that may create databases: databases.{db.name}.admin_dsn (with "
                         "admin_password_env or admin_password_file) is not set")
    return DrillPlan(None, db, profile.secret(f"admin:databases.{db.name}"))


def drill_problems(drill: DrillResult, live: dict[str, int | None], tolerance: float | None) -> list[str]:
    """What is wrong with a drill's outcome, one phrase each; [] when it restored and every table has rows."""
    if not drill.restored:
        problems = [f"the dump did not restore: {drill.error}"]
    else:
        problems = []
        for table, rows in drill.counts.items():
            if rows is None:
                problems.append(f"table {table} missing from the restored copy")
            elif rows == 0:
                problems.append(f"table {table} restored with no rows")
            elif tolerance is not None and live.get(table):
                off = abs(rows - live[table]) * 100 / live[table]
                if off > tolerance:
                    problems.append(f"{table}: {rows} rows restored vs {live[table]} live ({off:.1f} % off, "
                                    f"tolerance {tolerance:g} %)")
    if not drill.dropped:
        problems.append(f"the scratch database {drill.database} could not be dropped")
    return problems


def scratch_name() -> str:
    return f"{PREFIX}{int(time.time())}_{os.getpid()}_{secrets.token_hex(4)}"


def restore_drill(admin_dsn: str, password: str | None, dump: Path, dump_format: str, tables: list[str],
                  timeout: float, bindir: str | None = None) -> DrillResult:
    """Create a scratch database, restore `dump` into it, count `tables`, drop it (see the module doc)."""
    result = DrillResult(scratch_name())
    started = time.monotonic()
    hide = [password] if password else []
    tool = pg_tool("pg_restore" if dump_format == "custom" else "psql", bindir)
    with _terminate_as_interrupt():
        admin = _connect(admin_dsn, password, None, hide)
        try:
            result.leftovers = _drop_leftovers(admin)
            try:
                admin.execute(_sql("CREATE DATABASE {} TEMPLATE template0", result.database))
                result.error = _restore(tool, dump, dump_format, _dsn_for(admin_dsn, result.database), password,
                                        timeout - (time.monotonic() - started))
                result.restored = result.error is None
                if result.restored:
                    result.counts = _count(admin_dsn, password, result.database, tables, hide)
            finally:
                with _signals_deferred():
                    result.dropped = _drop(admin, admin_dsn, password, result.database, hide)
        finally:
            with contextlib.suppress(Exception):
                admin.close()
    result.seconds = time.monotonic() - started
    if result.error:
        result.error = mask(result.error, hide)
    return result


def live_counts(pg, tables: list[str]) -> dict[str, int | None]:
    """Row counts of `tables` in the live database through a read-only session (None: no such table)."""
    return _counts(pg.value, tables)


def _counts(value, tables: list[str]) -> dict[str, int | None]:
    from acgs_verify.probes.postgres import _ident

    out: dict[str, int | None] = {}
    for t in tables:
        exists = value("SELECT to_regclass(%s) IS NOT NULL", (t,))
        out[t] = int(value(_sql_ident("SELECT count(*) FROM {}", _ident(t)))) if exists else None
    return out


# ------------------------------------------------------------------------------------------- sessions


def _sql(template: str, name: str):
    from psycopg import sql

    return sql.SQL(template).format(sql.Identifier(name))


def _sql_ident(template: str, ident):
    from psycopg import sql

    return sql.SQL(template).format(ident)


def _connect(dsn: str, password: str | None, dbname: str | None, hide: list[str]):
    import psycopg

    kwargs = {"dbname": dbname} if dbname else {}
    if password is not None:
        kwargs["password"] = password
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10,
                               application_name="acgs-verify-restore-drill", **kwargs)
    except (psycopg.Error, OSError) as exc:
        raise ProbeError(f"cannot connect to {display_url(dsn)} with the drill's admin credential: "
                         f"{one_line(exc, hide)}") from None


def _dsn_for(dsn: str, dbname: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + dbname))


def _drop(admin, admin_dsn: str, password: str | None, name: str, hide: list[str]) -> bool:
    """DROP DATABASE name (sessions still in it ended first); a fresh session if the old one broke."""
    import psycopg

    if not NAME_RE.match(name):  # never anything but a drill database
        raise ProbeError(f"refusing to drop {name!r}: not a restore drill database")
    for attempt in range(2):
        try:
            conn = admin if attempt == 0 and not admin.closed else _connect(admin_dsn, password, None, hide)
            try:
                conn.execute(_sql("DROP DATABASE IF EXISTS {} WITH (FORCE)", name))
            except psycopg.errors.SyntaxError:  # before PostgreSQL 13
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
                conn.execute(_sql("DROP DATABASE IF EXISTS {}", name))
            return not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        except (psycopg.Error, ProbeError):
            if attempt == 1:
                raise
    return False


def _drop_leftovers(admin) -> list[str]:
    rows = admin.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (PREFIX + "%",)).fetchall()
    dropped = []
    for (name,) in rows:
        m = NAME_RE.match(name)
        if m and time.time() - int(m.group(1)) > LEFTOVER_AGE_SECONDS:
            admin.execute(_sql("DROP DATABASE IF EXISTS {} WITH (FORCE)", name))
            dropped.append(name)
    return dropped


def _count(admin_dsn: str, password: str | None, dbname: str, tables: list[str],
           hide: list[str]) -> dict[str, int | None]:
    with _connect(admin_dsn, password, dbname, hide) as conn:
        return _counts(lambda query, params=None: conn.execute(query, params).fetchone()[0], tables)


# -------------------------------------------------------------------------------------------- restore


def _restore(tool: str, dump: Path, dump_format: str, dsn: str, password: str | None, timeout: float) -> str | None:
    """Run psql (plain dumps, gzipped or not, fed from Python in constant memory) or pg_restore (custom) into
    `dsn`, stopping at the first error. None when it restored, else the tool's last error line."""
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10",
           "PGOPTIONS": "-c client_min_messages=warning -c statement_timeout=0"}
    if password is not None:
        env["PGPASSWORD"] = password  # the environment, never the command line that `ps` shows
    if dump_format == "custom":
        argv = [tool, "--exit-on-error", "--dbname", dsn, str(dump)]
    else:
        argv = [tool, "-X", "-q", "-v", "ON_ERROR_STOP=1", "--dbname", dsn, "-f", "-"]
    with tempfile.TemporaryFile() as err:
        # its own session: a Ctrl-C at the terminal reaches us, and we end it, rather than both at once
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if dump_format != "custom" else subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True)
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(max(timeout, 1), expire)
        timer.start()
        problem = None
        try:
            if proc.stdin is not None:
                try:
                    scan = scan_archive(dump, feed=proc.stdin.write)
                    if not scan.ok:
                        problem = f"the dump does not read to its end: {scan.problem}"
                    proc.stdin.close()
                except BrokenPipeError:
                    pass  # psql stopped at an error: its message says which
            code = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    if timed_out.is_set():
        return f"{Path(tool).name} did not finish within {timeout:.0f} s"
    if code != 0:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "ERROR" in ln or "FATAL" in ln or "error" in ln]
        return one_line((errors or lines or [f"{Path(tool).name} exited with {code}"])[-1])
    return problem


# -------------------------------------------------------------------------------------------- signals


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt while the drill runs (unless someone already handles it)."""
    if not _main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT/SIGTERM arriving now are noted, and raised as KeyboardInterrupt once the block is done."""
    if not _main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum))
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if caught:
        raise KeyboardInterrupt
