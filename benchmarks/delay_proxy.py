"""A TCP proxy that adds a round-trip delay: the bench's fleet of hosts tens of milliseconds away.

    python benchmarks/delay_proxy.py --upstream 127.0.0.2:2222 --listen 127.0.1.1:2201 --listen 127.0.1.2:2201 \
        --rtt-ms 20 --stats /tmp/stats.json --max-seconds 900

Every listening address forwards to the one upstream (the sandbox's sshd); each direction's bytes are held for half
the round trip before they are written on, so a request and its answer cost one RTT, as on a network (bandwidth is
not limited: these are shell commands' outputs). The TCP handshake with the proxy itself is local and immediate: a
user-space proxy cannot delay the kernel's SYN/ACK, so a TCP connect time measured through it (SYS-06) is not the
simulated RTT.

It counts, per listening address, the connections accepted and the sessions among them (connections on which the
client sent at least one byte: an ssh login; a bare connect-and-close, as SYS-06's samples, is not one), and writes
them to --stats as JSON whenever they change and at exit, with the time of the first session and of the last
close. A --silent address takes connections and never answers: a host that is down behind a live address.

Bounded: at most --max-connections at once (more are closed at once), at most 64 chunks of 64 KiB queued per
direction (the reader waits when the writer lags), and it stops by itself after --max-seconds, when its parent
process goes away, or on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path

CHUNK = 64 * 1024
QUEUED_CHUNKS = 64


class Proxy:
    def __init__(self, upstream: tuple[str, int], rtt_ms: float, max_connections: int, stats: Path | None):
        self.upstream, self.half = upstream, rtt_ms / 2000
        self.max_connections, self.stats_path = max_connections, stats
        self.open = 0
        self.counts: dict[str, dict[str, int]] = {}
        self._dirty = True

    def _count(self, where: str, what: str) -> None:
        entry = self.counts.setdefault(where, {"accepted": 0, "sessions": 0})
        entry[what] += 1
        if what == "sessions":
            entry.setdefault("first_session_at", time.time())
        self._dirty = True

    def _closed(self, where: str) -> None:
        self.counts[where]["last_closed_at"] = time.time()
        self._dirty = True

    async def silent(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A host that is down but whose address still takes the TCP handshake: nothing ever answers, so a
        client waits for its own timeout (the worst case of a host being down)."""
        where = "{}:{}".format(*writer.get_extra_info("sockname")[:2])
        self._count(where, "accepted")
        try:
            if await asyncio.wait_for(reader.read(CHUNK), timeout=60):
                self._count(where, "sessions")
                while await asyncio.wait_for(reader.read(CHUNK), timeout=60):
                    pass
        except (TimeoutError, OSError):
            pass
        finally:
            self._closed(where)
            writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = writer.get_extra_info("sockname")[:2]
        where = f"{host}:{port}"
        self._count(where, "accepted")
        if self.open >= self.max_connections:
            writer.close()
            return
        self.open += 1
        try:
            # upstream only once the client speaks (an ssh client sends its banner at once): a bare connect and
            # close (SYS-06's samples) is answered by this machine's kernel, as a real host's kernel would, without
            # making the one sshd fork a session for it
            first = await asyncio.wait_for(reader.read(CHUNK), timeout=30)
            if not first:
                self.open -= 1
                writer.close()
                return
            self._count(where, "sessions")
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.upstream), timeout=10)
        except (TimeoutError, OSError):
            self.open -= 1
            writer.close()
            return
        try:
            await asyncio.gather(self._pipe(reader, up_writer, first), self._pipe(up_reader, writer, b""))
        finally:
            self.open -= 1
            self._closed(where)
            for w in (writer, up_writer):
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    first: bytes) -> None:
        """Copy reader to writer (after `first`, already read), each chunk written half an RTT after it was read;
        EOF is delayed the same."""
        queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUED_CHUNKS)

        async def read() -> None:
            try:
                if first:
                    await queue.put((time.monotonic() + self.half, first))
                while True:
                    data = await reader.read(CHUNK)
                    await queue.put((time.monotonic() + self.half, data))
                    if not data:
                        return
            except (ConnectionError, OSError):
                await queue.put((time.monotonic() + self.half, b""))

        async def write() -> None:
            while True:
                due, data = await queue.get()
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    if not data:
                        if writer.can_write_eof():
                            writer.write_eof()
                        return
                    writer.write(data)
                    await writer.drain()
                except (ConnectionError, OSError):
                    return

        reading = asyncio.ensure_future(read())
        try:
            await write()
        finally:
            reading.cancel()

    def write_stats(self) -> None:
        if self.stats_path is not None and self._dirty:
            self._dirty = False
            tmp = self.stats_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.counts))
            os.replace(tmp, self.stats_path)


async def serve(args: argparse.Namespace) -> None:
    up_host, _, up_port = args.upstream.rpartition(":")
    proxy = Proxy((up_host, int(up_port)), args.rtt_ms, args.max_connections,
                  Path(args.stats) if args.stats else None)
    servers = []
    for listen in args.listen:
        host, _, port = listen.rpartition(":")
        servers.append(await asyncio.start_server(proxy.handle, host, int(port), backlog=512))
    for listen in args.silent or ():
        host, _, port = listen.rpartition(":")
        servers.append(await asyncio.start_server(proxy.silent, host, int(port), backlog=512))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    parent, deadline = os.getppid(), time.monotonic() + args.max_seconds
    if args.ready:
        Path(args.ready).write_text(str(os.getpid()))
    while not stop.is_set() and time.monotonic() < deadline and os.getppid() == parent:
        proxy.write_stats()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.1)
    for s in servers:
        s.close()
    proxy._dirty = True
    proxy.write_stats()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="HOST:PORT every connection is forwarded to")
    ap.add_argument("--listen", action="append", required=True, help="HOST:PORT to listen on (repeatable)")
    ap.add_argument("--silent", action="append", help="HOST:PORT that accepts and never answers (a down host)")
    ap.add_argument("--rtt-ms", type=float, default=20.0, help="round trip added (default 20 ms)")
    ap.add_argument("--max-connections", type=int, default=2000)
    ap.add_argument("--max-seconds", type=float, default=1800, help="stop by itself after this long")
    ap.add_argument("--stats", help="JSON file: per listening address, connections accepted and sessions")
    ap.add_argument("--ready", help="file written (with the pid) once every address listens")
    args = ap.parse_args(argv)
    try:
        asyncio.run(serve(args))
    except OSError as exc:
        print(f"delay_proxy: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
