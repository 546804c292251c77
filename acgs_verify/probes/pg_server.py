"""The PostgreSQL server behind a port: its data directory and version, read from the process that owns it (DB-02).

>>> postgres_server(pool, host, owner)     # owner: the Proc that owns the database's port (probes/processes.py)
{'data_directory': '/var/lib/postgresql/15/main', 'version': 'postgres (PostgreSQL) 15.14'}
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from acgs_verify.hosts.commands import command

if TYPE_CHECKING:
    from acgs_verify.hosts.pool import HostPool
    from acgs_verify.probes.processes import Proc
    from acgs_verify.profile.model import Host


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
