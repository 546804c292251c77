"""Whether a target answers at all: one TCP connect per address and port per run, shared by every probe.

>>> with reach.session(profile.hosts, connect_timeout=3):   # the plugin, around a run (one per process)
...     reach.gate("10.0.0.5", 8016, kind="http", url="http://10.0.0.5:8016/health")
Unreachable: app-2 unreachable: 10.0.0.5:22 did not answer within 3 s (first tried by SYS-06)

A port that refuses at once answered (its host is up: the service is down, which its own checks measure); only a
connect that times out, or a network that says there is no route, is `Unreachable`. The first try of an address and
port decides for the run: every later try of it, by any check or probe of this process, raises at once citing it.
A host's own port (ssh) that does not answer makes every port of that address unreachable: the host is down. The
first port asked of a host's address is therefore measured together with the host's ssh port, in parallel, so a
down host costs one connect timeout, whichever of its checks comes first.

Outside a session (a probe used by discover, a test of a probe), gate() measures nothing and never raises: a
cache that outlived its run would judge a port the kernel has since given to someone else.
"""

from __future__ import annotations

import contextlib
import errno
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from acgs_verify.errors import Unreachable

T = TypeVar("T")
REMOTE_BACKENDS = ("ssh", "paramiko")  # a host reached over its ssh port; local and ansible hosts have none here
# what the network says when there is no way to the peer: no answer will come, however long one waits
SILENT_ERRNOS = {errno.ETIMEDOUT, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN}


@dataclass(frozen=True)
class Verdict:
    """What the first try of an address and port found: it answered, or it did not (with the words for it)."""

    answered: bool
    target: str = ""
    reason: str = ""
    reach_step: str = ""
    address: str = ""
    port: int | None = None

    def error(self) -> Unreachable:
        return Unreachable(self.target, self.reason, reach_step=self.reach_step, address=self.address,
                           port=self.port)


ANSWERED = Verdict(True)


class Reach:
    """The run's reachability cache, keyed by (address, port), safe to share between threads."""

    def __init__(self, hosts: Sequence[Any] = (), connect_timeout: float = 3.0):
        self.connect_timeout = connect_timeout
        # who is trying now: "by SYS-06" (the check running, by its runbook ID), or the run's start, which
        # connects every host at once before the first check: the first try is credited to it in every message
        self.asker = "at the run's start"
        # address -> the one remote host at that address (its name and ssh port say who is down); an address two
        # hosts share (two sshd ports on one machine) says nothing about the other's port: judged port by port
        remote = [h for h in hosts if h.backend in REMOTE_BACKENDS]
        self._hosts = {h.address: h for h in remote if sum(o.address == h.address for o in remote) == 1}
        self._verdicts: dict[tuple[str, int], Verdict] = {}
        self._inflight: dict[tuple[str, int], threading.Event] = {}
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------------- asking
    def gate(self, address: str, port: int, kind: str = "tcp", url: str = "", target: str = "") -> None:
        """Raise Unreachable at once when `address:port`, or the host at `address`, did not answer; measure both
        first (one TCP connect each, in parallel, with the connect timeout) when this is their first try."""
        host = self._hosts.get(address)
        ssh_port = _ssh_port(host) if host is not None else None
        self._raise_if_known(address, port)
        if ssh_port is not None and port != ssh_port and (address, ssh_port) not in self._verdicts:
            helper = threading.Thread(target=self._once, args=((address, ssh_port), lambda: self._connect(
                address, ssh_port, "ssh", "", "")), daemon=True, name="acgs-reach")
            helper.start()
            mine = self._once((address, port), lambda: self._connect(address, port, kind, url, target))
            helper.join()
            self._raise_if_known(address, port)
            if not mine.answered:
                raise mine.error()
            return
        verdict = self._once((address, port), lambda: self._connect(address, port, kind, url, target))
        if not verdict.answered:
            raise verdict.error()

    def attempt(self, address: str, port: int, connect: Callable[[], T],
                silent: Callable[[BaseException], str | None], kind: str = "ssh", target: str = "") -> T:
        """`connect()` (a client's own connection: ssh, paramiko) as the first try of `address:port`: when it
        raises an exception for which `silent` gives a reason (a timeout), the address and port did not answer
        (Unreachable, now and for every later try); any other outcome means it answered, and the exception, if
        any, is raised as it was."""
        self._raise_if_known(address, port)
        outcome: dict[str, Any] = {}

        def measure() -> Verdict:
            try:
                outcome["value"] = connect()
            except Exception as exc:  # noqa: BLE001 -- judged here, raised below as it was
                outcome["error"] = exc
                why = silent(exc)
                if why:
                    return self._silent(address, port, kind, "", target,
                                        f"did not answer within {self.connect_timeout:g} s ({why})")
            return ANSWERED

        verdict = self._once((address, port), measure)
        if not verdict.answered:
            raise verdict.error()
        if "error" in outcome:
            raise outcome["error"]
        if "value" in outcome:
            return outcome["value"]
        return connect()  # another thread's try found it answering: this one connects for itself

    def known(self, address: str, port: int) -> Verdict | None:
        """The verdict on `address:port` so far (the host's, when the host at `address` is down), or None."""
        host = self._hosts.get(address)
        if host is not None:
            down = self._verdicts.get((address, _ssh_port(host)))
            if down is not None and not down.answered:
                return down
        return self._verdicts.get((address, port))

    # -------------------------------------------------------------------------------- measuring
    def _raise_if_known(self, address: str, port: int) -> None:
        verdict = self.known(address, port)
        if verdict is not None and not verdict.answered:
            raise verdict.error()

    def _once(self, key: tuple[str, int], measure: Callable[[], Verdict | None]) -> Verdict:
        """measure() once per key: a thread that asks while another measures waits for that verdict."""
        while True:
            with self._lock:
                if key in self._verdicts:
                    return self._verdicts[key]
                event = self._inflight.get(key)
                mine = event is None
                if mine:
                    event = self._inflight[key] = threading.Event()
            if not mine:
                event.wait()
                continue
            verdict = None
            try:
                verdict = measure()
            finally:
                with self._lock:
                    if verdict is not None:  # None: nothing learnt (a name that does not resolve): ask again
                        self._verdicts[key] = verdict
                    del self._inflight[key]
                event.set()
            return verdict or ANSWERED

    def _connect(self, address: str, port: int, kind: str, url: str, target: str) -> Verdict | None:
        """One TCP connect with the connect timeout: answered (connected, or refused at once), or not."""
        timeout = self.connect_timeout
        started = time.monotonic()
        try:
            with socket.create_connection((address, port), timeout=timeout):
                return ANSWERED
        except ConnectionRefusedError:
            return ANSWERED  # the host said no: it is up, and the service's own checks say it is down
        except socket.gaierror:
            return None  # the client's own try names the resolver's error
        except TimeoutError:
            return self._silent(address, port, kind, url, target, f"did not answer within {timeout:g} s")
        except OSError as exc:
            if exc.errno in SILENT_ERRNOS:
                took = time.monotonic() - started
                why = (exc.strerror or "no route").lower()
                return self._silent(address, port, kind, url, target, f"{why} (after {took:.1f} s)")
            return ANSWERED  # reset and the like: something answered; the client's try says what

    def _silent(self, address: str, port: int, kind: str, url: str, target: str, what: str) -> Verdict:
        host = self._hosts.get(address)
        is_host = host is not None and port == _ssh_port(host)
        name = host.name if host is not None else (target or _where(address, port))
        asker = f" (first tried {self.asker})" if self.asker else ""
        step = _ssh_step(host) if is_host else reach_step(kind, address, port, url)
        return Verdict(False, name, f"{_where(address, port)} {what}{asker}", step, address, port)


def _ssh_port(host: Any) -> int:
    return int(host.port or 22)


def _where(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _ssh_step(host: Any) -> str:
    words = ["ssh", "-v", *(["-p", str(host.port)] if host.port else []),
             f"{host.user}@{host.address}" if host.user else host.address]
    return "`" + shlex.join(words) + "`"


def reach_step(kind: str, address: str, port: int, url: str = "") -> str:
    """How an on-call engineer restores, or tests, the way to a target: `curl -v URL`, `pg_isready -h H -p P`."""
    words = {
        "http": ["curl", "-v", url or f"http://{_where(address, port)}/"],
        "postgres": ["pg_isready", "-h", address, "-p", str(port)],
        "redis": ["redis-cli", "-h", address, "-p", str(port), "ping"],
        "tls": ["openssl", "s_client", "-connect", _where(address, port)],
    }.get(kind, ["nc", "-vz", "-w", "3", address, str(port)])
    return "`" + shlex.join(words) + "`"


# ------------------------------------------------------------------------------------ the run's one cache
_active: Reach | None = None
_active_lock = threading.Lock()


@contextlib.contextmanager
def session(hosts: Sequence[Any], connect_timeout: float) -> Iterator[Reach]:
    """The cache of one run (one per process: the pytest process, or each xdist worker), dropped when it ends."""
    global _active
    with _active_lock:
        _active = Reach(hosts, connect_timeout)
        mine = _active
    try:
        yield mine
    finally:
        with _active_lock:
            if _active is mine:
                _active = None


def current() -> Reach | None:
    return _active


def asking(label: str) -> None:
    """Name the check now running (`SYS-06`): the one a first try is credited to in every later message."""
    active = _active
    if active is not None:
        active.asker = f"by {label}"


def gate(address: str, port: int, kind: str = "tcp", url: str = "", target: str = "") -> None:
    """Reach.gate on the run's cache; nothing outside a run."""
    active = _active
    if active is not None and address and not address.startswith("/"):
        active.gate(address, int(port), kind, url, target)
