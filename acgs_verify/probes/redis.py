"""Redis probes: read commands only, one connection per Redis per process.

>>> pool = RedisPool(profile)
>>> cache = pool.get(profile.redis[0])        # ProbeError('cannot reach redis://...: ...') once per Redis
>>> cache.ping()
1.2                                          # milliseconds for PING -> PONG
>>> cache.latency(20).p99, hit_rate(cache.info("stats"))
(0.4, (1900, 100))                           # ms; (keyspace_hits, keyspace_misses)
>>> cache.get("acgs:constitutional_hash")
'cdd01ef066bc6cf2'

Read-only by construction: RedisProbe sends nothing but the commands in READ_COMMANDS (and the AUTH the
client sends on connect); anything else raises before it reaches the server.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from typing import Any

from acgs_verify.check import ProbeError
from acgs_verify.probes.http import Latency
from acgs_verify.profile import Profile, Redis
from acgs_verify.redact import display_url, one_line

READ_COMMANDS = frozenset({"PING", "INFO", "GET", "EXISTS", "TYPE", "TTL", "DBSIZE", "STRLEN"})


class RedisProbe:
    def __init__(self, url: str, password: str | None, timeout: float, secrets: list[str] = ()):
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self.label = display_url(url)
        self._secrets = [*secrets, *([password] if password else [])]
        # no retries (a timeout is an answer), no CLIENT SETINFO on connect, one socket reused by every check
        quiet = ({"driver_info": None} if "driver_info" in inspect.signature(redis.Redis.__init__).parameters
                 else {"lib_name": None, "lib_version": None})
        try:  # single_connection_client connects (and authenticates) here, at once
            self._client = redis.Redis.from_url(
                url, password=password, socket_timeout=timeout, socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 0), retry_on_timeout=False, decode_responses=True,
                single_connection_client=True, health_check_interval=0, **quiet)
        except (redis.RedisError, OSError, ValueError) as exc:
            raise ProbeError(f"cannot reach {self.label}: {self._reason(exc)}") from None

    def _reason(self, exc: Exception) -> str:
        return f"{type(exc).__name__}: {one_line(exc, self._secrets)}".rstrip(".")

    def command(self, name: str, *args: Any) -> Any:
        """Send one read command; ProbeError with one line if it fails or is not a read command."""
        import redis

        if name.upper() not in READ_COMMANDS:
            raise ProbeError(f"refusing to send {name.upper()} to {self.label}: checks send read commands only")
        try:
            return self._client.execute_command(name, *args)
        except redis.RedisError as exc:
            raise ProbeError(f"{self.label}: {name.upper()} failed: {self._reason(exc)}") from None

    def ping(self) -> float:
        """PING -> milliseconds until PONG (RD-01)."""
        started = time.monotonic()
        reply = self.command("PING")
        if reply not in (True, "PONG"):
            raise ProbeError(f"{self.label}: PING answered {reply!r}, not PONG")
        return (time.monotonic() - started) * 1000

    def latency(self, samples: int, budget_seconds: float = 2.0) -> Latency:
        """Round trips of PING, as `redis-cli --latency` measures them (RD-02): `samples` of them, or as many
        as fit in `budget_seconds` when the server is slow."""
        result = Latency([], [])
        deadline = time.monotonic() + budget_seconds
        for _ in range(samples):
            if time.monotonic() > deadline and result.samples_ms:
                break
            try:
                result.samples_ms.append(self.ping())
            except ProbeError as exc:
                result.failures.append(str(exc))
        return result

    def info(self, section: str) -> dict[str, Any]:
        """INFO SECTION as a dict, e.g. info('stats')['keyspace_hits']."""
        return self.command("INFO", section)

    def get(self, key: str) -> str | None:
        return self.command("GET", key)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a socket to a server that went away is not a finding
            self._client.close()


def hit_rate(stats: dict[str, Any]) -> tuple[int, int]:
    """(keyspace_hits, keyspace_misses) from INFO stats (RD-03)."""
    return int(stats.get("keyspace_hits", 0)), int(stats.get("keyspace_misses", 0))


class RedisPool:
    """One RedisProbe per profile Redis, opened on first use; one that cannot be reached is tried once."""

    def __init__(self, profile: Profile):
        self.profile = profile
        self._open: dict[str, RedisProbe] = {}
        self._failed: dict[str, str] = {}

    def get(self, cache: Redis) -> RedisProbe:
        if cache.name in self._failed:
            raise ProbeError(self._failed[cache.name])
        if cache.name not in self._open:
            t = self.profile.thresholds
            try:
                self._open[cache.name] = RedisProbe(
                    cache.url, self.profile.secret(f"redis.{cache.name}"),
                    timeout=max(t.redis_timeout_seconds, t.connect_timeout_seconds),
                    secrets=self.profile.secret_values())
            except ProbeError as exc:
                self._failed[cache.name] = str(exc)
                raise
        return self._open[cache.name]

    def close(self) -> None:
        for probe in self._open.values():
            probe.close()
        self._open.clear()
