"""What runs on one host, with evidence: services, PostgreSQL, Redis, paths, certificates, TLS endpoints, keys.

>>> found = find(Host(name="app-1"), port_offset=10000)
>>> [s.data["name"] for s in found.services], found.services[0].evidence[0]
(['auth', ...], 'pid 4123 owns 127.0.0.1:18016; cwd /srv/acgs/auth')

The order is the dependency: services first (the others read their environments, cwds and connections), then the
servers they use, the paths (logs give the layout's prefix, cwds the application tree), backups, certificates,
security, and the host's roles and mounts last. Each subject is a module of its own.
"""

from __future__ import annotations

import re

from acgs_verify.discover.apptree import find_paths, find_security
from acgs_verify.discover.backups import find_backups
from acgs_verify.discover.model import Discovery, Item
from acgs_verify.discover.postgres import find_databases
from acgs_verify.discover.reader import HostReader
from acgs_verify.discover.redis import find_redis
from acgs_verify.discover.services import find_services
from acgs_verify.discover.tls import find_certificates
from acgs_verify.errors import ProbeError
from acgs_verify.hosts.commands import operand
from acgs_verify.hosts.pool import HostPool
from acgs_verify.profile import Host

_DF_ROW = re.compile(r"\s\d+\s+\d+\s+\d+\s+\d+%\s+(/.*)$")  # df -P: ... blocks used available capacity% MOUNT


def find(host: Host, port_offset: int = 0, connect_timeout: float = 3, ports: set[int] | None = None) -> Discovery:
    """Everything discover finds on `host`; `ports` narrows it to those listening ports (one stack of a shared
    host). Raises ProbeError('host unreachable: ...')."""
    pool = HostPool(connect_timeout=connect_timeout)
    try:
        reader = HostReader(pool, host, port_offset, ports)
        services = find_services(reader)
        find_databases(reader, services)
        find_redis(reader, services)
        find_paths(reader, services)
        find_backups(reader)
        find_certificates(reader, services)
        find_security(reader)
        _host(reader)
        return reader.found
    finally:
        pool.close()


def _host(reader: HostReader) -> None:
    found = reader.found
    roles = [r for r, have in (("app", found.services), ("db", found.databases), ("cache", found.redis)) if have]
    found.host.data["roles"] = roles or ["app"]
    paths = [v for k in ("logs", "app_root", "backups") if (v := found.path(k))]
    mounts = ["/"]
    if paths:
        _, out = reader.sh("df", "-P", "--", *map(operand, paths))
        # the mount point is what follows the capacity, spaces and all
        mounts += [m.group(1) for m in (_DF_ROW.search(line) for line in out.splitlines()[1:]) if m]
    found.host.data["mounts"] = list(dict.fromkeys(mounts))
    found.host.evidence = [f"read as user {found.user} over {reader.host.backend}; roles from what was found; "
                           "mounts: / and those holding the logs, app root and backups"]


__all__ = ["Discovery", "Item", "ProbeError", "find"]
