"""The PostgreSQL server behind a port (DB-02): which process it is, asked of the server itself and matched with the
host's process list, and its data directory and version.

>>> says = server_says(pg.get(database))   # what the server says of itself, with a monitoring role's grants
ServerSays(port=5432, backend_pid=4711, data_directory='/var/lib/postgresql/15/main', uptime_s=86400.2)
>>> identify_server(port_owners(pool, host), 5432, "postgres", says, lambda pid: uptime(pool, host, pid))
Identity(ok=True, measured='PostgreSQL server pid 880 (...), identified by asking it: ...', ...)
>>> postgres_server(pool, host, owner)     # owner: the Proc that owns the database's port (probes/processes.py)
{'data_directory': '/var/lib/postgresql/15/main', 'version': 'postgres (PostgreSQL) 15.14'}

Everything asked is readable by any role (`inet_server_port()`, `pg_backend_pid()`, `pg_postmaster_start_time()`)
but the data directory, which pg_settings shows only to a superuser or pg_read_all_settings (pg_monitor): without
it the server is still found, by its session's parent and its start time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from acgs_verify.errors import ProbeError
from acgs_verify.hosts.commands import command
from acgs_verify.probes.processes import Identity, PortOwners, Proc, identify

if TYPE_CHECKING:
    from acgs_verify.hosts.pool import HostPool
    from acgs_verify.probes.postgres import Pg
    from acgs_verify.profile.model import Host

UPTIME_SLACK_S = 5  # ps's elapsed time and the server's own start time: a query and a ps apart, whole seconds


@dataclass(frozen=True)
class ServerSays:
    """What a PostgreSQL server says of itself over the run's session."""

    port: int | None  # inet_server_port(): None over a Unix socket
    backend_pid: int  # the process serving this session: a child of the postmaster
    data_directory: str | None  # None: the role may not read it (not superuser, not pg_read_all_settings)
    uptime_s: float  # now() - pg_postmaster_start_time()


def server_says(pg: Pg) -> ServerSays:
    """Ask the server who it is; ProbeError when it cannot be asked (DB-01 says why)."""
    rows = pg.rows("SELECT (SELECT setting FROM pg_settings WHERE name = 'data_directory') AS data_directory, "
                   "inet_server_port() AS port, pg_backend_pid() AS backend_pid, "
                   "extract(epoch FROM now() - pg_postmaster_start_time())::float8 AS uptime_s")
    if not rows:
        raise ProbeError("the server answered nothing about itself")
    r = rows[0]
    return ServerSays(r["port"], int(r["backend_pid"]), r["data_directory"], float(r["uptime_s"]))


def uptime(pool: HostPool, host: Host, pid: int) -> int | None:
    """Seconds process `pid` of `host` has run, None when it is gone; once per pid per run: read_uptime."""
    return pool.measure(host, f"uptime of pid {pid}", read_uptime, pid)


def read_uptime(conn, pid: int) -> int | None:
    """From /proc, readable by anyone: the process's start (field 22 of /proc/PID/stat, clock ticks after boot)
    against the host's /proc/uptime. The process table itself is read once per run (port_owners)."""
    out = conn.run(command("cat", "--", f"/proc/{pid}/stat", "/proc/uptime") + "; getconf CLK_TCK").stdout
    lines = out.splitlines()
    if len(lines) != 3 or ") " not in lines[0]:
        return None
    fields = lines[0].rsplit(") ", 1)[1].split()  # after the command name, which may hold spaces
    try:
        started_ticks, booted_s, ticks = int(fields[19]), float(lines[1].split()[0]), int(lines[2])
    except (IndexError, ValueError):
        return None
    return int(booted_s - started_ticks / ticks)


def data_dir_of(proc: Proc) -> str | None:
    """The `-D` of a postmaster's command line (world-readable), normalised; None when it was started without."""
    m = re.search(r"(?:^|\s)-D\s*(\S+)", proc.args)
    return os.path.normpath(m.group(1)) if m else None


def identify_server(facts: PortOwners, port: int, pattern: str | None, says: ServerSays | None,
                    uptime_of: Callable[[int], int | None]) -> Identity:
    """The postmaster that answered the run's session, found in the host's process list by what the server said:
    its session's backend is the postmaster's child, its data directory is the postmaster's `-D`, and they started
    together. Judged as identify() judges a port's owner: the pattern must match it. Without an answer (`says`
    None), or when nothing on this host fits it (the server runs elsewhere), identify() alone decides.
    """
    seen = identify(facts, port, pattern, "PostgreSQL")
    # an answer from another port (a pooler, a proxy in between) says nothing of the server on this one
    asked_here = says is not None and says.port in (None, port)
    postmaster, how = _postmaster(facts, says, uptime_of) if asked_here else (None, [])
    if postmaster is None:
        return seen
    asked = f"asked: {', '.join(how)}"
    listener = facts.listeners.get(port)
    if listener is not None and listener.owners:  # the socket's owner was seen: the answer must agree with it
        if postmaster.pid in {p.pid for p in listener.owners}:
            return Identity(seen.ok, f"{seen.measured}; the server {asked}", seen.owner, seen.warning, seen.pids)
        return Identity(False, f"{seen.measured}, but the server that answered is {postmaster.describe()} ({asked})",
                        seen.owner, pids=(*seen.pids, postmaster.pid))
    rx = re.compile(pattern) if pattern else None
    shown = f"PostgreSQL server {postmaster.describe()}, identified by asking it ({asked})"
    if rx is None or rx.search(postmaster.args):
        return Identity(True, shown, postmaster, pids=(postmaster.pid,))
    others = [p for p in seen.pids if p != postmaster.pid]
    return Identity(False, f"{shown}; it does not match /{pattern}/"
                           + (f" (processes {', '.join(map(str, others))} do, and are not it)" if others else ""),
                    postmaster, pids=(postmaster.pid, *others))


def _postmaster(facts: PortOwners, says: ServerSays, uptime_of: Callable[[int], int | None]) -> tuple:
    """(the postmaster's Proc, the facts that tie it to the answer) or (None, [])."""
    by_pid = {p.pid: p for p in facts.procs}
    backend = by_pid.get(says.backend_pid)
    candidates: list[tuple[Proc, list[str]]] = []
    if backend is not None and backend.ppid in by_pid:
        candidates.append((by_pid[backend.ppid], [f"session pid {says.backend_pid} is its child"]))
    elif says.data_directory:
        wanted = os.path.normpath(says.data_directory)
        candidates += [(p, []) for p in facts.procs if data_dir_of(p) == wanted and p.ppid not in
                       {q.pid for q in facts.procs if data_dir_of(q) == wanted}]
    for proc, how in candidates:
        if says.data_directory:
            mine = data_dir_of(proc)
            if mine is not None and mine != os.path.normpath(says.data_directory):
                continue
            if mine is not None:
                how = [*how, "its -D is the data_directory"]
        ran = uptime_of(proc.pid)
        if ran is None or abs(ran - says.uptime_s) > UPTIME_SLACK_S:
            continue  # a pid reused, or another server with the same directory: not the one that answered
        return proc, [*how, f"up {says.uptime_s:.0f} s as it"]
    return None, []


def postgres_server(pool: HostPool, host: Host, owner: Proc) -> dict[str, str]:
    """read_postgres_server of the postmaster `owner` on `host`, once per run."""
    return pool.measure(host, f"postgres {owner.pid}", read_postgres_server, owner, host.become)


def read_postgres_server(conn, owner: Proc, become: bool = False) -> dict[str, str]:
    """The data directory and version of the postmaster `owner`: `-D` from its command line (else /proc/PID/cwd,
    where the postmaster lives), and `BINARY --version` (else PG_VERSION in the data directory).

    >>> read_postgres_server(conn, owner)
    {'data_directory': '/var/lib/postgresql/15/main', 'version': 'postgres (PostgreSQL) 15.14'}

    What cannot be read says why instead ("unknown: /proc/88/cwd not readable by nobody").
    """
    sudo = "sudo -n " if become else ""
    argv = owner.args.split()
    data = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-D"), None)
    if data is None:
        res = conn.run(sudo + command("readlink", "--", f"/proc/{owner.pid}/cwd"))
        data = res.stdout.strip() if res.rc == 0 and res.stdout.strip() else \
            f"unknown (no -D, /proc/{owner.pid}/cwd not readable)"
    binary = argv[0] if argv and argv[0].startswith("/") else None
    if binary is None:
        res = conn.run(sudo + command("readlink", "--", f"/proc/{owner.pid}/exe"))
        binary = res.stdout.strip() if res.rc == 0 and res.stdout.strip() else None
    version = None
    if binary and _root_owned(conn, binary):
        res = conn.run(command(binary, "--version"))
        version = res.stdout.strip() if res.rc == 0 else None
    if version is None and data.startswith("/"):
        res = conn.run(sudo + command("cat", "--", f"{data}/PG_VERSION"))
        version = f"PG_VERSION {res.stdout.strip()}" if res.rc == 0 else None
    return {"data_directory": data, "version": version or "unknown (binary and PG_VERSION not readable)"}


def _root_owned(conn, binary: str) -> bool:
    """The program a port's owner runs is what that process says it is: the checker (root, often) runs it with
    --version only when root owns it and nobody else may write it, i.e. when it is the system's own."""
    res = conn.run(command("stat", "-L", "-c", "%u %a", "--", binary))
    uid, _, mode = res.stdout.strip().partition(" ")
    return res.rc == 0 and uid == "0" and mode.isdigit() and not int(mode, 8) & 0o022
