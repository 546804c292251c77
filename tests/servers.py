"""Ports and throwaway servers of a test's own, safe when two test runs share one machine (two clones, xdist).

A port is never looked up, let go and used later, when another run may have taken it:

    with closed_port() as port:         # bound by this test, listening to nobody: every connect is refused
    with silent_listener() as hole:     # completes the TCP handshake and never says a word (hostile.accepted)
    with dead_listener("127.0.0.9") as port:  # drops every SYN: a connect times out, as to a host that is down
    with redis_server(tmp_path) as port:  # a fresh redis-server answering PING, stopped afterwards
    with server("postgres", argv, ready, log) as (port, proc):  # any server of a test's own, started likewise

Sandboxes take their ports from tests.conftest.free_port_offset(), whose locks hold an offset per process.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.waiting import wait_for

ADDRESS = "127.0.0.1"
START_TRIES = 5  # a port the kernel handed out can be taken again before the server binds it: try another


@contextlib.contextmanager
def closed_port(address: str = ADDRESS) -> Iterator[int]:
    """A port bound (not listening) until the block ends: nothing else can listen there meanwhile, so a connection
    to it is refused at once."""
    with socket.socket() as s:
        s.bind((address, 0))
        yield s.getsockname()[1]


@contextlib.contextmanager
def silent_listener(address: str = ADDRESS) -> Iterator[socket.socket]:
    """A listener that never accepts: the kernel completes the handshake, then nothing is ever said."""
    with socket.socket() as s:
        s.bind((address, 0))
        s.listen(16)
        yield s


@contextlib.contextmanager
def dead_listener(address: str = ADDRESS, timeout: float = 10) -> Iterator[int]:
    """A port that never answers, as a host that is down: a listener whose accept queue is full and never
    drained, so the kernel drops every new SYN and a connect times out. Yields the port."""
    with socket.socket() as s, contextlib.ExitStack() as fillers:
        s.bind((address, 0))
        s.listen(0)  # room for one connection, which the first filler takes
        port = s.getsockname()[1]

        def full() -> bool:
            probe = fillers.enter_context(socket.socket())
            probe.settimeout(0.2)
            try:
                probe.connect((address, port))  # taken into the queue while there is room: a filler
            except (TimeoutError, OSError):
                return True
            return False

        wait_for(f"the accept queue of {address}:{port} to fill", full, timeout)
        yield port


@contextlib.contextmanager
def server(name: str, argv: Callable[[int], list[str]], ready: Callable[[int], object], log: Path,
           timeout: float = 10, **popen) -> Iterator[tuple[int, subprocess.Popen]]:
    """A server of this test's own on a port the kernel picked: `argv(port)` started (its output appended to
    `log`, `popen` passed to Popen), waited for until `ready(port)` holds, stopped when the block ends; yields
    (port, process). A start whose port was taken meanwhile is retried; it gives up with the server's log."""
    for _ in range(START_TRIES):
        with closed_port() as port:
            pass  # the kernel's pick, let go just before the server binds it: a lost race ends in a retry
        with open(log, "ab") as out:  # what it says, a fatal configuration error included
            proc = subprocess.Popen(argv(port), stdout=out, stderr=subprocess.STDOUT, **popen)

        def state(port=port, proc=proc) -> str | None:
            if proc.poll() is not None:
                return "exited"
            return "up" if ready(port) else None

        try:
            got = wait_for(f"{name} to answer", state, timeout)
        except AssertionError:
            proc.kill()
            proc.wait()
            raise AssertionError(f"{name} on port {port} did not answer within {timeout:g} s: {_tail(log)}") from None
        if got == "up":
            break
    else:
        raise AssertionError(f"{name} did not start in {START_TRIES} tries: {_tail(log)}")
    try:
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def lone_sshd(directory: Path, address: str, host_name: str = "remote-1") -> Iterator[tuple[object, dict]]:
    """A real sshd on `address` with its own host key, user key and known_hosts (the sandbox's component alone),
    logging in the user running the tests: (the sandbox, its profile's host entry). Taken down when the block ends.
    Its caller skips where sshd is not installed (`acgs_verify.sandbox.components.sshd.sshd_binary()`)."""
    from acgs_verify.sandbox import Sandbox
    from acgs_verify.sandbox.components.sshd import Sshd
    from tests.conftest import free_port_offset

    sb = Sandbox(directory, port_offset=free_port_offset(), components=[Sshd(address=address, host_name=host_name)])
    try:
        sb.up()
        yield sb, sb.profile_data()["hosts"][-1]
    finally:
        sb.down()


@contextlib.contextmanager
def redis_server(directory: Path, password: str | None = None, timeout: float = 10) -> Iterator[int]:
    """A redis-server of this test's own on 127.0.0.1 (no persistence, files under `directory`), answering PING
    when the block starts and stopped when it ends; its port is yielded. It gives up with the server's log."""
    import redis

    def argv(port: int) -> list[str]:
        return ["redis-server", "--port", str(port), "--bind", ADDRESS, "--save", "", "--appendonly", "no",
                "--dir", str(directory), *(["--requirepass", password] if password else [])]

    def answers(port: int) -> bool:
        with contextlib.closing(redis.Redis(host=ADDRESS, port=port, password=password, socket_timeout=1,
                                            retry=None)) as client, contextlib.suppress(redis.ConnectionError):
            return bool(client.ping())
        return False

    with server("redis-server", argv, answers, directory / "redis-server.log", timeout) as (port, _):
        yield port


def _tail(log: Path) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:]) or "its log is empty"
    except OSError:
        return f"no log at {log}"


@contextlib.contextmanager
def http_answering(routes: dict[str, tuple[int, bytes]], default: tuple[int, bytes] = (404, b"not here"),
                   delay: Callable[[], float] | None = None) -> Iterator[int]:
    """A plain HTTP server in this process on 127.0.0.1 (the kernel's port) answering a GET of each path in
    `routes` with its (status, body), any other path with `default`, each answer after `delay()` seconds when
    given; yields the port, stopped when the block ends."""
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if delay is not None:
                time.sleep(delay())
            status, body = routes.get(self.path, default)
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()
