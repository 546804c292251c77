"""What a check runs against, built from the profile. Each target names itself (`auth@app-1`).

The plugin parametrizes a check over the targets of the kind its argument names:
a check taking `service` runs once per service instance, one taking `database` once per database.
Adding a kind of target is one entry in TARGET_KINDS; the plugin does not change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from acgs_verify.profile import Database, Host, Key, Profile, Redis, Service


@dataclass(frozen=True)
class ServiceTarget:
    """One service on one host: `auth@app-1`."""

    service: Service
    host: Host

    @property
    def id(self) -> str:
        return f"{self.service.name}@{self.host.name}"

    @property
    def name(self) -> str:
        return self.service.name

    def url(self, path: str) -> str:
        address = f"[{self.host.address}]" if ":" in self.host.address else self.host.address
        return f"{self.service.scheme}://{address}:{self.service.port}{path}"


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
class DatabaseTarget:
    database: Database

    @property
    def id(self) -> str:
        return self.database.name


@dataclass(frozen=True)
class DatabaseHostTarget:
    """The server behind a database, on the host that runs it: `primary@db-1`."""

    database: Database
    host: Host

    @property
    def id(self) -> str:
        return f"{self.database.name}@{self.host.name}"


@dataclass(frozen=True)
class RedisTarget:
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
}


def host_of(target) -> Host | None:
    """The host a target's checks run on, if any (for reachability and grouping of workers)."""
    return getattr(target, "host", None)
