"""What a check runs against, built from the profile. Each target names itself (`auth@app-1`).

The plugin parametrizes a check over the targets of the kind its argument names:
a check taking `service` runs once per service instance, one taking `database` once per database.
Adding a kind of target is one entry in TARGET_KINDS; the plugin does not change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from acgs_verify.profile import Database, Host, Key, Profile, Redis, Service


class _Reads:
    """A target reads its profile entry's fields as its own: `service.health_path`, `database.dsn`, `cache.url`
    (not `service.service.health_path`). `_entry` names the field holding that entry."""

    _entry = ""

    def __getattr__(self, name: str):
        if name.startswith("_"):  # copy, pickle and dataclass machinery: never the profile entry's
            raise AttributeError(name)
        return getattr(getattr(self, self._entry), name)


@dataclass(frozen=True)
class ServiceTarget(_Reads):
    """One service on one host: `auth@app-1`; `service.port`, `service.health_path`, ... are the profile's."""

    _entry = "service"
    service: Service
    host: Host

    @property
    def id(self) -> str:
        return f"{self.service.name}@{self.host.name}"

    @property
    def name(self) -> str:
        return self.service.name

    def url(self, path: str) -> str:
        return self.service.url_on(self.host.address, path)


@dataclass(frozen=True)
class HostTarget:
    host: Host

    @property
    def id(self) -> str:
        return self.host.name


@dataclass(frozen=True)
class MountTarget:
    """One mounted filesystem of a host, as df names it: `app-1:/var`."""

    host: Host
    mount: str

    @property
    def id(self) -> str:
        return f"{self.host.name}:{self.mount}"


@dataclass(frozen=True)
class SecretFileTarget:
    """A file that must stay private, on one app host: `/home/acgs/ACGS/config/production.env@app-1`."""

    host: Host
    path: str

    @property
    def id(self) -> str:
        return f"{self.path}@{self.host.name}"


@dataclass(frozen=True)
class KeyTarget:
    """A key whose age is checked (SEC-05), on one app host: `app@app-1`."""

    host: Host
    key: Key

    @property
    def id(self) -> str:
        return f"{self.key.name}@{self.host.name}"


@dataclass(frozen=True)
class DatabaseTarget(_Reads):
    """One database of the profile: `database.dsn`, `database.audit_table`, ...; `pg.get(database)` opens it."""

    _entry = "database"
    database: Database

    @property
    def id(self) -> str:
        return self.database.name


@dataclass(frozen=True)
class DatabaseHostTarget(_Reads):
    """The server behind a database, on the host that runs it: `primary@db-1`; `database_host.dsn` is the
    database's."""

    _entry = "database"
    database: Database
    host: Host

    @property
    def id(self) -> str:
        return f"{self.database.name}@{self.host.name}"


@dataclass(frozen=True)
class RedisTarget(_Reads):
    """One Redis of the profile: `cache.url`, `cache.hash_key`, ...; `caches.get(cache)` opens it."""

    _entry = "redis"
    redis: Redis

    @property
    def id(self) -> str:
        return self.redis.name


@dataclass(frozen=True)
class EnvironmentTarget:
    """The whole environment a profile describes (CC-04: one compliance rate from every source): `production`."""

    profile: Profile

    @property
    def id(self) -> str:
        return self.profile.name or "environment"


@dataclass(frozen=True)
class BackupTarget:
    """The backup location (`backups@db-1`: BK-01, BK-05) or its latest dated backup (`backups/latest@db-1`:
    BK-02..07) on the host that holds it, found when the check runs, so a backup written during a run is seen."""

    root: str
    host: Host
    latest: bool = False

    @property
    def id(self) -> str:
        return f"{'backups/latest' if self.latest else 'backups'}@{self.host.name}"


@dataclass(frozen=True)
class CertificateTarget:
    """A certificate PEM file from the profile, on the host that holds it: `/etc/ssl/acgs/cert.pem@proxy-1`."""

    path: str
    host: Host

    @property
    def id(self) -> str:
        return f"{self.path}@{self.host.name}"


@dataclass(frozen=True)
class TlsEndpointTarget:
    url: str

    @property
    def id(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or 443}"


@dataclass(frozen=True)
class PoliciesTarget:
    """The policy files under paths.policies on one host (`policies@app-1`): CC-03 lists them there when it runs
    (nothing is read at collection) and validates each."""

    root: str | None  # None: the profile says this site keeps no policy files
    host: Host

    @property
    def id(self) -> str:
        return f"policies@{self.host.name}"


def _backups(p: Profile, latest: bool) -> list[BackupTarget]:
    # one backup host: the profile's, else the first with role backup, then db, then the first host, so that the
    # backup checks never silently run nowhere
    hosts = p.file_hosts(p.backups.host, "backup", first=True) if p.backups.host else (
        p.file_hosts(None, "backup", first=True) or p.file_hosts(None, "db", first=True) or p.hosts[:1])
    return [BackupTarget(p.paths.backups, h, latest) for h in hosts]


def _on_app_hosts(p: Profile, names: list[str] | str | None) -> list:
    """The hosts a file named without a host lives on: every app host, else the first host (never none)."""
    return p.file_hosts(names, "app") if names else (p.hosts_with_role("app") or p.hosts[:1])


def _services(p: Profile) -> list[ServiceTarget]:
    return [ServiceTarget(s, h) for s in p.services for h in p.hosts_with_role(s.role)]


def _service_logs(p: Profile) -> list[ServiceTarget]:
    return [t for t in _services(p) if t.service.log]


TARGET_KINDS: dict[str, Callable[[Profile], list]] = {
    "service": _services,
    "service_log": _service_logs,
    "node": lambda p: [HostTarget(h) for h in p.hosts],
    "app_host": lambda p: [HostTarget(h) for h in p.hosts_with_role("app")],
    "mount": lambda p: [MountTarget(h, m) for h in p.hosts for m in h.mounts],
    "secret_file": lambda p: [SecretFileTarget(h, f) for h in p.hosts_with_role("app")
                              for f in p.security.secret_files],
    "key": lambda p: [KeyTarget(h, k) for h in p.hosts_with_role("app") for k in p.security.keys],
    "database": lambda p: [DatabaseTarget(d) for d in p.databases],
    "database_host": lambda p: [DatabaseHostTarget(d, h) for d in p.databases for h in p.hosts_with_role(d.role)],
    "cache": lambda p: [RedisTarget(r) for r in p.redis],
    "environment": lambda p: [EnvironmentTarget(p)],
    "backup_location": lambda p: _backups(p, latest=False),
    "latest_backup": lambda p: _backups(p, latest=True),
    "certificate": lambda p: [CertificateTarget(c.path, h) for c in p.certificates for h in _on_app_hosts(p, c.host)],
    "tls_endpoint": lambda p: [TlsEndpointTarget(u) for u in p.tls_endpoints],
    "policies": lambda p: [PoliciesTarget(p.paths.policies, h) for h in _on_app_hosts(p, p.policies.hosts)],
}


def host_of(target) -> Host | None:
    """The host a target's checks run on, if any (for reachability and grouping of workers)."""
    return getattr(target, "host", None)
