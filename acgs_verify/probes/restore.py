r"""The restore drill (BK-07): the latest dump restored into a scratch database made for it, then dropped.

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

The dump is untrusted (docs/security.md): what it says is restored, never run.
- psql's input starts with `\restrict <random key>` where the client has it (pgbin.has_restrict): psql then refuses
  every meta-command (`\!`, `\o`, `\copy ... program`, backticks in arguments) and, with ON_ERROR_STOP, stops.
  The dump's own `\restrict`/`\unrestrict` lines (pg_dump 18, 17.6, 16.10, 15.14, 14.19, 13.22 and later write
  them) are left out.
- DumpFilter reads the plain dump as it is fed: a line starting with a backslash outside COPY data is refused
  before psql sees it (BK-07 fails naming the line); where the client lacks `\restrict`, every backslash outside
  COPY data is refused, since psql would take one anywhere on a line as a command. That scan follows psql's lexer
  (quotes, dollar quotes, comments) only as far as it must to find COPY data, and refuses where the two could
  disagree; `\restrict` is the guarantee, the scan what an older client gets (a dump with a backslash in its
  DDL, a regular expression say, then fails BK-07 until the client is upgraded: backups.pg_bindir).
- Least privilege: the admin credential only creates and drops a scratch role (LOGIN, random password handed to
  the server as a SCRAM verifier, no superuser, createdb, createrole, replication or bypassrls, no membership but
  pg_database_owner of its database) and the scratch database it owns, CONNECT revoked from PUBLIC; psql or pg_restore
  runs as that role, into that database only. So statements pg_dump writes for another owner or grantor are left
  out, as `pg_restore --no-owner --no-privileges` does for custom dumps: `ALTER ... OWNER TO`, GRANT, REVOKE,
  ALTER DEFAULT PRIVILEGES, SET/RESET SESSION AUTHORIZATION, and COMMENT ON EXTENSION (the extension is not the
  role's); the extensions of the live database are created beforehand by the admin (a superuser may create those
  a database owner may not), so the dump's CREATE EXTENSION IF NOT EXISTS finds them. An admin that may not
  create roles restores as itself, with a warning saying so.
- The password reaches psql and pg_restore through a 0600 passfile in a 0700 directory removed afterwards, never
  the environment or the command line; they run with -X, ON_ERROR_STOP, and an environment without the caller's
  PG*/PSQL* variables (PGSERVICE, PGOPTIONS, PGHOST... could send the restore elsewhere or change it).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from acgs_verify import pgbin
from acgs_verify.errors import ProbeError
from acgs_verify.probes.archive import pg_tool, scan_archive
from acgs_verify.redact import cut, display_url, last_line, mask, one_line, printable

PREFIX = "acgs_verify_drill_"
NAME_RE = re.compile(rf"^{PREFIX}(\d{{10}})_\d+_[0-9a-f]{{8}}$")
LEFTOVER_AGE_SECONDS = 3600
STDERR_KEPT = 1 << 20


@dataclass
class DrillResult:
    database: str
    restored: bool = False
    error: str | None = None  # why the restore failed (the tool's last error line)
    counts: dict[str, int | None] = field(default_factory=dict)  # restore table -> rows; None: table missing
    dropped: bool = False
    leftovers: list[str] = field(default_factory=list)  # older drill databases (and roles) dropped first
    seconds: float = 0.0
    role: str | None = None  # the role the restore ran as
    restricted: bool = False  # psql ran under \restrict
    refused: str | None = None  # why the dump was not run to its end (a meta-command in it), when it was not
    skipped: dict[str, int] = field(default_factory=dict)  # statements left out for the scratch role, by kind
    warnings: list[str] = field(default_factory=list)


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
    if drill.refused:
        problems = [drill.refused]
    elif not drill.restored:
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
                  timeout: float, bindir: str | None = None, extensions: list[tuple[str, str]] = (),
                  restrict: bool | None = None, read=None) -> DrillResult:
    """Create a scratch role and database, restore `dump` into it as that role, count `tables`, drop both (see
    the module doc). `extensions`: (name, schema) of the live database's extensions, created in the scratch
    database by the admin first; `restrict`: None asks psql whether it has \\restrict (False forces the scan
    that stands in for it where it has not). `read(feed)`, for a plain dump that is not on this machine, reads
    it and hands its content to `feed` as it comes, returning the ArchiveScan (a dump on another host streamed
    through its connection: archive_remote.stream_scan); the same filter and \\restrict stand between it and
    psql.

    >>> restore_drill(dsn, pw, PurePosixPath(path), "plain", tables, 600,
    ...               read=lambda feed: stream_scan(pool, host, path, 600, keep_ends=False, feed=feed))
    """
    if read is not None and dump_format == "custom":
        raise ProbeError(f"{dump.name}: a custom-format dump is restored from this machine's disk only "
                         "(pg_restore needs to seek in it)")
    result = DrillResult(scratch_name())
    started = time.monotonic()
    hide = [password] if password else []
    tool = pg_tool("pg_restore" if dump_format == "custom" else "psql", bindir)
    if dump_format != "custom":
        result.restricted = pgbin.has_restrict(tool) if restrict is None else restrict
    with _terminate_as_interrupt(), _private_dir() as private:
        admin = _connect(admin_dsn, password, None, hide)
        try:
            result.leftovers = _drop_leftovers(admin)
            try:
                role, role_password = _scratch_role(admin, admin_dsn, password, result, hide)
                hide.append(role_password or "")
                _create_extensions(admin_dsn, password, result, extensions, hide)
                login = (role or _user(admin), role_password if role else password)
                result.error = _restore(tool, dump, dump_format, _conninfo(admin_dsn, result.database, login[0]),
                                        login, private, timeout - (time.monotonic() - started), result, read)
                result.restored = result.error is None
                if result.restored:
                    result.counts = _count(admin_dsn, login, result.database, tables, hide)
            finally:
                with _signals_deferred():
                    result.dropped = _drop(admin, admin_dsn, password, result.database, hide, result.role)
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


def live_extensions(pg) -> list[tuple[str, str]]:
    """The live database's extensions and their schemas, through a read-only session: [("pg_prewarm", "public")]."""
    return [(r["extname"], r["nspname"]) for r in pg.rows(
        "SELECT e.extname, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
        "WHERE e.extname <> 'plpgsql' ORDER BY e.extname")]


def _counts(value, tables: list[str]) -> dict[str, int | None]:
    from acgs_verify.probes.postgres import _ident

    out: dict[str, int | None] = {}
    for t in tables:
        exists = value("SELECT to_regclass(%s) IS NOT NULL", (t,))
        out[t] = int(value(_sql_ident("SELECT count(*) FROM {}", _ident(t)))) if exists else None
    return out


# ------------------------------------------------------------------------------------------- sessions


def _sql(template: str, *names: str):
    from psycopg import sql

    return sql.SQL(template).format(*(sql.Identifier(n) for n in names))


def _sql_ident(template: str, ident):
    from psycopg import sql

    return sql.SQL(template).format(ident)


def _connect(dsn: str, password: str | None, dbname: str | None, hide: list[str], user: str | None = None):
    import psycopg

    kwargs = {"dbname": dbname} if dbname else {}
    if user:
        kwargs["user"] = user
    if password is not None:
        kwargs["password"] = password
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10,
                               application_name="acgs-verify-restore-drill", **kwargs)
    except (psycopg.Error, OSError) as exc:
        who = f"the drill's role {user}" if user else "the drill's admin credential"
        raise ProbeError(f"cannot connect to {display_url(dsn)} with {who}: {one_line(exc, hide)}") from None


def _user(admin) -> str:
    return admin.info.user


def _conninfo(dsn: str, dbname: str, user: str) -> str:
    """The admin DSN's server, with the scratch database and role, and no password (the passfile has it)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = {k: v for k, v in conninfo_to_dict(dsn).items()
              if k not in ("password", "passfile", "service", "options", "dbname", "user")}
    return make_conninfo(**params, dbname=dbname, user=user)


def _scratch_role(admin, admin_dsn: str, password: str | None, result: DrillResult,
                  hide: list[str]) -> tuple[str | None, str | None]:
    """CREATE ROLE <drill name> (least privilege) and CREATE DATABASE <drill name> OWNER it; (None, None) and a
    warning when the admin may not do that, and the database is then the admin's."""
    import psycopg
    from psycopg import sql

    role, role_password = result.database, secrets.token_hex(24)
    try:  # the server gets (and a statement log shows) the SCRAM verifier, never the password itself
        verifier = admin.pgconn.encrypt_password(role_password.encode(), role.encode(), b"scram-sha-256").decode()
    except Exception:  # a server too old for SCRAM: libpq's own choice then
        verifier = role_password
    try:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS "
                              "CONNECTION LIMIT 4 PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier)))
    except psycopg.errors.InsufficientPrivilege as exc:
        result.warnings.append(f"restored as the admin role {_user(admin)}, not a scratch role of least privilege: "
                               f"it may not create roles ({one_line(exc, hide)})")
        admin.execute(_sql("CREATE DATABASE {} TEMPLATE template0", result.database))
        return None, None
    result.role = role
    try:
        admin.execute(_sql("CREATE DATABASE {} OWNER {} TEMPLATE template0", result.database, role))
        admin.execute(_sql("REVOKE ALL ON DATABASE {} FROM PUBLIC", result.database))
        admin.execute(_sql("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}", result.database, role))
    except psycopg.Error as exc:
        raise ProbeError(f"cannot create the scratch database {result.database} owned by {role}: "
                         f"{one_line(exc, hide)}") from None
    return role, role_password


def _create_extensions(admin_dsn: str, password: str | None, result: DrillResult,
                       extensions: list[tuple[str, str]], hide: list[str]) -> None:
    """The live database's extensions in public (or pg_catalog), created by the admin: a superuser may create
    those a database owner may not; an extension elsewhere is left to the dump (its schema is not there yet)."""
    import psycopg

    wanted = [(e, s) for e, s in extensions if s in ("public", "pg_catalog")]
    if not wanted or result.role is None:
        return
    with _connect(admin_dsn, password, result.database, hide) as conn:
        for name, schema in wanted:
            try:
                conn.execute(_sql("CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {}", name, schema))
            except psycopg.Error as exc:
                result.warnings.append(f"extension {name} not created before the restore: {one_line(exc, hide)}")


def _drop(admin, admin_dsn: str, password: str | None, name: str, hide: list[str], role: str | None) -> bool:
    """DROP DATABASE name (sessions still in it ended first) and DROP ROLE role when the drill made one; a fresh
    session if the old one broke. True when neither is left."""
    import psycopg

    if not NAME_RE.match(name) or role not in (None, name):  # never anything but a drill database and role
        raise ProbeError(f"refusing to drop {name!r}: not a restore drill database")
    for attempt in range(2):
        try:
            conn = admin if attempt == 0 and not admin.closed else _connect(admin_dsn, password, None, hide)
            try:
                conn.execute(_sql("DROP DATABASE IF EXISTS {} WITH (FORCE)", name))
            except psycopg.errors.SyntaxError:  # before PostgreSQL 13
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
                conn.execute(_sql("DROP DATABASE IF EXISTS {}", name))
            if role:  # asked only of an admin that made it: DROP ROLE IF EXISTS needs CREATEROLE even for none
                conn.execute(_sql("DROP ROLE IF EXISTS {}", role))
            return not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s UNION ALL "
                                    "SELECT 1 FROM pg_roles WHERE rolname = %s", (name, name)).fetchone()
        except (psycopg.Error, ProbeError):
            if attempt == 1:
                raise
    return False


def _drop_leftovers(admin) -> list[str]:
    import psycopg

    dropped = []
    for kind, query in (("DATABASE", "SELECT datname FROM pg_database WHERE datname LIKE %s"),
                        ("ROLE", "SELECT rolname FROM pg_roles WHERE rolname LIKE %s")):
        for (name,) in admin.execute(query, (PREFIX + "%",)).fetchall():
            m = NAME_RE.match(name)
            if m and time.time() - int(m.group(1)) > LEFTOVER_AGE_SECONDS:
                try:
                    admin.execute(_sql(f"DROP {kind} IF EXISTS {{}}" +
                                       (" WITH (FORCE)" if kind == "DATABASE" else ""), name))
                except psycopg.errors.InsufficientPrivilege:
                    continue  # another credential's drill left it: that one drops it
                if name not in dropped:
                    dropped.append(name)
    return dropped


def _count(admin_dsn: str, login: tuple[str, str | None], dbname: str, tables: list[str],
           hide: list[str]) -> dict[str, int | None]:
    with _connect(admin_dsn, login[1], dbname, hide, user=login[0]) as conn:
        return _counts(lambda query, params=None: conn.execute(query, params).fetchone()[0], tables)


# -------------------------------------------------------------------------------------------- restore


@contextlib.contextmanager
def _private_dir() -> Iterator[Path]:
    """A 0700 directory for the passfile, removed with what it holds however the drill ends."""
    path = Path(tempfile.mkdtemp(prefix="acgs-verify-drill-"))
    try:
        os.chmod(path, 0o700)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _passfile(directory: Path, dbname: str, user: str, password: str | None) -> Path:
    """A libpq passfile (0600, created exclusively) for this one database and role, any host and port."""
    if password is not None and ("\n" in password or "\r" in password):
        raise ProbeError("the drill's password holds a line break: a passfile cannot hold it")

    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    path = directory / "pgpass"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        if password is not None:
            f.write(f"*:*:{esc(dbname)}:{esc(user)}:{esc(password)}\n")
    return path


# what the tools may keep of the caller's environment: the rest (every PG* and PSQL* variable, PAGER, ...) could
# send the restore to another server or service, change its session, or run a program
KEPT_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ", "TMPDIR")


def tool_env(passfile: Path) -> dict[str, str]:
    """The whole environment psql and pg_restore get: no password in it, only the passfile's path."""
    env = {k: v for k, v in os.environ.items() if k in KEPT_ENV}
    env.update({"PGPASSFILE": str(passfile), "PGCONNECT_TIMEOUT": "10",
                "PGOPTIONS": "-c client_min_messages=warning -c statement_timeout=0",
                "PGAPPNAME": "acgs-verify-restore-drill", "HOME": str(passfile.parent)})
    return env


def _restore(tool: str, dump: Path, dump_format: str, conninfo: str, login: tuple[str, str | None],
             private: Path, timeout: float, result: DrillResult, read=None) -> str | None:
    """Run psql (plain dumps, gzipped or not, fed from Python through DumpFilter in constant memory) or
    pg_restore (custom) into `conninfo`, stopping at the first error. None when it restored, else why not."""
    env = tool_env(_passfile(private, result.database, login[0], login[1]))
    if dump_format == "custom":
        listing = _toc_without_extension_comments(tool, dump, env, private, timeout)
        argv = [tool, "--exit-on-error", "--no-owner", "--no-privileges", "--no-password", "--use-list",
                str(listing), "--dbname", conninfo, "--", str(dump)]
    else:
        argv = [tool, "-X", "-q", "--no-password", "-v", "ON_ERROR_STOP=1", "--dbname", conninfo, "-f", "-"]
    with tempfile.TemporaryFile() as err:
        # its own session: a Ctrl-C at the terminal reaches us, and we end it, rather than both at once
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE if dump_format != "custom" else subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err, env=env, start_new_session=True, cwd=private)
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(max(timeout, 1), expire)
        timer.start()
        problem = None
        dump_filter = DumpFilter(strict=not result.restricted)
        try:
            if proc.stdin is not None:
                try:
                    if result.restricted:
                        proc.stdin.write(f"\\restrict {secrets.token_hex(32)}\n".encode())

                    def feed(chunk: bytes) -> None:
                        proc.stdin.write(dump_filter.feed(chunk))

                    scan = read(feed) if read is not None else scan_archive(dump, feed=feed)
                    proc.stdin.write(dump_filter.finish())
                    if not scan.ok:
                        problem = f"the dump does not read to its end: {scan.problem}"
                    proc.stdin.close()
                except BrokenPipeError:
                    pass  # psql stopped at an error: its message says which
                except Refused as exc:
                    proc.kill()  # not closing its input: psql would run the statement it holds
                    result.refused = f"{dump.name}: {exc}"
            code = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        result.skipped = dict(dump_filter.skipped)
        # its last MiB: the error is at the end, and a dump can make psql print without end before it
        err.seek(max(0, err.seek(0, os.SEEK_END) - STDERR_KEPT))
        text = err.read(STDERR_KEPT).decode("utf-8", "replace")
    if result.refused:
        return result.refused
    if timed_out.is_set():
        return f"{Path(tool).name} did not finish within {timeout:.0f} s"
    if code != 0:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        errors = [ln for ln in lines if "ERROR" in ln or "FATAL" in ln or "error" in ln]
        last = _shown((errors or lines or [f"{Path(tool).name} exited with {code}"])[-1], 300)
        if result.restricted and "backslash commands are restricted" in last:
            # our \restrict line is psql's line 1: the dump's line is one less
            last = re.sub(r"<stdin>:(\d+):", lambda m: f"<stdin>:{int(m.group(1)) - 1}:", last)
            return (f"a psql meta-command in the dump was refused by psql's \\restrict and not run ({last}); "
                    "the dump was not restored")
        return one_line(last)
    return problem


def _toc_without_extension_comments(tool: str, dump: Path, env: dict[str, str], private: Path,
                                    timeout: float) -> Path:
    """pg_restore's table of contents for `dump` without COMMENT ON EXTENSION (the scratch role does not own the
    extensions the admin created), as a --use-list file."""
    try:
        out = subprocess.run([tool, "--list", "--", str(dump)], capture_output=True, env=env, cwd=private,
                             timeout=max(timeout, 1), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"{Path(tool).name} --list did not finish within {timeout:.0f} s") from None
    if out.returncode != 0:
        raise ProbeError(f"{Path(tool).name} --list {dump}: {last_line(out.stderr.decode('utf-8', 'replace'))}")
    path = private / "toc.list"
    path.write_bytes(b"".join(ln for ln in out.stdout.splitlines(keepends=True)
                              if not TOC_EXTENSION_COMMENT.match(ln)))
    return path


TOC_EXTENSION_COMMENT = re.compile(rb"\d+; \d+ \d+ COMMENT - EXTENSION ")


# ---------------------------------------------------------------------------------------- the dump, read


class Refused(Exception):
    """The plain dump holds what psql would run as a command: the dump is not fed further."""


def _shown(text: str | bytes, limit: int = 200) -> str:
    """Text from the dump as a message may show it: control characters escaped (redact.printable), cut to `limit`
    (room for the whole of a long path, which is what an engineer greps the dump for)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    out = printable(text)
    return cut(out, limit) + ("..." if len(out) > limit else "")


# statements pg_dump writes (one line each) that only the objects' owner, a grantor or a superuser may run:
# left out for the scratch role, like pg_restore --no-owner --no-privileges (see the module doc)
SKIPPED = (
    ("owner", re.compile(rb"ALTER [A-Z ]+ \S.* OWNER TO [^;]+;")),
    ("privileges", re.compile(rb"(?:GRANT|REVOKE) [^;]+;")),
    ("privileges", re.compile(rb"ALTER DEFAULT PRIVILEGES [^;]+;")),
    ("session authorization", re.compile(rb"(?:SET|RESET) SESSION AUTHORIZATION[^;]*;")),
)
EXTENSION_COMMENT = re.compile(rb"COMMENT ON EXTENSION [A-Za-z0-9_\"-]+ IS '(?:[^'\\]|'')*';")
OWN_RESTRICT = re.compile(rb"\\(?:un)?restrict [A-Za-z0-9]+")  # pg_dump's own, at a statement boundary
COPY_FROM_STDIN = re.compile(rb"COPY \S.* FROM stdin;")
TOP, SQ, DQ, DOLLAR, BLOCK = range(5)
_TOP_TOKEN = re.compile(rb"--|/\*|['\";$]|\S")
_DOLLAR_QUOTE = re.compile(rb"\$(?:[A-Za-z\x80-\xff_][A-Za-z\x80-\xff_0-9]*)?\$")
_BLOCK_TOKEN = re.compile(rb"/\*|\*/")
_IDENT_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_$" + bytes(range(0x80, 0x100)))
_DIGITS = frozenset(b"0123456789")
SQL_LINE_MAX = 16 << 20


class DumpFilter:
    """A plain dump, line by line as it streams to psql: `out = f.feed(chunk)`, then `f.finish()`.

    Outside COPY ... FROM stdin data (which ends at a `\\.` line) it tracks what psql's lexer would: quotes,
    dollar quotes, comments, whether a statement has begun. It raises Refused for a line starting with a
    backslash (a meta-command), and, when `strict` (a psql without \\restrict), for a backslash anywhere outside
    COPY data, or a `$` right after a digit (where psql's lexer and this one could disagree on a dollar quote).
    It leaves out (as empty lines, so line numbers stay the dump's) pg_dump's own \\restrict lines and the
    statements in SKIPPED. A COPY line counts only at a statement boundary and alone on its line, so text that
    merely looks like one inside a string or comment never opens a data block here."""

    def __init__(self, strict: bool) -> None:
        self.strict = strict
        self.line = 0
        self.skipped: dict[str, int] = {}
        self._buf = bytearray()
        self._copy = False
        self._copy_head = b""
        self._copy_len = 0
        self._state = TOP
        self._tag = b""
        self._depth = 0
        self._open = False  # statement text (not blanks or comments) since the last top-level ;

    def feed(self, chunk: bytes) -> bytes:
        out = bytearray()
        pos, n = 0, len(chunk)
        while pos < n:
            if self._copy and self._copy_len == 0 and chunk[pos:pos + 1] != b"\\":
                # only a line starting with a backslash can end the data: whole lines up to the next one pass at once
                j = chunk.find(b"\n\\", pos)
                stop = j + 1 if j >= 0 else chunk.rfind(b"\n", pos) + 1
                if stop > pos:
                    self.line += chunk.count(b"\n", pos, stop)
                    out += chunk[pos:stop]
                    pos = stop
                    continue
            nl = chunk.find(b"\n", pos)
            end = n if nl < 0 else nl + 1
            if self._copy:
                piece = chunk[pos:end]
                self._copy_head += piece[:max(0, 4 - len(self._copy_head))]
                self._copy_len += len(piece)
                out += piece
                if nl >= 0:
                    self.line += 1
                    if self._copy_head[:self._copy_len] in (b"\\.\n", b"\\.\r\n"):
                        self._copy = False
                    self._copy_head, self._copy_len = b"", 0
            else:
                self._buf += chunk[pos:end]
                if len(self._buf) > SQL_LINE_MAX:
                    raise Refused(f"line {self.line + 1} of the dump is longer than {SQL_LINE_MAX >> 20} MiB "
                                  "outside COPY data: not read further, nothing of it run")
                if nl >= 0:
                    out += self._sql_line(bytes(self._buf))
                    self._buf.clear()
            pos = end
        return bytes(out)

    def finish(self) -> bytes:
        if self._buf and not self._copy:
            out = self._sql_line(bytes(self._buf))
            self._buf.clear()
            return out
        return b""

    def _refuse(self, line: bytes, why: str) -> None:
        shown = _shown(line.rstrip(b"\r\n"))
        raise Refused(f"line {self.line} of the dump {why}: '{shown}'; refused, not run (nor anything after it)")

    def _sql_line(self, line: bytes) -> bytes:
        self.line += 1
        body = line[:-1] if line.endswith(b"\n") else line
        boundary = self._state == TOP and not self._open
        if body.startswith(b"\\"):
            if boundary and OWN_RESTRICT.fullmatch(body.rstrip(b"\r")):
                return b"\n"
            self._refuse(line, "is a psql meta-command")
        if self.strict and b"\\" in body:
            self._refuse(line, "holds a backslash outside COPY data, which this psql (without \\restrict) could "
                               "take as a meta-command")
        if boundary:
            kind = self._skipped(body.rstrip(b"\r"))
            if kind:
                self.skipped[kind] = self.skipped.get(kind, 0) + 1
                return b"\n"
        semicolons = self._lex(line)
        if boundary and semicolons == 1 and self._state == TOP and not self._open and \
                COPY_FROM_STDIN.fullmatch(body.rstrip(b"\r")):
            self._copy = True
        return line

    @staticmethod
    def _skipped(body: bytes) -> str | None:
        if EXTENSION_COMMENT.fullmatch(body):
            return "extension comment"
        # only lines whose quoting cannot matter: leaving them out changes no quote or comment state
        if any(c in body for c in (b"'", b"$", b"--", b"/*", b"\\")) or body.count(b'"') % 2:
            return None
        return next((kind for kind, pattern in SKIPPED if pattern.fullmatch(body)), None)

    def _lex(self, line: bytes) -> int:
        """Move the lexer state over one line; the number of top-level semicolons in it."""
        i, n, semicolons = 0, len(line), 0
        while i < n:
            if self._state == TOP:
                m = _TOP_TOKEN.search(line, i)
                if not m:
                    break
                token, i = m.group(), m.end()
                if token == b";":
                    semicolons += 1
                    self._open = False
                elif token == b"--":
                    break
                elif token == b"/*":
                    self._state, self._depth = BLOCK, 1
                elif token == b"$":
                    self._open = True
                    prev = line[m.start() - 1] if m.start() else None
                    if prev in _DIGITS and self.strict:
                        self._refuse(line, "has a $ right after a digit, which psql could read as a dollar quote")
                    if prev is not None and (prev in _IDENT_BYTES or prev in _DIGITS):
                        continue
                    q = _DOLLAR_QUOTE.match(line, m.start())
                    if q:
                        self._state, self._tag, i = DOLLAR, q.group(), q.end()
                else:
                    self._open = True
                    if token in (b"'", b'"'):
                        self._state = SQ if token == b"'" else DQ
            elif self._state in (SQ, DQ):
                quote = b"'" if self._state == SQ else b'"'
                j = line.find(quote, i)
                if j < 0:
                    break
                if line[j + 1:j + 2] == quote:
                    i = j + 2
                    continue
                self._state, i = TOP, j + 1
            elif self._state == DOLLAR:
                j = line.find(self._tag, i)
                if j < 0:
                    break
                self._state, i = TOP, j + len(self._tag)
            else:
                m = _BLOCK_TOKEN.search(line, i)
                if not m:
                    break
                self._depth += 1 if m.group() == b"/*" else -1
                i = m.end()
                if self._depth == 0:
                    self._state = TOP
        return semicolons


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
