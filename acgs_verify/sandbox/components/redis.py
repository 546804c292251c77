"""The sandbox's Redis: its own redis-server on 127.0.0.1:6379 + offset, no persistence, password required.

It holds acgs:constitutional_hash and a few hundred cached policies and decisions, and has served a
couple of thousand lookups at a ~95 % hit rate, so RD-03 judges something. The password is
$ACGS_SANDBOX_REDIS_PASSWORD, or a random one; `up` writes it to DIR/secrets/redis.password (0600).

State slice: {"process": spawn record, "holder": spawn record (redis-slow), "faults": [...]}.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from acgs_verify.sandbox.components.base import (
    Component,
    Context,
    SandboxError,
    adopt,
    claim_port,
    spawn_holder,
    start,
    stop,
    tail,
    wait_alive,
    wait_until,
    write_password,
    write_secret,
)
from acgs_verify.sandbox.constants import (
    CONSTITUTIONAL_HASH,
    OTHER_HASH,
    READY_TIMEOUT,
    REDIS_PASSWORD_ENV,
    REDIS_PORT,
    RUN_DIR,
    secret_path,
)

HASH_KEY = "acgs:constitutional_hash"
CACHED_KEYS = 300
SEED_HITS, SEED_MISSES = 1900, 100  # 95 %: above the 85 % threshold, with more than its 1000 lookups
LOW_HIT_MISSES = 4000  # redis-low-hit-rate: ~32 % afterwards


def redis_port(offset: int) -> int:
    return REDIS_PORT + offset


class Redis(Component):
    name = "redis"
    fault_names = ("redis-down", "redis-wrong-hash", "redis-slow", "redis-low-hit-rate")
    fault_help = {
        "redis-down": "stops Redis (RD-01..03, CC-06)",
        "redis-wrong-hash": "acgs:constitutional_hash holds another hash (CC-06)",
        "redis-slow": "the server is held 200 ms at a time (RD-02)",
        "redis-low-hit-rate": "many lookups of missing keys (RD-03)",
    }
    daemons = (("holder", "redis redis-slow holder"), ("process", "redis server"))

    def up(self, ctx: Context) -> None:
        port = redis_port(ctx.port_offset)
        server = shutil.which("redis-server")
        if server is None:
            raise SandboxError("redis-server not found; install it: apt-get install redis-server")
        claim_port(port, "Redis", ctx.port_offset)
        ctx.state.update(process=None, holder=None, faults=[], server=server)
        write_password(self._password_file(ctx), REDIS_PASSWORD_ENV)
        with self.undone_on_failure(ctx):
            self._start(ctx)

    def status(self, ctx: Context) -> list[dict[str, Any]]:
        return [self.process_row(ctx, "redis", ctx.state.get("process"), redis_port(ctx.port_offset))]

    def profile_fragment(self, ctx: Context) -> dict[str, Any]:
        return {"redis": [{"name": "cache", "url": f"redis://127.0.0.1:{redis_port(ctx.port_offset)}/0",
                           "password_file": str(self._password_file(ctx)), "hash_key": HASH_KEY}]}

    # ------------------------------------------------------------------------------------- faults
    def break_(self, ctx: Context, fault: str, target: str) -> None:
        if fault == "redis-down":
            self.stop_process(ctx, "redis server")
        elif fault == "redis-wrong-hash":
            self._client(ctx).set(HASH_KEY, OTHER_HASH)
        elif fault == "redis-slow":
            ctx.state["holder"] = spawn_holder(ctx, fault, ["redis-slow"], ACGS_HOLDER_REDIS_URL=self._url(ctx),
                                               ACGS_HOLDER_REDIS_PASSWORD=self._password(ctx))
            ctx.save()
            try:
                self._wait_slow(ctx)
            except BaseException:
                stop(ctx.state.get("holder"))
                raise
        elif fault == "redis-low-hit-rate":
            self._lookups(ctx, hits=0, misses=LOW_HIT_MISSES)
        ctx.save()

    def heal(self, ctx: Context, fault: str, target: str) -> None:
        if fault == "redis-down":
            self._start(ctx)
        elif fault == "redis-wrong-hash":
            self._client(ctx).set(HASH_KEY, CONSTITUTIONAL_HASH)
        elif fault == "redis-slow":
            self.stop_process(ctx, "redis redis-slow holder", "holder")
        elif fault == "redis-low-hit-rate":
            self._client(ctx).config_resetstat()
            self._lookups(ctx, SEED_HITS, SEED_MISSES)
        ctx.save()

    # ------------------------------------------------------------------------------------ helpers
    def _password_file(self, ctx: Context) -> Path:
        return secret_path(ctx.dir, "redis")

    def _password(self, ctx: Context) -> str:
        return self._password_file(ctx).read_text().strip()

    def _url(self, ctx: Context) -> str:
        return f"redis://127.0.0.1:{redis_port(ctx.port_offset)}/0"

    def _client(self, ctx: Context, timeout: float = 5):
        import redis

        return redis.Redis.from_url(self._url(ctx), password=self._password(ctx), socket_timeout=timeout,
                                    decode_responses=True)

    def _start(self, ctx: Context) -> None:
        work = ctx.dir / "redis"
        work.mkdir(parents=True, exist_ok=True)
        conf = work / "redis.conf"
        write_secret(conf, "\n".join([
            "bind 127.0.0.1", f"port {redis_port(ctx.port_offset)}", "protected-mode yes", "daemonize no",
            f"dir {work}", 'save ""', "appendonly no", "maxmemory 64mb", "databases 16",
            f"requirepass {self._password(ctx)}",
            "enable-debug-command local",  # redis-slow sends DEBUG SLEEP from 127.0.0.1
            'logfile ""']))
        run = ctx.dir / RUN_DIR
        record = start("redis-server", [ctx.state["server"], str(conf)], dict(os.environ), run, "redis")
        # redis-server retitles itself ("redis-server 127.0.0.1:PORT") once it runs: without the title, a server
        # that answered too late for the wait below would read as not ours, and no stop() would ever end it
        record["title"] = ctx.state["server"]
        ctx.state["process"] = record
        ctx.save()
        # each PING of the wait gives up after 0.5 s: whatever else holds the port may accept and never answer, and
        # the wait notices that our server has died only between two PINGs (it took the full 5 s of a PING before)
        client = self._client(ctx, timeout=0.5)
        last = ["no answer"]

        def pong() -> bool:
            try:
                return bool(client.ping())
            except Exception as exc:  # any answer but PONG, until the deadline: the reason is in the log
                last[0] = type(exc).__name__
                return False

        def gave_up() -> str:
            return (f"redis-server did not answer on port {redis_port(ctx.port_offset)}: {last[0]}; "
                    f"log: {tail(run / 'redis.out')}")

        wait_alive(record, gave_up, pong, READY_TIMEOUT)
        # redis-server retitles itself ("redis-server 127.0.0.1:PORT"): remember it as it now reads
        ctx.state["process"] = adopt(record["pid"])
        ctx.save()
        self._seed(ctx)

    def _seed(self, ctx: Context) -> None:
        client = self._client(ctx)
        pipe = client.pipeline(transaction=False)
        pipe.set(HASH_KEY, CONSTITUTIONAL_HASH)
        for i in range(CACHED_KEYS):
            kind = ("policy", "decision", "principle")[i % 3]
            pipe.set(f"acgs:{kind}:{i:04d}", json.dumps({"id": i, "kind": kind,
                                                         "constitutional_hash": CONSTITUTIONAL_HASH}), ex=7 * 86400)
        pipe.execute()
        client.config_resetstat()
        self._lookups(ctx, SEED_HITS, SEED_MISSES)

    def _lookups(self, ctx: Context, hits: int, misses: int) -> None:
        """Real GETs, as the services' cache lookups would make them."""
        pipe = self._client(ctx).pipeline(transaction=False)
        for i in range(hits):
            pipe.get(f"acgs:{('policy', 'decision', 'principle')[i % 3]}:{i % CACHED_KEYS:04d}")
        for i in range(misses):
            pipe.get(f"acgs:decision:miss-{i:05d}")
        pipe.execute()

    def _wait_slow(self, ctx: Context) -> None:
        client = self._client(ctx)

        def slow() -> bool:
            started = time.monotonic()
            client.ping()
            return time.monotonic() - started > 0.01

        wait_until(f"redis-slow: the server still answers at once; see {ctx.dir / RUN_DIR / 'redis-slow.err'}",
                   slow, 10, interval=0)
