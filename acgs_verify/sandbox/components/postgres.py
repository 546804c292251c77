"""The sandbox's PostgreSQL: a primary with acgs_production, and a streaming replica, with their faults.

Its own cluster (initdb), on 127.0.0.1 only (no Unix socket), port 5432 + offset and the replica on
5433 + offset. PostgreSQL refuses to run as root, so when the sandbox runs as root the cluster runs as
the unprivileged `postgres` user (ACGS_SANDBOX_PG_USER to pick another) and lives in a directory of its
own under the system temp dir, which that user can reach (a sandbox dir under a 0700 parent may not be).

The role `acgs` logs in with the password in $ACGS_SANDBOX_DB_PASSWORD (a random one when unset); `up`
writes it to DIR/secrets/db.password (0600), which the generated profile names as password_file. The
superuser `postgres` has a random password in DIR/secrets/pg-admin.password; the sandbox alone uses it.

State slice: {"root", "user", "bindir", "processes": {"primary", "replica", "decoy"}, "holders": {fault: record},
"faults": [...], "undo": {fault: what heal restores}}.

`db-down-decoy` is the field's false negative: the primary is stopped while another PostgreSQL runs on the host, a
tiny cluster of its own whose command line even names the primary's port (`postgres -D .../decoy -p 15432 -c
listen_addresses=`), so the profile's pattern and `postgres` both match it, but it listens on no TCP port.
"""

from __future__ import annotations

import contextlib
import math
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from acgs_verify import pgbin
from acgs_verify.redact import one_line
from acgs_verify.sandbox import pg_seed
from acgs_verify.sandbox.components.base import (
    Component,
    Context,
    SandboxError,
    adopt,
    claim_port,
    is_alive,
    spawn_holder,
    stop,
    tail,
    wait_alive,
    wait_until,
    write_password,
)
from acgs_verify.sandbox.constants import (
    ADMIN,
    DATABASE,
    DB_PASSWORD_ENV,
    PRIMARY_PORT,
    REPLICA_PORT,
    RESTORE_ROLE,
    ROLE,
    RUN_DIR,
    secret_path,
)
from acgs_verify.sandbox.holders import APP_PREFIX

MAX_CONNECTIONS = 30
SATURATION_PERCENT = 80  # the default db_connections_max_percent: db-saturation fills the server up to it
START_TIMEOUT = 30
_DOWN = ("db-down", "db-down-decoy")  # faults that keep the primary stopped
_HELD = ("db-long-query", "db-lock", "db-saturation", "db-idle-in-transaction")  # sessions a holder process keeps


def primary_port(offset: int) -> int:
    return PRIMARY_PORT + offset


def replica_port(offset: int) -> int:
    return REPLICA_PORT + offset


def process_pattern(port: int) -> str:
    """The regex DB-02 uses: the postmaster started with `-p PORT` (pg_ctl's command line)."""
    return rf"postgres -D \S+ -p {port}( |$)"


def find_bindir() -> str:
    """Where initdb and friends live: pg_config's bindir if it has them, else the newest Debian install."""
    try:
        return pgbin.server_bindir()
    except LookupError as exc:
        raise SandboxError(str(exc)) from None


class Postgres(Component):
    name = "postgres"
    fault_names = ("db-down", "db-down-decoy", "db-long-query", "db-lock", "db-saturation", "db-slow-statements",
                   "db-stale-stats", "db-replica-lag", "audit-old-rows", "audit-chain-break", "audit-wrong-hash",
                   "low-compliance",
                   # the layouts and permissions of a real deployment (issue 11)
                   "field-audit", "audit-tenant-break", "audit-rls-hidden",
                   # the runbook's remaining steps (issue 13)
                   "db-bloat", "db-unused-index", "db-idle-in-transaction")
    fault_help = {
        "db-down": "stops the primary PostgreSQL (DB-01..13, CC-04, CC-05 fail)",
        "db-down-decoy": "stops the primary and starts another cluster elsewhere: a postgres process that is not "
                         "the one on the database's port (DB-02 must not be fooled)",
        "db-long-query": "a session runs one statement for minutes (DB-04, after db_long_query_seconds)",
        "db-lock": "a session holds a lock another one waits for (DB-05)",
        "db-saturation": "sessions fill most of max_connections (DB-03)",
        "db-slow-statements": "slow statements in pg_stat_statements (DB-06)",
        "db-stale-stats": "table statistics never analyzed (DB-09)",
        "db-replica-lag": "the replica's replay is paused (DB-07)",
        "audit-old-rows": "audit rows older than the retention (DB-10)",
        "audit-chain-break": "one audit row's prev_hash no longer links its chain (CC-05)",
        "audit-wrong-hash": "audit rows carry another constitutional hash (CC-05)",
        "low-compliance": "recent governance decisions mostly non-compliant (CC-04)",
        "field-audit": "a layout, not a fault: the audit table as a real deployment has it (all checks pass)",
        "audit-tenant-break": "one tenant's hash chain broken among per-tenant chains (CC-05)",
        "audit-rls-hidden": "row-level security hides every audit row from the checker's role (CC-05, CC-04, "
                            "DB-10)",
        "db-bloat": "a table with many dead tuples (DB-11)",
        "db-unused-index": "an index nothing uses and a large table read by sequential scans (DB-12 warns)",
        "db-idle-in-transaction": "a session idle in an open transaction (DB-13, after "
                                  "db_idle_in_transaction_seconds_max)",
    }

    # ---------------------------------------------------------------------------------- lifecycle
    def up(self, ctx: Context) -> None:
        offset = ctx.port_offset
        for port in (primary_port(offset), replica_port(offset)):
            claim_port(port, "PostgreSQL", offset)
        ctx.state.update(processes={}, holders={}, faults=[], undo={}, bindir=find_bindir(), user=_run_as())
        ctx.state["root"] = str(self._make_root(ctx))
        ctx.save()
        with self.undone_on_failure(ctx):
            write_password(self._password_file(ctx), DB_PASSWORD_ENV)
            write_password(self._admin_file(ctx))
            write_password(self._restore_file(ctx))
            self._initdb(ctx)
            self._start(ctx, "primary")
            with self._admin(ctx, "postgres") as conn:
                pg_seed.create_role_and_database(conn, ROLE, self._password(ctx), DATABASE)
                pg_seed.create_restore_role(conn, RESTORE_ROLE, self._secret(self._restore_file(ctx)))
            with self._admin(ctx) as conn:
                pg_seed.create_schema(conn, ROLE)
                pg_seed.seed(conn)
                pg_seed.settle_statistics(conn)
            self._basebackup(ctx)
            self._start(ctx, "replica")
            self._wait_streaming(ctx)

    def down(self, ctx: Context) -> list[str]:
        stopped: list[str] = []
        for name, record in sorted(ctx.state.get("holders", {}).items()):
            if stop(record):
                stopped.append(f"{name} holder (pid {record['pid']})")
        for name in ("decoy", "replica", "primary"):
            record = ctx.state.get("processes", {}).get(name)
            if record and is_alive(record):
                self._pg_ctl(ctx, "stop", name, "-m", "immediate", check=False)
                stop(record)  # in case pg_ctl could not
                stopped.append(f"postgres {name} (pid {record['pid']})")
        root = ctx.state.get("root")
        if root:
            shutil.rmtree(root, ignore_errors=True)
            with contextlib.suppress(OSError):
                (ctx.dir / "postgres").unlink()
        ctx.state.update(processes={}, holders={}, undo={}, root=None)
        self.clear_faults(ctx)
        return stopped

    def status(self, ctx: Context) -> list[dict[str, Any]]:
        return [self.process_row(ctx, f"postgres {name}", ctx.state.get("processes", {}).get(name), port)
                for name, port in (("primary", primary_port(ctx.port_offset)),
                                   ("replica", replica_port(ctx.port_offset)))]

    def profile_fragment(self, ctx: Context) -> dict[str, Any]:
        port, rport = primary_port(ctx.port_offset), replica_port(ctx.port_offset)
        return {"databases": [{
            "name": "primary",
            "dsn": f"postgresql://{ROLE}@127.0.0.1:{port}/{DATABASE}",
            "password_file": str(self._password_file(ctx)),
            "unit": None,  # no systemd in the sandbox: DB-02 looks for the process and the port
            "process": process_pattern(port),
            "replicas": [f"postgresql://{ROLE}@127.0.0.1:{rport}/{DATABASE}"],
            # the restore drill's credential (BK-07 runs only when asked, or in the pre-maintenance gate)
            "admin_dsn": f"postgresql://{RESTORE_ROLE}@127.0.0.1:{port}/postgres",
            "admin_password_file": str(self._restore_file(ctx)),
        }]}

    # ------------------------------------------------------------------------------------- faults
    def refuse(self, ctx: Context, fault: str, target: str) -> str | None:
        clash = [f for f in self.active_faults(ctx) if f in pg_seed.RESHAPE_AUDIT and fault in pg_seed.RESHAPE_AUDIT]
        return f"{fault} and {clash[0]} both rewrite every audit row's hashes: heal {clash[0]} first" if clash else None

    def break_(self, ctx: Context, fault: str, target: str) -> None:
        if fault in _DOWN:
            if self._running(ctx, "primary"):
                self._stop(ctx, "primary")
            if fault == "db-down-decoy":
                self._start_decoy(ctx)
        elif fault in _HELD:
            self._hold(ctx, fault)
        elif fault == "db-slow-statements":
            with self._connect(ctx, ROLE, self._password(ctx), DATABASE) as conn:
                for _ in range(3):
                    conn.execute("SELECT pg_sleep(0.25), count(*) FROM policies /* acgs-sandbox: slow */")
        else:
            with self._admin(ctx) as conn:
                undo = pg_seed.BREAK[fault](conn, self._replica_admin(ctx))
            if undo is not None:
                ctx.state.setdefault("undo", {})[fault] = undo
                ctx.save()

    def heal(self, ctx: Context, fault: str, target: str) -> None:
        if fault == "db-down-decoy":
            self._stop(ctx, "decoy")
            shutil.rmtree(self._data(ctx, "decoy"), ignore_errors=True)
        if fault in _DOWN:
            if not (set(_DOWN) - {fault}) & set(self.active_faults(ctx)):  # the other one keeps it down
                self._start(ctx, "primary")
                with self._admin(ctx) as conn:
                    pg_seed.settle_statistics(conn, statements=False)
                self._wait_streaming(ctx)
        elif fault in _HELD:
            self._release(ctx, fault)
        elif fault == "db-slow-statements":
            with self._admin(ctx) as conn:
                conn.execute("SELECT pg_stat_statements_reset()")
        else:
            with self._admin(ctx) as conn:
                pg_seed.HEAL[fault](conn, self._replica_admin(ctx), ctx.state.get("undo", {}).get(fault))
        ctx.state.get("undo", {}).pop(fault, None)
        ctx.save()

    def _hold(self, ctx: Context, fault: str) -> None:
        args = {"db-long-query": ["long-query"], "db-lock": ["lock"],
                "db-saturation": ["idle", str(math.ceil(MAX_CONNECTIONS * SATURATION_PERCENT / 100))],
                "db-idle-in-transaction": ["idle-in-transaction"]}[fault]
        port = primary_port(ctx.port_offset)
        record = spawn_holder(ctx, fault, args, ACGS_HOLDER_DSN=f"postgresql://{ROLE}@127.0.0.1:{port}/{DATABASE}",
                              PGPASSWORD=self._password(ctx))
        ctx.state.setdefault("holders", {})[fault] = record
        ctx.save()
        # the fault is on once the server shows it, so a run right after `break` sees it
        ready = {"db-long-query": "SELECT count(*) >= 1 FROM pg_stat_activity WHERE application_name = %(a)s"
                                  " AND state = 'active' AND wait_event = 'PgSleep'",
                 "db-lock": "SELECT count(*) >= 1 FROM pg_stat_activity WHERE application_name = %(a)s || '-blocked'"
                            " AND cardinality(pg_blocking_pids(pid)) > 0",
                 "db-saturation": f"SELECT count(*) >= {args[-1]} FROM pg_stat_activity"
                                  " WHERE application_name = %(a)s",
                 "db-idle-in-transaction": "SELECT count(*) >= 1 FROM pg_stat_activity WHERE application_name = %(a)s"
                                           " AND state = 'idle in transaction'"}[fault]
        with self._admin(ctx) as conn:
            def gave_up() -> str:
                err = tail(ctx.dir / RUN_DIR / f"{fault}.err")
                return f"{fault}: the holder did not get its sessions in place: {err}"

            try:
                wait_alive(record, gave_up, lambda: conn.execute(ready, {"a": APP_PREFIX + fault}).fetchone()[0], 20,
                           interval=0.1)
            except SandboxError:
                self._release(ctx, fault)
                raise

    def _release(self, ctx: Context, fault: str) -> None:
        if ctx.state.get("processes", {}).get("primary") and is_alive(ctx.state["processes"]["primary"]):
            with self._admin(ctx) as conn:
                # the blocked session goes first: ended after its blocker, it would complete and be recorded
                # in pg_stat_statements with its whole wait as one slow statement
                for app in (f"{fault}-blocked", fault, f"{fault}-blocker"):
                    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                                 (APP_PREFIX + app,))
        stop(ctx.state.get("holders", {}).pop(fault, None))
        ctx.save()

    # ------------------------------------------------------------------------------------ cluster
    def _make_root(self, ctx: Context) -> Path:
        link = ctx.dir / "postgres"
        if link.is_symlink():
            link.unlink()
        elif link.exists():
            shutil.rmtree(link)
        user = ctx.state["user"]
        if user is None:
            link.mkdir(parents=True)
            return link
        # a directory the cluster's user owns, reachable whatever the modes above the sandbox dir are
        root = Path(tempfile.mkdtemp(prefix="acgs-sandbox-pg-"))
        pw = pwd.getpwnam(user)
        os.chown(root, pw.pw_uid, pw.pw_gid)
        os.chmod(root, 0o700)
        link.symlink_to(root)
        return root

    def _as_user(self, ctx: Context, argv: list[str], check: bool = True, env: dict | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess:
        kwargs: dict[str, Any] = {}
        if ctx.state.get("user"):
            pw = pwd.getpwnam(ctx.state["user"])
            kwargs = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        full_env = {**os.environ, "LC_ALL": "C", **(env or {})}
        try:
            res = subprocess.run(argv, capture_output=True, text=True, env=full_env, cwd=ctx.state["root"],
                                 timeout=timeout, **kwargs)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxError(f"{Path(argv[0]).name} failed: {exc}") from None
        if check and res.returncode != 0:
            why = " | ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
            raise SandboxError(f"{Path(argv[0]).name} failed (exit {res.returncode}): {why}")
        return res

    def _data(self, ctx: Context, name: str) -> Path:
        return Path(ctx.state["root"]) / name

    def _tool(self, ctx: Context, tool: str) -> str:
        return str(Path(ctx.state["bindir"]) / tool)

    def _initdb(self, ctx: Context) -> None:
        root = Path(ctx.state["root"])
        pwfile = root / ".pwfile"
        pwfile.write_text(self._secret(self._admin_file(ctx)) + "\n")
        if ctx.state.get("user"):
            pw = pwd.getpwnam(ctx.state["user"])
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        os.chmod(pwfile, 0o600)
        try:
            self._as_user(ctx, [self._tool(ctx, "initdb"), "-D", str(self._data(ctx, "primary")), "-U", ADMIN,
                                f"--pwfile={pwfile}", "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C",
                                "--no-sync"])
        finally:
            pwfile.unlink(missing_ok=True)
        data = self._data(ctx, "primary")
        with open(data / "postgresql.conf", "a") as f:
            f.write(pg_seed.server_settings(MAX_CONNECTIONS))
        (data / "pg_hba.conf").write_text(
            "# acgs-verify sandbox: loopback only, passwords always\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            f"host replication {ADMIN} 127.0.0.1/32 scram-sha-256\n")

    def _pg_ctl(self, ctx: Context, action: str, name: str, *args: str, check: bool = True):
        return self._as_user(ctx, [self._tool(ctx, "pg_ctl"), action, "-D", str(self._data(ctx, name)), *args],
                             check=check, timeout=START_TIMEOUT + 10)

    def _start(self, ctx: Context, name: str) -> None:
        port = primary_port(ctx.port_offset) if name == "primary" else replica_port(ctx.port_offset)
        log = Path(ctx.state["root"]) / f"{name}.log"
        res = self._pg_ctl(ctx, "start", name, "-w", "-t", str(START_TIMEOUT), "-l", str(log), "-o", f"-p {port}",
                           check=False)
        if res.returncode != 0:
            raise SandboxError(f"postgres {name} did not start on port {port}: {tail(log)}")
        pid = int((self._data(ctx, name) / "postmaster.pid").read_text().split()[0])
        ctx.state.setdefault("processes", {})[name] = adopt(pid)
        ctx.save()

    def _stop(self, ctx: Context, name: str) -> None:
        record = ctx.state.get("processes", {}).get(name)
        self._pg_ctl(ctx, "stop", name, "-m", "fast", "-w", "-t", "20", check=False)
        stop(record)
        ctx.state["processes"][name] = None
        ctx.save()

    def _running(self, ctx: Context, name: str) -> bool:
        return is_alive(ctx.state.get("processes", {}).get(name))

    def _start_decoy(self, ctx: Context) -> None:
        """Another PostgreSQL on the host: its own cluster, started with the primary's port on its command line but
        no TCP listener (a Unix socket in its own directory only)."""
        data = self._data(ctx, "decoy")
        shutil.rmtree(data, ignore_errors=True)
        self._as_user(ctx, [self._tool(ctx, "initdb"), "-D", str(data), "-U", ADMIN, "--auth=trust",
                            "--encoding=UTF8", "--locale=C", "--no-sync"])
        with open(data / "postgresql.conf", "a") as f:  # in its file, so the command line is the pattern's shape
            f.write(f"listen_addresses = ''\nunix_socket_directories = '{data}'\nshared_buffers = 1MB\n"
                    "max_connections = 10\n")
        log = Path(ctx.state["root"]) / "decoy.log"
        res = self._pg_ctl(ctx, "start", "decoy", "-w", "-t", str(START_TIMEOUT), "-l", str(log), "-o",
                           f"-p {primary_port(ctx.port_offset)}", check=False)
        if res.returncode != 0:
            raise SandboxError(f"the decoy PostgreSQL did not start: {tail(log)}")
        pid = int((data / "postmaster.pid").read_text().split()[0])
        ctx.state.setdefault("processes", {})["decoy"] = adopt(pid)
        ctx.save()

    def _basebackup(self, ctx: Context) -> None:
        data = self._data(ctx, "replica")
        self._as_user(ctx, [self._tool(ctx, "pg_basebackup"), "-h", "127.0.0.1", "-p",
                            str(primary_port(ctx.port_offset)), "-U", ADMIN, "-D", str(data), "-R", "-X", "stream",
                            "-c", "fast", "--no-sync"],
                      env={"PGPASSWORD": self._secret(self._admin_file(ctx))})
        with open(data / "postgresql.conf", "a") as f:
            # the replica tells the primary where its replay is every second, so pg_stat_replication is fresh;
            # once the primary is back from db-down it reconnects within 0.1 s, not the default 5 s that every
            # heal of a stopped primary waited out in _wait_streaming
            f.write("wal_receiver_status_interval = 1s\nhot_standby_feedback = on\n"
                    "wal_retrieve_retry_interval = 100ms\n")

    def _wait_streaming(self, ctx: Context, timeout: float = 30) -> None:
        with self._admin(ctx, "postgres") as conn:
            lag: list = []

            def streaming() -> bool:
                lag[:] = conn.execute("SELECT state, extract(epoch FROM replay_lag)::float FROM pg_stat_replication"
                                      ).fetchall()
                return bool(lag) and lag[0][0] == "streaming" and (lag[0][1] or 0) < 1

            wait_until(lambda: f"the replica is not streaming after {timeout:.0f} s (pg_stat_replication: {lag}); "
                               f"see {Path(ctx.state['root']) / 'replica.log'}", streaming, timeout, interval=0.2)

    # ------------------------------------------------------------------------------------ sessions
    def _password_file(self, ctx: Context) -> Path:
        return secret_path(ctx.dir, "db")

    def _admin_file(self, ctx: Context) -> Path:
        return secret_path(ctx.dir, "pg-admin")

    def _restore_file(self, ctx: Context) -> Path:
        return secret_path(ctx.dir, "restore")

    def _secret(self, path: Path) -> str:
        return path.read_text().strip()

    def _password(self, ctx: Context) -> str:
        return self._secret(self._password_file(ctx))

    @contextlib.contextmanager
    def _connect(self, ctx: Context, user: str, password: str, dbname: str, port: int | None = None) -> Iterator:
        import psycopg

        try:
            # the sandbox's own housekeeping as superuser (seeding, ANALYZE, warm-up) stays out of
            # pg_stat_statements, which DB-06 judges
            options = "-c pg_stat_statements.track=none" if user == ADMIN else ""
            conn = psycopg.connect(host="127.0.0.1", port=port or primary_port(ctx.port_offset), user=user,
                                   password=password, dbname=dbname, autocommit=True, connect_timeout=10,
                                   application_name="acgs-sandbox", options=options)
        except psycopg.Error as exc:
            raise SandboxError(f"cannot connect to the sandbox PostgreSQL as {user}: "
                               f"{one_line(exc, [password])}") from None
        with conn:
            yield conn

    def _admin(self, ctx: Context, dbname: str = DATABASE):
        return self._connect(ctx, ADMIN, self._secret(self._admin_file(ctx)), dbname)

    def _replica_admin(self, ctx: Context):
        """A factory for a superuser session on the replica (only db-replica-lag needs one)."""
        return lambda: self._connect(ctx, ADMIN, self._secret(self._admin_file(ctx)), "postgres",
                                     port=replica_port(ctx.port_offset))


def _run_as() -> str | None:
    """The user the cluster runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    user = os.environ.get("ACGS_SANDBOX_PG_USER", "postgres")
    try:
        pwd.getpwnam(user)
    except KeyError:
        raise SandboxError(f"running as root, but there is no user {user!r} to run PostgreSQL as "
                           "(PostgreSQL refuses root); create one or set ACGS_SANDBOX_PG_USER") from None
    return user
