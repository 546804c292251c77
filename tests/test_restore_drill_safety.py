r"""The restore drill (BK-07) restores what a backup holds and never runs what it says (issue 21, item 2).

A plain dump is psql's input: a line `\! cmd` in it, a `\o FILE`, a `\copy ... to program`, a backtick in a
meta-command's argument would run on the checker, as root, next to the admin credential. Each test plants such
lines in a real pg_dump of the sandbox database, plain and gzipped, and runs the drill both ways it can run:
psql under `\restrict` (this machine's psql has it) and the scan that stands in for it where a psql has not
(forced with restrict=False). Then: no marker file, BK-07 does not pass and says which line, no drill database
or role left. The password reaches psql through a 0600 passfile only, never its environment, and the restore
runs as a scratch role without superuser, createdb or createrole.
"""

from __future__ import annotations

import gzip
import os
import re
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from acgs_verify import pgbin
from acgs_verify.probes.restore import DumpFilter, Refused, drill_problems, restore_drill
from acgs_verify.sandbox.components.postgres import primary_port
from tests.conftest import run_checks, sandbox_admin
from tests.test_run_backup_faults import DRILL, _latest_dump, _restore_pristine
from tests.test_run_sandbox import failed_ids
from tests.waiting import wait_for

TABLES = ["audit_logs", "policies"]
EXTENSIONS = [("pg_prewarm", "public"), ("pg_stat_statements", "public")]
ANCHOR = b"SET row_security = off;\n"  # early in every pg_dump: what is planted after it runs before any table


def pristine(sandbox) -> bytes:
    return gzip.decompress((sandbox.dir / "run/backups/database.sql.gz").read_bytes())


def admin_dsn(sandbox) -> str:
    return f"postgresql://acgs_restore@127.0.0.1:{primary_port(sandbox.port_offset)}/postgres"


def drill(sandbox, dump: Path, restrict: bool | None, fmt: str = "plain", timeout: float = 120):
    return restore_drill(admin_dsn(sandbox), sandbox.secret("restore"), dump, fmt, TABLES, timeout,
                         extensions=EXTENSIONS, restrict=restrict)


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(gzip.compress(content) if path.name.endswith(".gz") else content)
    return path


def leftovers(sandbox) -> list[str]:
    with sandbox_admin(sandbox, "postgres") as admin:
        return [r[0] for r in admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'acgs_verify_drill_%' UNION ALL "
            "SELECT rolname FROM pg_roles WHERE rolname LIKE 'acgs_verify_drill_%'").fetchall()]


# payload (with {m} for a marker path) -> planted after ANCHOR
PAYLOADS = {
    "shell": "\\! touch {m}\n",
    "shell-output": "\\! id > {m}\n",
    "query-output": "\\o {m}\nSELECT 1;\n",
    "copy-to-program": "\\copy (SELECT 1) to program 'touch {m}'\n",
    "backtick-argument": "\\set x `touch {m}`\n",
    "mid-line": "SELECT 1; \\! touch {m}\n",
    "wrong-unrestrict-key": "\\unrestrict 0123456789abcdef\n\\! touch {m}\n",
    # text that looks like a COPY block, inside a string: psql never reads it as data
    "copy-inside-a-string": "SELECT '\nCOPY public.policies (id) FROM stdin;\n';\nSELECT 1; \\! touch {m}\n\\.\n",
}


@pytest.mark.parametrize("restrict", [True, False], ids=["restrict", "scan"])
@pytest.mark.parametrize("payload", PAYLOADS)
def test_planted_meta_commands_run_nothing_and_fail_the_drill(healthy_sandbox, tmp_path, payload, restrict):
    marker = tmp_path / "MARKER"
    planted = PAYLOADS[payload].format(m=marker).encode()
    dump = write(tmp_path / "database.sql.gz", pristine(healthy_sandbox).replace(ANCHOR, ANCHOR + planted, 1))
    result = drill(healthy_sandbox, dump, restrict)
    assert not marker.exists()
    problems = drill_problems(result, {}, None)
    assert not result.restored and problems and result.dropped, problems
    assert "meta-command" in problems[0] or "backslash outside COPY data" in problems[0], problems
    assert "not run" in problems[0], problems
    if "refused by psql" not in problems[0]:  # our scan names the dump's line (the payload is at 20 to 24)
        assert re.search(r"^database.sql.gz: line 2[0-4] of the dump", problems[0]), problems
    assert leftovers(healthy_sandbox) == []


@pytest.mark.parametrize("name", ["database.sql", "database.sql.gz"])
@pytest.mark.parametrize("restrict", [True, False], ids=["restrict", "scan"])
def test_first_line_shell_command_is_refused_plain_or_gzipped(healthy_sandbox, tmp_path, name, restrict):
    """The attack as found: `\\! id > FILE` as the dump's first line."""
    out = tmp_path / "id.out"
    dump = write(tmp_path / name, f"\\! id > {out}\n".encode() + pristine(healthy_sandbox))
    result = drill(healthy_sandbox, dump, restrict)
    assert not out.exists()
    assert result.refused and result.refused.startswith(f"{name}: line 1 of the dump is a psql meta-command"), result
    assert f"'\\! id > {out}'; refused, not run" in result.refused, result.refused
    assert result.dropped and leftovers(healthy_sandbox) == []


def test_control_characters_of_a_refused_line_are_escaped(healthy_sandbox, tmp_path):
    dump = write(tmp_path / "database.sql", b"\\! printf '\x1b]0;owned\x07'\n" + pristine(healthy_sandbox))
    result = drill(healthy_sandbox, dump, True)
    assert "\x1b" not in result.refused and "\x07" not in result.refused
    assert "\\x1b]0;owned\\x07" in result.refused, result.refused


@pytest.mark.parametrize("restrict", [True, False], ids=["restrict", "scan"])
def test_healthy_dump_restores_whatever_the_caller_environment(healthy_sandbox, tmp_path, monkeypatch, restrict,
                                                                closed_port):
    """PG* and PSQL* variables of whoever runs the suite are not the restore's: they could send it to another
    server or role (PGHOST/PGPORT, PGSERVICE, PGUSER), or run a file or program (PSQLRC, PAGER). (The drill's own
    admin session, like every session of the suite, is the caller's libpq's: PGOPTIONS there stays the caller's.)"""
    marker = tmp_path / "PSQLRC-RAN"
    rc = tmp_path / "psqlrc"
    rc.write_text(f"\\! touch {marker}\n")
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[elsewhere]\nhost=127.0.0.1\nport={closed_port}\n")
    for key, value in {"PGHOST": "127.0.0.1", "PGPORT": str(closed_port), "PGSERVICEFILE": str(services),
                       "PGSERVICE": "elsewhere", "PGPASSWORD": "not-the-password", "PSQLRC": str(rc),
                       "PGUSER": "nobody", "PGDATABASE": "nowhere", "PAGER": f"touch {marker}"}.items():
        monkeypatch.setenv(key, value)
    dump = write(tmp_path / "database.sql.gz", pristine(healthy_sandbox))
    result = drill(healthy_sandbox, dump, restrict)
    assert result.restored and result.counts == {"audit_logs": 3000, "policies": 40}, result.error
    assert result.dropped and leftovers(healthy_sandbox) == [] and not marker.exists()
    assert result.restricted is restrict and result.role == result.database
    assert result.skipped == {"owner": 4, "extension comment": 2}, result.skipped


def test_custom_dump_restores_as_the_scratch_role(healthy_sandbox, tmp_path):
    from acgs_verify.sandbox.components.postgres import DATABASE, ROLE, find_bindir

    dump = tmp_path / "database.dump"
    subprocess.run([str(Path(find_bindir()) / "pg_dump"), "-Fc", "-h", "127.0.0.1", "-p",
                    str(primary_port(healthy_sandbox.port_offset)), "-U", ROLE, "-f", str(dump), DATABASE],
                   check=True, env={**os.environ, "PGPASSWORD": healthy_sandbox.secret("db")}, timeout=60)
    result = drill(healthy_sandbox, dump, None, fmt="custom")
    assert result.restored and result.counts == {"audit_logs": 3000, "policies": 40}, result.error
    assert result.dropped and leftovers(healthy_sandbox) == []


# Debian's /usr/bin/psql is pg_wrapper, which adds these before it runs the real psql (PGHOST and PGPORT name the
# machine's default cluster when it has one; the host and port the drill gives on the command line win over them)
WRAPPER_ENV = {b"PGSYSCONFDIR", b"PG_CLUSTER_CONF_ROOT", b"PGCLUSTER", b"PGHOST", b"PGPORT"}


def _environ(pid: int) -> dict[bytes, bytes]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)


def _children(name: str) -> list[int]:
    """Our own child processes called `name` (the drill runs psql from this process)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if int(fields[1]) == os.getpid() and comm == name:
                pids.append(int(entry.name))
    return pids


def test_password_reaches_psql_only_through_a_private_passfile(healthy_sandbox, tmp_path, monkeypatch):
    """While psql restores (held in a pg_sleep), its environment and command line hold neither the admin's nor the
    scratch role's password, nor PGPASSWORD; its passfile is 0600 in a 0700 directory, and gone afterwards. The
    session restoring is the scratch role's, which may not do what a superuser may."""
    admin_password = healthy_sandbox.secret("restore")
    monkeypatch.setenv("PGPASSWORD", admin_password)  # even where the caller's environment holds it
    text = pristine(healthy_sandbox).replace(ANCHOR, ANCHOR + b"SELECT pg_sleep(120);\n", 1)
    dump = write(tmp_path / "database.sql.gz", text)
    box: dict = {}
    worker = threading.Thread(target=lambda: box.update(result=drill(healthy_sandbox, dump, None)))
    worker.start()
    try:
        # the restoring psql (not the one asked for its --help=commands): the one given a passfile
        pid, env = wait_for("the drill's psql", lambda: next(((p, e) for p in _children("psql")
                                                             if b"PGPASSFILE" in (e := _environ(p))), None), 60)
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        passfile = Path(env[b"PGPASSFILE"].decode())
        role_password = passfile.read_text().strip().rsplit(":", 1)[1]
        assert stat.S_IMODE(passfile.stat().st_mode) == 0o600 and stat.S_IMODE(passfile.parent.stat().st_mode) == 0o700
        assert b"PGPASSWORD" not in env and b"PGSERVICE" not in env
        assert set(env) <= {b"PATH", b"LANG", b"LC_ALL", b"LC_CTYPE", b"LC_MESSAGES", b"TZ", b"TMPDIR", b"HOME",
                            b"PGPASSFILE", b"PGCONNECT_TIMEOUT", b"PGOPTIONS", b"PGAPPNAME"} | WRAPPER_ENV, env.keys()
        seen = b"\0".join([*env.values(), *argv])
        assert admin_password.encode() not in seen and role_password.encode() not in seen
        assert b"-X" in argv and b"ON_ERROR_STOP=1" in argv

        def restoring():
            with sandbox_admin(healthy_sandbox, "postgres") as admin:
                return admin.execute(
                    "SELECT a.pid, r.rolname, r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolbypassrls, "
                    "r.rolpassword LIKE 'SCRAM-SHA-256$%' "
                    "FROM pg_stat_activity a JOIN pg_authid r ON r.oid = a.usesysid "
                    "WHERE a.datname LIKE 'acgs_verify_drill_%' AND a.query LIKE '%pg_sleep%'").fetchone()
        backend, role, *powers = wait_for("psql's session in pg_sleep", restoring, 60)
        # no superuser, createdb, createrole or bypassrls; the server was handed a SCRAM verifier, not the password
        assert role.startswith("acgs_verify_drill_") and powers == [False, False, False, False, True]
    finally:
        with sandbox_admin(healthy_sandbox, "postgres") as admin:  # ends the restore now, however the test went
            admin.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname LIKE "
                          "'acgs_verify_drill_%' AND query LIKE '%pg_sleep%'")
        worker.join(120)
    result = box["result"]
    assert not result.restored and "canceling statement" in result.error and result.dropped, result
    assert not passfile.exists() and not passfile.parent.exists()
    assert leftovers(healthy_sandbox) == []


def test_bk07_fails_on_a_planted_meta_command_and_runs_nothing(healthy_sandbox, tmp_path):
    """End to end: the latest backup's dump holds `\\! touch MARKER`; the run's BK-07 fails saying why."""
    marker = tmp_path / "MARKER"
    dump = _latest_dump(healthy_sandbox)
    mtime = dump.stat().st_mtime
    try:
        dump.write_bytes(gzip.compress(pristine(healthy_sandbox).replace(ANCHOR, ANCHOR + f"\\! touch {marker}\n"
                                                                         .encode(), 1)))
        os.utime(dump, (mtime, mtime))
        res = run_checks(healthy_sandbox, tmp_path / "reports", *DRILL, "--", "-k", "BK")
        summary = res.summary
        assert failed_ids(summary) == {("BK-07", "backups/latest@app-1")}, res.stdout[-3000:]
        message = next(c["message"] for c in summary["checks"] if c["id"] == "BK-07")
        assert f"database.sql.gz: line 20 of the dump is a psql meta-command: '\\! touch {marker}'; refused, " \
            "not run" in message, message
        assert not marker.exists()
    finally:
        _restore_pristine(healthy_sandbox, dump)
    res = run_checks(healthy_sandbox, tmp_path / "reports", *DRILL, "--", "-k", "BK-07")
    summary = res.summary
    bk07 = next(c for c in summary["checks"] if c["id"] == "BK-07")
    assert bk07["outcome"] == "passed" and "audit_logs 3000 rows, policies 40 rows; dropped" in bk07["measured"]
    assert leftovers(healthy_sandbox) == []


def test_this_machines_psql_is_asked_whether_it_has_restrict():
    psql = pgbin.tool("psql")
    version = subprocess.run([psql, "--version"], capture_output=True, text=True, timeout=30).stdout.split()[2]
    major, minor = (int(x) for x in version.split(".")[:2])
    fixed = {13: 22, 14: 19, 15: 14, 16: 10, 17: 6}
    assert pgbin.has_restrict(psql) is (major >= 18 or minor >= fixed.get(major, 10 ** 6))
    assert pgbin.has_restrict("/nonexistent/psql") is False


# -------------------------------------------------------------------------------- the scan, line by line


def filtered(text: bytes, strict: bool = True, size: int = 7) -> bytes:
    f = DumpFilter(strict=strict)
    out = b"".join(f.feed(text[i:i + size]) for i in range(0, len(text), size))  # lines cut across feeds
    return out + f.finish()


def refused(text: bytes, strict: bool = True, size: int = 7) -> str:
    with pytest.raises(Refused) as exc:
        filtered(text, strict, size)
    return str(exc.value)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 1 << 16])
def test_copy_data_may_hold_backslashes_and_ends_at_its_terminator(size):
    data = b"".join([b"1\tplain\n", b"\\N\tnull first\n", b"\\\\.\tan escaped backslash\n", b"\\.x\n"] * 50)
    dump = b"SET x = 1;\nCOPY public.t (a, \"b\") FROM stdin;\n" + data + b"\\.\nSELECT 1;\n"
    assert filtered(dump, size=size) == dump
    assert "line 205 " in refused(dump + b"\\! id\n", size=size)
    assert "line 205 " in refused(dump.replace(b"SELECT 1;", b"SELECT 1;\nSELECT 2; \\! id"), size=size)


def test_copy_text_inside_a_string_or_comment_or_mid_statement_opens_no_data_block():
    for head in (b"SELECT '\n", b"/* a\n", b"SELECT $x$\n", b"SELECT\n"):
        text = head + b"COPY public.t (a) FROM stdin;\n\\N\n"
        assert "line 3" in refused(text), head


def test_own_restrict_lines_and_statements_for_other_owners_are_left_out_line_for_line():
    dump = (b"\\restrict abcDEF123\nCREATE TABLE t (a int);\nALTER TABLE public.t OWNER TO acgs;\n"
            b"GRANT SELECT ON TABLE public.t TO reader;\nCOMMENT ON EXTENSION pg_prewarm IS 'it''s';\n"
            b"\\unrestrict abcDEF123\n")
    assert filtered(dump) == b"\nCREATE TABLE t (a int);\n\n\n\n\n"
    # inside a statement, the same text is the statement's (psql would read it so): passed on or refused
    assert filtered(b"SELECT\nGRANT x;\n") == b"SELECT\nGRANT x;\n"
    assert "meta-command" in refused(b"SELECT 1 +\n\\restrict abc\n")


def test_strict_scan_refuses_a_dollar_right_after_a_digit_and_any_backslash_outside_data():
    assert "$ right after a digit" in refused(b"SELECT 1$a$ ' $a$;\n")
    assert "backslash outside COPY data" in refused(b"SELECT E'\\n';\n")
    # with \restrict, psql itself refuses a meta-command anywhere: the scan leaves strings to it
    assert filtered(b"SELECT E'\\n';\n", strict=False) == b"SELECT E'\\n';\n"


def test_admin_that_may_not_create_roles_restores_as_itself_and_says_so(healthy_sandbox, tmp_path):
    """An admin credential with CREATEDB only (no CREATEROLE, no superuser) cannot make a scratch role: the drill
    still runs, as that admin, and warns that it did."""
    from psycopg import sql

    name, password = "acgs_verify_test_createdb_only", "createdb-only-pw"
    with sandbox_admin(healthy_sandbox, "postgres") as admin:
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(sql.Identifier(name),
                                                                                sql.Literal(password)))
    try:
        # its extensions are a superuser's to create: a dump without them, as a non-superuser's would be
        text = b"".join(ln for ln in pristine(healthy_sandbox).splitlines(keepends=True) if b"EXTENSION" not in ln)
        dump = write(tmp_path / "database.sql.gz", text)
        dsn = f"postgresql://{name}@127.0.0.1:{primary_port(healthy_sandbox.port_offset)}/postgres"
        result = restore_drill(dsn, password, dump, "plain", TABLES, 120)
        assert result.restored and result.counts == {"audit_logs": 3000, "policies": 40}, result.error
        assert result.role is None and result.dropped
        assert result.warnings and f"restored as the admin role {name}" in result.warnings[0], result.warnings
        assert leftovers(healthy_sandbox) == []
    finally:
        with sandbox_admin(healthy_sandbox, "postgres") as admin:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def test_sql_that_only_a_superuser_may_run_fails_as_the_scratch_role(healthy_sandbox, tmp_path):
    """The restore's SQL runs as the scratch role: COPY ... TO PROGRAM in a dump, which runs a program on the
    database server as the admin (a superuser) would, is refused. A positive control first: the same statement,
    run as a superuser, does leave its marker."""
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="acgs-verify-drill-test-", dir="/tmp"))  # the server's user may write here
    try:
        shared.chmod(0o777)
        control, marker = shared / "CONTROL", shared / "MARKER"
        with sandbox_admin(healthy_sandbox, "postgres") as admin:
            # the program reads its input: a `touch` that exits first would fail the COPY with a broken pipe
            admin.execute(f"COPY (SELECT 1) TO PROGRAM 'touch {control}; cat >/dev/null'")
        assert control.exists()
        planted = f"COPY (SELECT 1) TO PROGRAM 'touch {marker}; cat >/dev/null';\n".encode()
        dump = write(tmp_path / "database.sql.gz", pristine(healthy_sandbox).replace(ANCHOR, ANCHOR + planted, 1))
        result = drill(healthy_sandbox, dump, None)
        assert not marker.exists()
        assert not result.restored and "pg_execute_server_program" in result.error, result.error
        assert result.dropped and leftovers(healthy_sandbox) == []
    finally:
        import shutil

        shutil.rmtree(shared, ignore_errors=True)
