"""The PostgreSQL server of the stack, chosen among every one that listens by the fact that decides (a service's
DSN, what the server holds, the services' connections, then the runbook's port), with its replicas, and
`password_env` only where the server refused a session without a password.

>>> find_databases(reader, services)       # fills reader.found.databases
>>> reader.found.databases[0].evidence[1]
'chosen by content: the only server holding database acgs_production (audit_logs in it)'
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from acgs_verify.discover.choice import choose, chosen
from acgs_verify.discover.cmdline import anchored, bracket, connect_address, flag, port_token, program
from acgs_verify.discover.connections import services_peers
from acgs_verify.discover.model import Item
from acgs_verify.discover.reader import HostReader
from acgs_verify.discover.urls import url_without_password
from acgs_verify.probes.processes import Proc

PG_PORT = 5432
ROLE, DATABASE, AUDIT_TABLE = "acgs", "acgs_production", "audit_logs"
DB_VARS = re.compile(r"(^|_)(DATABASE_URL|DATABASE_URI|DB_URL|POSTGRES_DSN|POSTGRES_URL|PG_DSN)$")
CONNECT_TIMEOUT = 3


@dataclass
class Session:
    """What one session without a password said: it opened (and whether the audit table is there), or why not."""

    opened: bool
    audit: bool = False
    refused_password: bool = False  # the server asked for a password (or rejected the lack of one)
    why: str = ""


def listeners_of(reader: HostReader, name: str) -> list[tuple[int, Proc, str]]:
    """(port, owner, address) of each listening port whose owner runs program `name` (or, hidden, a process of
    that program whose command line names the port)."""
    out = []
    for lis in reader.listeners():
        owner = next((p for p in lis.owners if program(p.args) == name), None)
        if owner:
            out.append((lis.port, owner, connect_address(lis.addresses)))
        elif not lis.owners:
            named = [p for p in reader.facts.procs if program(p.args) == name and port_token(p.args, lis.port)]
            if named:
                out.append((lis.port, named[0], connect_address(lis.addresses)))
    return out


def env_urls(reader: HostReader, services: list, names: re.Pattern, kind: str) -> list[tuple[str, str, int]]:
    """(url without password, variable, pid) from the services' environments; a value that cannot be read
    safely is left out with a TODO naming the variable, never quoting the value."""
    out = []
    for s in services:
        env = reader.proc_details(s.proc.pid)["env"]
        if isinstance(env, str):
            reader.found.todos.append(env + ": the DSNs it may use are not known")
            continue
        for k, v in sorted(env.items()):
            if not names.search(k):
                continue
            url = url_without_password(v, kind)
            if url is None:
                reader.found.todos.append(f"{k} in the environment of pid {s.proc.pid} is not a {kind} URL that "
                                          "can be written without its password: left out (value not shown)")
            else:
                out.append((url, k, s.proc.pid))
    return out


def session_without_password(address: str, port: int, user: str, dbname: str) -> Session:
    """One read-only session with no password given (trust, peer or ~/.pgpass may let it in): did it open, and is
    the audit table there? Never raises; the reason is the server's own one line, cut."""
    import psycopg

    from acgs_verify.redact import cut, printable

    try:
        with psycopg.connect(host=address, port=port, user=user, dbname=dbname, connect_timeout=CONNECT_TIMEOUT,
                             options="-c default_transaction_read_only=on -c statement_timeout=3000",
                             application_name="acgs-verify-discover", autocommit=True) as conn:
            row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (AUDIT_TABLE,)).fetchone()
            return Session(True, audit=bool(row and row[0]))
    except psycopg.Error as exc:
        text = str(exc)
        asked = bool(re.search(r"password authentication failed|no password supplied|fe_sendauth", text))
        return Session(False, refused_password=asked, why=cut(printable(text.strip().splitlines()[-1] if text.strip()
                                                                         else type(exc).__name__), 160))


def find_databases(reader: HostReader, services: list) -> None:
    found = reader.found
    servers = listeners_of(reader, "postgres")
    dsns = env_urls(reader, services, DB_VARS, "postgresql")
    replicas = _replicas(reader, servers)
    primaries = [s for s in servers if s[0] not in replicas]
    env_ports = {urlsplit(d[0]).port or PG_PORT: d for d in dsns}
    user, dbname = ROLE, DATABASE
    if dsns:
        first = urlsplit(dsns[0][0])
        user, dbname = first.username or ROLE, first.path.lstrip("/") or DATABASE
    sessions = {p: _session(reader, a, p, user, dbname) for p, _, a in primaries}
    holding = {p for p, s in sessions.items() if s and s.opened}
    audited = {p for p, s in sessions.items() if s and s.audit}
    peers, _ = services_peers(reader, services)
    pick = choose([p for p, _, _ in primaries], [
        ("a service's environment names it", set(env_ports)),
        (f"content: it holds database {dbname}", holding),
        (f"content: database {dbname} holds table {AUDIT_TABLE}", audited),
        ("the services' established connections", {p for p in peers}),
    ], PG_PORT + reader.offset)
    if pick.port is None:
        found.todos.append("databases: no PostgreSQL listens here" if not servers else
                           f"databases: {len(primaries)} PostgreSQL servers listen (ports "
                           f"{', '.join(str(p) for p in pick.undecided)}) and no fact chose one")
        return
    port, proc, address, ev = chosen(pick, primaries, "PostgreSQL", "database", found)
    if port in env_ports:
        dsn, var, pid = env_ports[port]
        ev.append(f"{var} in the environment of pid {pid}, rebuilt from its user, host, port and database: no "
                  "password")
    else:
        dsn = f"postgresql://{user}@{bracket(address)}:{port}/{dbname}"
        ev.append(f"TODO dsn: no service names a database URL; the runbook's role and database ({user}, {dbname}) "
                  f"on the server listening on {port}")
    data: dict = {"name": "primary", "dsn": dsn}
    u = urlsplit(dsn)
    written = (u.username or ROLE, u.path.lstrip("/") or DATABASE)
    # the password question is asked as the profile will connect: its DSN's role and database
    session = sessions.get(port) if written == (user, dbname) else _session(reader, address, port, *written)
    data_password(data, ev, session)
    pattern = anchored(proc.args, port)
    if pattern:
        data["process"] = pattern
    unit = reader.proc_details(proc.pid).get("unit")
    data["unit"] = unit
    ev.append(f"systemd unit {unit}" if unit else f"unit: null: no systemd unit in /proc/{proc.pid}/cgroup")
    reps = sorted(p for p, prim in replicas.items() if prim == port)
    if reps:
        base = urlsplit(dsn)
        data["replicas"] = [urlunsplit(base._replace(netloc=f"{base.username or ROLE}@{bracket(address)}:{p}"))
                            for p in reps]
        ev.append(f"replica{'s' if len(reps) > 1 else ''} on {', '.join(map(str, reps))}: standby.signal in the "
                  f"data directory, primary_conninfo names port {port}")
    found.databases.append(Item(data, ev))
    for p, pr, a in servers:
        if p != port and p not in reps:
            why = "a standby (standby.signal)" if p in replicas else _said(sessions.get(p))
            found.todos.append(f"another PostgreSQL on {a}:{p} (pid {pr.pid}) left out: {why}")


def data_password(data: dict, ev: list[str], session: Session | None) -> None:
    """`password_env` only where the server refused a session for want of a password; else a comment why not."""
    if session is not None and session.refused_password:
        data["password_env"] = "ACGS_DB_PASSWORD"
        ev.append("password_env: ACGS_DB_PASSWORD: the server refused a session without a password (export it; "
                  "discover never writes a password)")
    elif session is not None and session.opened and "PGPASSWORD" not in os.environ:
        ev.append("no password_env: the server opened a session without a password (trust, peer or ~/.pgpass); "
                  "add `password_env: ACGS_DB_PASSWORD` if the checker's host needs one")
    else:
        data["password_env"] = "ACGS_DB_PASSWORD"
        why = ("PGPASSWORD is set where discover ran, so a session proves nothing" if session and session.opened
               else f"a session without a password could not tell ({session.why})" if session
               else "the server was not asked from here (a remote host)")
        ev.append(f"password_env: ACGS_DB_PASSWORD: {why}; remove it if the server needs none")


def _session(reader: HostReader, address: str, port: int, user: str, dbname: str) -> Session | None:
    """A session from the checker, only where the checker is the host itself (a remote host's loopback is not
    ours)."""
    if reader.host.backend != "local":
        return None
    return session_without_password(address, port, user, dbname)


def _said(session: Session | None) -> str:
    if session is None:
        return "not asked"
    if session.opened:
        return "it also opened a session without a password"
    return session.why or "no session"


def _replicas(reader: HostReader, servers: list[tuple[int, Proc, str]]) -> dict[int, int]:
    """replica port -> its primary's port (-1 when unnamed): standby.signal in the data directory."""
    replicas: dict[int, int] = {}
    for port, proc, _ in servers:
        data_dir = reader.absolute(proc.pid, flag(proc.args, "-D"))
        if data_dir:
            rc, _ = reader.sh("test", "-e", f"{data_dir}/standby.signal", sudo=True)
            if rc == 0:
                rc, out = reader.sh("grep", "-o", "-e", r"port=[0-9]*", "--", f"{data_dir}/postgresql.auto.conf",
                                    sudo=True)
                ports = re.findall(r"port=(\d+)", out)
                replicas[port] = int(ports[-1]) if ports else -1
    return replicas
