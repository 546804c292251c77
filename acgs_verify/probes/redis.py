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
from urllib.parse import urlsplit

from acgs_verify.errors import ProbeError
from acgs_verify.hosts import reach
from acgs_verify.probes.http import Latency
from acgs_verify.profile import Profile, Redis
from acgs_verify.redact import display_url, one_line

# SCAN reads key names a page at a time (the maintenance snapshot, probes/state.py): read-only like KEYS, without
# blocking the server as KEYS does
READ_COMMANDS = frozenset({"PING", "INFO", "GET", "EXISTS", "TYPE", "TTL", "DBSIZE", "STRLEN", "SCAN"})


# What one command's reply may be: INFO is ~5 KiB, a SCAN page of 500 names ~50 KiB. A Redis answering a 1 GiB bulk
# string once took 3.2 GB: the reply is cut here, on the socket, before any parser holds it.
MAX_REPLY_BYTES = 4 << 20


class ReplyTooLarge(Exception):
    """A reply went past MAX_REPLY_BYTES: the connection is dropped, the command fails with this one line."""


class ReplyTooSlow(Exception):
    """A reply did not complete within the command's deadline, though bytes kept coming (a socket timeout is
    per read, so a server sending a byte a second would never end without a deadline for the whole reply)."""


class _BoundedSocket:
    """A socket that reads at most `cap` bytes per command and gives every read only the time left until the
    command's deadline; the connection arms it as each command is sent. Everything else is the socket's own."""

    def __init__(self, sock, seconds: float, cap: int):
        self._sock, self._seconds, self._cap = sock, seconds, cap
        self._timeout = sock.gettimeout()
        self._deadline: float | None = None
        self._by_deadline = False
        self._read = 0

    def arm(self) -> None:
        self._deadline, self._read = time.monotonic() + self._seconds, 0
        self._sock.settimeout(self._timeout)  # the send gets the socket timeout, not what a last read had left

    def settimeout(self, value) -> None:
        self._timeout = value
        self._sock.settimeout(value)

    def gettimeout(self):
        return self._timeout

    def _before_read(self) -> None:
        if self._deadline is None:
            return
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise ReplyTooSlow(f"no complete reply within the {self._seconds:g} s timeout")
        # which of the two ends this read: the deadline, or a shorter timeout its caller set
        self._by_deadline = self._timeout is None or left <= self._timeout
        self._sock.settimeout(left if self._by_deadline else self._timeout)

    def _timed_out(self) -> None:
        """A read that waited all the time left to the deadline: said as the deadline, not "timeout reading"."""
        if self._deadline is not None and self._by_deadline:
            raise ReplyTooSlow(f"no complete reply within the {self._seconds:g} s timeout")

    def _after_read(self, n: int) -> None:
        self._read += n
        if self._read > self._cap:
            raise ReplyTooLarge(f"reply larger than {self._cap >> 20} MiB")

    def recv(self, size: int, *flags):
        self._before_read()
        try:
            data = self._sock.recv(size, *flags)
        except TimeoutError:
            self._timed_out()
            raise
        self._after_read(len(data))
        return data

    def recv_into(self, buffer, nbytes: int = 0, *flags):
        self._before_read()
        try:
            n = self._sock.recv_into(buffer, nbytes, *flags)
        except TimeoutError:
            self._timed_out()
            raise
        self._after_read(n)
        return n

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


def bounded_client(url: str, password: str | None, timeout: float, max_reply: int = MAX_REPLY_BYTES, **kwargs):
    """A redis.Redis whose every command, AUTH on connect included, has its whole reply within `timeout` seconds
    and `max_reply` bytes, or raises ReplyTooSlow / ReplyTooLarge (the connection is then dropped). No retries
    (a timeout is an answer), no health checks.

    >>> bounded_client("redis://127.0.0.1:6379/0", None, 3).dbsize()
    """
    import redis
    from redis.backoff import NoBackoff
    from redis.connection import Connection, SSLConnection, UnixDomainSocketConnection
    from redis.retry import Retry

    base = {"rediss": SSLConnection, "unix": UnixDomainSocketConnection}.get(urlsplit(url).scheme, Connection)

    class BoundedConnection(base):
        def _connect(self):
            return _BoundedSocket(super()._connect(), timeout, max_reply)

        def send_packed_command(self, command, check_health=True):
            if isinstance(self._sock, _BoundedSocket):
                self._sock.arm()
            super().send_packed_command(command, check_health)

    return redis.Redis.from_url(
        url, password=password, socket_timeout=timeout, socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=0,
        connection_class=BoundedConnection, **kwargs)


class RedisProbe:
    def __init__(self, url: str, password: str | None, timeout: float, secrets: list[str] = ()):
        import redis

        self.label = display_url(url)
        self._secrets = [*secrets, *([password] if password else [])]
        self._hostile: str | None = None  # why this Redis is asked nothing more (a reply too slow or too large)
        # no CLIENT SETINFO on connect, one socket reused by every check
        quiet = ({"driver_info": None} if "driver_info" in inspect.signature(redis.Redis.__init__).parameters
                 else {"lib_name": None, "lib_version": None})
        try:  # single_connection_client connects (and authenticates) here, at once
            self._client = bounded_client(url, password, timeout, decode_responses=True,
                                          single_connection_client=True, **quiet)
        except (ReplyTooSlow, ReplyTooLarge) as exc:
            raise ProbeError(f"cannot reach {self.label}: {exc}") from None
        except (redis.RedisError, OSError, ValueError) as exc:
            raise ProbeError(f"cannot reach {self.label}: {self._reason(exc)}") from None
        except Exception as exc:  # noqa: BLE001 -- a HELLO answered with a string made redis-py raise AttributeError
            raise ProbeError(f"cannot reach {self.label}: its answer to the handshake is not Redis's "
                             f"({self._reason(exc)})") from None

    def _reason(self, exc: Exception) -> str:
        return f"{type(exc).__name__}: {one_line(exc, self._secrets)}".rstrip(".")

    def command(self, name: str, *args: Any) -> Any:
        """Send one read command; ProbeError with one line if it fails or is not a read command."""
        import redis

        if name.upper() not in READ_COMMANDS:
            raise ProbeError(f"refusing to send {name.upper()} to {self.label}: checks send read commands only")
        if self._hostile:  # found once: every later check fails at once with the reason, not after its own wait
            raise ProbeError(self._hostile)
        try:
            return self._client.execute_command(name, *args)
        except (ReplyTooSlow, ReplyTooLarge) as exc:
            self._hostile = f"{self.label}: {name.upper()} failed: {exc}; not asked again in this run"
            raise ProbeError(self._hostile) from None
        except redis.RedisError as exc:
            raise ProbeError(f"{self.label}: {name.upper()} failed: {self._reason(exc)}") from None
        except Exception as exc:  # noqa: BLE001 -- a reply of the wrong shape breaks redis-py's own parsing
            raise ProbeError(f"{self.label}: {name.upper()} failed: an answer that is not Redis's "
                             f"({self._reason(exc)})") from None

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
        self._unreachable: dict[str, ProbeError] = {}

    def get(self, cache: Redis) -> RedisProbe:
        if cache.name in self._unreachable:
            raise self._unreachable[cache.name]
        if cache.name in self._failed:
            raise ProbeError(self._failed[cache.name])
        if cache.name not in self._open:
            t = self.profile.thresholds
            parts = urlsplit(cache.url)
            try:  # a server that does not answer: found once, every check on it then fails at once
                if parts.scheme in ("redis", "rediss") and parts.hostname:
                    reach.gate(parts.hostname, parts.port or 6379, kind="redis", target=f"redis {cache.name}")
            except reach.Unreachable as exc:
                self._unreachable[cache.name] = exc
                raise
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
