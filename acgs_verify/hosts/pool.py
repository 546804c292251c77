"""The pool of host connections: one per host per run, each measurement once, fleets read ahead in threads.

A probe function takes the pool and the profile's host, and owns its cache key: every check asking the same
function with the same arguments gets one measurement per host per run.
>>> pool = HostPool(connect_timeout=3)
>>> pool.measure(host, "processes", read_processes)   # ProbeError('host unreachable: ...'), found once per host
[(4242, 'python -m uvicorn ... service_app:auth ...'), ...]
>>> pool.measure_later(host, "system", read_snapshot, host.mounts)  # now, in a thread; measure() of it waits
>>> pool.moved_to(hosts[5], hosts[6:])     # the test loop reached host 5: host 4's facts go, 6..21 are read ahead
>>> pool.close()                           # ends the threads, connections and ssh control masters it started

A `read_*` function is the measurement itself, on a testinfra host (`conn`): `read_processes(conn)`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from acgs_verify.errors import ProbeError
from acgs_verify.hosts import reach
from acgs_verify.hosts.backends import Backends, Liveness, reason, silent
from acgs_verify.hosts.batch import Recorder, Replay, run_batch

if TYPE_CHECKING:
    from acgs_verify.profile.model import Host

T = TypeVar("T")
PREFETCH_THREADS = 64  # facts started early are mostly waiting (a sleep, a remote command): threads are cheap
# commands in flight on one host at once: each is a session multiplexed on its one ssh connection, and sshd's
# MaxSessions (10 by default) refuses more; the test loop's own command needs one too
SESSIONS_PER_HOST = 4
BATCHED_BACKENDS = ("ssh",)  # where a read-ahead's commands ride one remote shell command (hosts/batch.py)
READ_AHEAD_HOSTS = 16  # hosts being read while one host's checks run: bounds threads and memory, not the fleet


class HostPool:
    """One testinfra connection per host per process; a host that cannot be reached is tried once."""

    def __init__(self, connect_timeout: float, inventory: str | None = None,
                 passphrases: dict[str, str] | None = None, alive: Liveness | None = None):
        self.connect_timeout = connect_timeout
        self.backends = Backends(connect_timeout, inventory, passphrases, alive or Liveness())
        self._hosts: dict[str, Any] = {}
        self._unreachable: dict[str, str] = {}
        self._unreachable_error: dict[str, ProbeError] = {}  # a host that did not answer: its Unreachable
        self._facts: dict[tuple[str, Callable, str], Any] = {}  # _key() -> what was measured
        self._pending: dict[tuple[str, Callable, str], Future] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._sessions: dict[str, threading.Semaphore] = {}
        # what the checks asked of the first host of each kind, in order: read ahead for the next hosts of that kind
        self._plans: dict[tuple, list[tuple[str, Callable[..., Any], tuple, list]]] = {}
        self._plan_owner: dict[tuple, str] = {}
        self._current: Host | None = None  # the host whose checks run now (moved_to)

    def get(self, host: Host):
        with self._lock_of(host):  # prefetch threads and the test loop connect a host once between them
            if host.name in self._unreachable_error:
                raise self._unreachable_error[host.name]
            if host.name in self._unreachable:
                raise ProbeError(f"host unreachable: {self._unreachable[host.name]}")
            if host.name not in self._hosts:
                try:
                    conn = self._reached(host)
                except ProbeError:
                    raise
                except Exception as exc:  # testinfra raises backend-specific errors; all mean the same here
                    self._unreachable[host.name] = reason(exc)
                    raise ProbeError(f"host unreachable: {self._unreachable[host.name]}") from None
                self._hosts[host.name] = conn
            return self._hosts[host.name]

    def _reached(self, host: Host):
        """The host's connection, its handshake done. In a run, the handshake of a host reached over its ssh port
        is that port's reachability measurement (hosts/reach.py): a host that does not answer is Unreachable,
        now and for every later check and probe of the run on its address, without another connection."""
        def handshake():
            conn = self.backends.open(host)
            conn.run("true")  # the handshake; later commands reuse the connection
            return conn

        run = reach.current()
        if run is None or host.backend not in reach.REMOTE_BACKENDS:
            return handshake()
        try:
            return run.attempt(host.address, int(host.port or 22), handshake, silent, kind="ssh",
                               target=host.name)
        except reach.Unreachable as exc:
            self._unreachable_error[host.name] = exc
            raise

    def measure(self, host: Host, label: str, read: Callable[..., T], *args: Any) -> T:
        """`read(conn, *args)` once per host per run (one `ps`, one `ss`, one read of /proc), shared by every caller
        asking the same: the key is the function itself (not its name, which two lambdas of one scope share) and its
        arguments, so two functions never share a result by accident. A host that stops answering half-way is
        marked unreachable, so its other checks fail at once too.

        >>> pool.measure(host, "port owners", read_port_owners, host.become)   # label: for error messages
        """
        commands = self._learn(host, label, read, args)
        if commands is None:
            return self._once(_key(host, read, args), host, label, lambda conn: read(conn, *args))

        def recorded(conn):  # the first host of its kind: note the commands, for the others' batch
            rec = Recorder(conn)
            try:
                return read(rec, *args)
            finally:
                commands[:] = rec.commands
        return self._once(_key(host, read, args), host, label, recorded)

    def measure_later(self, host: Host, label: str, read: Callable[..., Any], *args: Any) -> Future:
        """measure(), started now in a thread: a later measure() of the same function and arguments waits for it.
        Measurements that wait (the CPU sample's window) are then taken for every host at once instead of one host
        after another."""
        return self._start(_key(host, read, args), host, label, lambda conn: read(conn, *args))

    def _learn(self, host: Host, label: str, read: Callable[..., Any], args: tuple) -> list | None:
        """Record read(conn, *args) in the plan of `host`'s kind while `host` is the first of its kind measured;
        the list its commands are to be noted in (None when nothing is to be noted)."""
        kind = _kind(host)
        owner = self._plan_owner.setdefault(kind, host.name)
        if owner != host.name:
            return None
        plan = self._plans.setdefault(kind, [])
        if any(r is read and a == args for _, r, a, _ in plan):
            return None
        commands: list[tuple[str, tuple]] = []
        plan.append((label, read, args, commands))
        return commands

    def read_ahead(self, hosts: list[Host]) -> int:
        """Start now, in threads, for each of `hosts` (in order), what the checks asked of the first host of its
        kind (same backend, roles, mounts): the same functions with the same arguments, their commands batched
        into one remote command per host. Returns how many measurements were started.

        >>> pool.read_ahead(profile.hosts[5:21])   # while host 5's checks run, hosts 6..20 are being read
        80

        Only a measurement with exactly the same function and arguments is ever returned to a check (the cache key
        is both), so a host whose checks ask something else costs one unused read, never a wrong answer; a batched
        command that failed or wrote to stderr is run again on its own, so its reason is the one it gives alone.
        A host already found unreachable is skipped, and so is a local host; one not yet connected connects in its
        thread, with its timeout.
        """
        started = 0
        for host in hosts:
            # a local host's reads run on the checker's own cores, with no round trip to overlap: reading ahead
            # would only hold more in memory (+26 MB at 50 local hosts, BENCHMARKS.md)
            if host.name in self._unreachable or host.name in self._unreachable_error or host.backend == "local":
                continue
            batch = []
            for label, read, args, commands in self._plans.get(_kind(host), ()):
                key = _key(host, read, args)
                if key in self._facts or key in self._pending:
                    continue
                started += 1
                if commands and host.backend in BATCHED_BACKENDS:
                    future: Future = Future()
                    self._pending[key] = future
                    batch.append((label, read, args, commands, future))
                else:  # commands not noted (its first read was started early) or a backend without a shell
                    self._start(key, host, label, lambda conn, read=read, args=args: read(conn, *args))
            if batch:
                self._threads().submit(self._batch, host, batch)
        return started

    def moved_to(self, host: Host | None, upcoming: list[Host] | None) -> int:
        """The test loop reached the first check of `host` (None: checks on no host): drop what the previous
        host's checks measured (release), and read ahead `host` and the first READ_AHEAD_HOSTS of `upcoming` (the
        hosts whose checks come next, in order), so a fleet's round trips are in flight together instead of one
        host after another. `upcoming` None: which hosts come next is not known (an xdist worker is given its
        hosts one by one), and nothing is read ahead. Returns how many measurements were started.

        >>> pool.moved_to(hosts[5], hosts[6:])     # host 4's facts dropped; hosts 5..21 being read
        """
        if self._current is not None and (host is None or host.name != self._current.name):
            self.release(self._current)
        self._current = host
        if host is None or upcoming is None:
            return 0
        return self.read_ahead([host, *upcoming[:READ_AHEAD_HOSTS]])

    def _batch(self, host: Host, batch: list) -> None:
        """One remote command for every command `batch`'s reads ran on the plan's first host, then each read
        against those outputs (commands it runs that the batch did not hold go to the host as usual)."""
        outputs: dict[str, Any] = {}
        try:
            conn = self.get(host)
            wanted = list(dict.fromkeys(conn.backend.get_command(c, *a) for *_, commands, _ in batch
                                        for c, a in commands))
            with self._session(host):
                outputs = run_batch(conn, wanted)
        except ProbeError as exc:
            for *_, future in batch:
                future.set_exception(exc)
            return
        except Exception:  # noqa: BLE001 -- the batch is an optimisation: each read then runs on its own
            outputs = {}
        for label, read, args, _, future in batch:
            try:
                future.set_result(self._compute(host, label, lambda c, read=read, args=args: read(
                    Replay(c, outputs), *args)))
            except BaseException as exc:  # noqa: BLE001 -- raised to the check that reads it, as measure() would
                future.set_exception(exc)

    def release(self, host: Host) -> None:
        """Drop what was measured on `host` (its checks are done): memory stays bounded by the hosts in flight,
        not the fleet. A later ask measures again."""
        for key in [k for k in self._facts if k[0] == host.name]:
            del self._facts[key]
        for key in [k for k in self._pending if k[0] == host.name and self._pending[k].done()]:
            del self._pending[key]

    def _once(self, key: tuple, host: Host, name: str, compute):
        pending = self._pending.pop(key, None)
        if pending is not None:
            self._facts[key] = pending.result()  # a ProbeError raised in the thread is raised here
        if key not in self._facts:
            self._facts[key] = self._compute(host, name, compute)
        return self._facts[key]

    def connect(self, hosts: list[Host]) -> None:
        """Connect to every host at once (ssh handshakes in parallel); one that cannot be reached is remembered,
        and its checks fail with the reason as before."""
        for future in [self._threads().submit(self.get, h) for h in hosts if h.name not in self._hosts]:
            with contextlib.suppress(ProbeError):
                future.result()

    def _start(self, key: tuple, host: Host, name: str, compute) -> Future:
        if key in self._facts:  # already measured: a future that holds it
            done: Future = Future()
            done.set_result(self._facts[key])
            return done
        if key not in self._pending:
            self._pending[key] = self._threads().submit(self._compute, host, name, compute)
        return self._pending[key]

    def _threads(self) -> ThreadPoolExecutor:
        """The threads that measure ahead of the checks (started on first use; close() ends them)."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=PREFETCH_THREADS, thread_name_prefix="acgs-prefetch")
        return self._executor

    def _compute(self, host: Host, name: str, compute):
        conn = self.get(host)
        try:
            with self._session(host):
                return compute(conn)
        except ProbeError:
            raise
        except RuntimeError as exc:  # testinfra's ssh backend: ssh itself failed (exit 255)
            self._unreachable[host.name] = reason(exc)
            raise ProbeError(f"host unreachable: {self._unreachable[host.name]}") from None
        except Exception as exc:
            raise ProbeError(f"{name} on {host.name}: {reason(exc)}") from None

    def _session(self, host: Host) -> threading.Semaphore:
        with self._locks_lock:
            return self._sessions.setdefault(host.name, threading.Semaphore(SESSIONS_PER_HOST))

    def _lock_of(self, host: Host) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(host.name, threading.Lock())

    def stream(self, host: Host, cmd: str, timeout: float):
        """`cmd` run on the host with its stdout read in chunks as it comes (stream.CommandStream), not collected
        whole: a GiB crosses in constant memory. A read waits at most `timeout` s for a byte.

        >>> with pool.stream(host, command("head", "-c", size, "--", path), timeout=30) as s:
        ...     chunk = s.read(1 << 19)
        """
        from acgs_verify.hosts import stream

        self.get(host)  # the host is reached (or found unreachable) once, as for every other measurement
        via = self.backends.stream_via.get(host.name)
        if via is None:
            raise ProbeError(f"host {host.name}: its {host.backend} connection cannot stream a command's output")
        if via[0] == "local":
            return stream.ProcessStream(["sh", "-c", cmd], timeout)
        if via[0] == "ssh":
            return stream.ProcessStream([*via[1], cmd], timeout)
        return stream.ChannelStream(via[1], cmd, timeout)

    def forget(self) -> None:
        self._facts.clear()

    def close(self) -> None:
        """End the threads, the connections and the control masters this pool started."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._pending.clear()
        self._hosts.clear()
        self.backends.close()


def _kind(host: Host) -> tuple:
    """Hosts the same checks run on with the same arguments, as far as the profile tells: backend, roles, mounts."""
    return host.backend, tuple(host.roles), tuple(host.mounts), host.become


def _key(host: Host, read: Callable, args: tuple) -> tuple[str, Callable, str]:
    """(host, the function, its arguments): what one measurement is cached under. The function object, not its
    qualified name, which two lambdas (or two closures) of one scope share."""
    return host.name, read, repr(args)
