"""Servers that misbehave on purpose, on 127.0.0.1, for the hostile-conditions tests.

Each mode is a real TCP server in a thread: it accepts, then does one bad thing.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

HEAD_OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Constitutional-Hash: cdd01ef066bc6cf2\r\n"


def _hang(conn: socket.socket, stop: threading.Event) -> None:
    stop.wait(60)


DRIP_INTERVAL = 0.15  # seconds between bytes: several arrive within any timeout the tests give a check


def _drip(conn, stop) -> None:
    body = b'{"status": "healthy", "constitutional_hash": "cdd01ef066bc6cf2"}'
    for b in HEAD_OK + b"Content-Length: %d\r\n\r\n" % len(body) + body:
        if stop.wait(DRIP_INTERVAL):
            return
        conn.sendall(bytes([b]))


def _huge(conn, stop) -> None:
    conn.sendall(HEAD_OK + b"Content-Length: %d\r\n\r\n" % (1 << 30))
    chunk = b"0" * 65536
    sent = 0
    while sent < (1 << 30) and not stop.is_set():
        conn.sendall(chunk)
        sent += len(chunk)


def _badjson(conn, stop) -> None:
    body = b"{status: healthy, <html>"
    conn.sendall(HEAD_OK + b"Content-Length: %d\r\n\r\n" % len(body) + body)


def _redirect(conn, stop) -> None:
    conn.sendall(b"HTTP/1.1 302 Found\r\nLocation: /health\r\nContent-Length: 0\r\n\r\n")


def _garbage(conn, stop) -> None:
    conn.sendall(b"\x00\xffNOT A PROTOCOL\r\n\x07" * 10)
    stop.wait(60)


REDIS_DRIP_INTERVAL = 1.5  # under the socket timeout (3 s): only a deadline for the whole reply ends it


def _redis_drip(conn, stop) -> None:
    """A reply to any Redis command that never ends: a simple string, one byte every REDIS_DRIP_INTERVAL."""
    conn.sendall(b"+")
    while not stop.wait(REDIS_DRIP_INTERVAL):
        conn.sendall(b"P")


def _redis_huge(conn, stop) -> None:
    """A 1 GiB bulk string as the reply to any Redis command, sent as fast as it is read."""
    conn.sendall(b"$%d\r\n" % (1 << 30))
    chunk = b"0" * 65536
    sent = 0
    while sent < (1 << 30) and not stop.is_set():
        conn.sendall(chunk)
        sent += len(chunk)


MODES = {"hang": _hang, "drip": _drip, "huge": _huge, "badjson": _badjson, "redirect": _redirect,
         "garbage": _garbage, "redis-drip": _redis_drip, "redis-huge": _redis_huge}


class HostileServer:
    """`with HostileServer("drip") as port:` serves that misbehaviour until the block ends."""

    def __init__(self, mode: str, host: str = "127.0.0.1"):
        self.mode, self.host = mode, host
        self._stop = threading.Event()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._conns: list[socket.socket] = []

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self._conns.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            conn.settimeout(5)
            with contextlib.suppress(OSError):
                conn.recv(65536)  # the request; its content does not matter
            MODES[self.mode](conn, self._stop)
            if self.mode in ("badjson", "redirect"):
                time.sleep(0.05)

    def __enter__(self) -> int:
        threading.Thread(target=self._serve, daemon=True).start()
        return self.port

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()
        self._sock.close()


def accepted(listener: socket.socket) -> int:
    """How many connections wait in `listener`'s accept queue: on a listener that never accepts (a host or server
    that completes the TCP handshake and never answers), the number of times a client tried to connect."""
    listener.setblocking(False)
    count = 0
    while True:
        try:
            listener.accept()[0].close()
        except BlockingIOError:
            return count
        count += 1
