"""Host facts through testinfra, the same over the local, ssh, paramiko and ansible backends.

A probe function takes the pool and the profile's host, and owns its cache key: every check asking the same
function with the same arguments gets one measurement per host per run.
>>> pool = HostPool(connect_timeout=3)
>>> processes(pool, host)                  # raises ProbeError('host unreachable: ...'), found once per host
[(4242, 'python -m uvicorn ... service_app:auth ...'), ...]
>>> port_owners(pool, host).listeners[18016].owners[0].pid, uses_systemd(pool, host)
(4242, False)
>>> pool.measure_later(host, "system", read_snapshot, host.mounts)  # now, in a thread; measure() of it waits
>>> pool.close()                           # ends the ssh control masters this pool started

A `read_*` function is the measurement itself, on a testinfra host (`conn`): `read_processes(conn)`.

ssh hosts get a generated ssh_config (one per host, in a private directory): the profile's user, port, key and
known_hosts for that address, strict host key checking, BatchMode, the connect timeout, and a ControlPath so that
every command after the first rides the same connection (~10 ms instead of a ~200 ms handshake). A profile's own
`ssh_config` is included after that, so its ProxyJump (bastions) and other settings apply.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from acgs_verify.inventory import ensure_ansible_on_path
from acgs_verify.probes import reach
from acgs_verify.probes.errors import ProbeError
from acgs_verify.profile import Host
from acgs_verify.redact import one_line, printable
from acgs_verify.words import plural

T = TypeVar("T")
PREFETCH_THREADS = 64  # facts started early are mostly waiting (a sleep, a remote command): threads are cheap
# commands in flight on one host at once: each is a session multiplexed on its one ssh connection, and sshd's
# MaxSessions (10 by default) refuses more; the test loop's own command needs one too
SESSIONS_PER_HOST = 4
BATCHED_BACKENDS = ("ssh",)  # where a read-ahead's commands ride one remote shell command (see _run_batch)
# A host that stops answering mid-command (frozen, its sshd stopped, a link that drops packets) answers no remote
# `timeout` either: the client side gives up after ALIVE_COUNT unanswered probes ALIVE_INTERVAL s apart, so a
# command waits on a silent host for at most ALIVE_INTERVAL * (ALIVE_COUNT + 1) s, however long it may legitimately
# run while the host still answers. ssh's ServerAliveInterval/ServerAliveCountMax; paramiko's _LiveParamiko.
ALIVE_INTERVAL = 5
ALIVE_COUNT = 3


# ------------------------------------------------------------------------------ building a command from values
# Every value in a remote command comes from a profile or a target (a path, a unit, a file name): it is data. The
# functions below are the one way a probe puts a value into a command; the code around them is written in this
# package and holds no value.

# The exit status of a command's own "cannot" message (refuse()): no tool a probe runs exits with it, so a probe
# tells its message (on stderr) from the tool's output, and never reads the message as a measurement.
CANNOT = 90


def command(*words: str | int) -> str:
    """One simple command, each word shell-quoted: `command("tail", "-n", 500, "--", path)`.

    >>> command("systemctl", "is-active", "--", "acgs-auth; touch /tmp/x")
    "systemctl is-active -- 'acgs-auth; touch /tmp/x'"
    """
    return " ".join(shlex.quote(str(w)) for w in words)


def operand(path: str) -> str:
    """A path as a file operand: one that is not absolute gets `./`, so that `-x` (or `-`, which tools read as
    stdin, or find's `(` and `!`) is a file name to every tool, even one that knows no `--` (find)."""
    return path if not path or path.startswith(("/", "./", "../")) else "./" + path


def glob_word(pattern: str) -> str:
    """A path for the shell with every character quoted but the glob characters `*?[]`: /var/log/acgs/*.log."""
    pattern = operand(pattern)
    return "".join(c if c in "*?[]" or c.isalnum() or c in "/._-" else shlex.quote(c) for c in pattern)


def refuse(message: str) -> str:
    """A shell fragment that writes `message` (a value, printf's argument, never its format) as one line on stderr
    and exits CANNOT: `test -r FILE || REFUSE`. The group ends the whole command only outside a pipeline."""
    return f"{{ printf '%s\\n' {shlex.quote(message)} >&2; exit {CANNOT}; }}"


def refused(result) -> str | None:
    """Why a command did not measure: its refuse() message, or whatever it wrote on stderr; None when it ran
    clean. A probe raises on this before it reads stdout."""
    err = result.stderr or ""
    if result.rc == CANNOT or err.strip():
        return one_line(err) or f"exit {result.rc}"
    return None


class HostPool:
    """One testinfra connection per host per process; a host that cannot be reached is tried once."""

    def __init__(self, connect_timeout: float, inventory: str | None = None,
                 passphrases: dict[str, str] | None = None):
        self.connect_timeout = connect_timeout
        self.inventory = inventory
        # host name -> its identity file's passphrase (paramiko); None where there is none
        self._passphrases = passphrases or {}
        self._hosts: dict[str, Any] = {}
        self._unreachable: dict[str, str] = {}
        self._unreachable_error: dict[str, ProbeError] = {}  # a host that did not answer: its Unreachable
        self._facts: dict[tuple[str, Callable, str], Any] = {}  # _key() -> what was measured
        self._ssh_dir: Path | None = None
        self._masters: list[tuple[str, str]] = []  # (ssh_config, destination) of ssh control masters
        self._pending: dict[tuple[str, Callable, str], Future] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._sessions: dict[str, threading.Semaphore] = {}
        # what the checks asked of the first host of each kind, in order: read ahead for the next hosts of that kind
        self._plans: dict[tuple, list[tuple[str, Callable[..., Any], tuple, list]]] = {}
        self._plan_owner: dict[tuple, str] = {}
        self._stream_via: dict[str, tuple] = {}  # host name -> how stream() reaches it (set as it connects)

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
                    self._unreachable[host.name] = _reason(exc)
                    raise ProbeError(f"host unreachable: {self._unreachable[host.name]}") from None
                self._hosts[host.name] = conn
            return self._hosts[host.name]

    def _reached(self, host: Host):
        """The host's connection, its handshake done. In a run, the handshake of a host reached over its ssh port
        is that port's reachability measurement (probes/reach.py): a host that does not answer is Unreachable,
        now and for every later check and probe of the run on its address, without another connection."""
        def handshake():
            conn = self._connect(host)
            conn.run("true")  # the handshake; later commands reuse the connection
            return conn

        run = reach.current()
        if run is None or host.backend not in reach.REMOTE_BACKENDS:
            return handshake()
        try:
            return run.attempt(host.address, int(host.port or 22), handshake, _silent, kind="ssh",
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
            rec = _Recorder(conn)
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

    def _batch(self, host: Host, batch: list) -> None:
        """One remote command for every command `batch`'s reads ran on the plan's first host, then each read
        against those outputs (commands it runs that the batch did not hold go to the host as usual)."""
        outputs: dict[str, Any] = {}
        try:
            conn = self.get(host)
            wanted = list(dict.fromkeys(conn.backend.get_command(c, *a) for *_, commands, _ in batch
                                        for c, a in commands))
            with self._session(host):
                outputs = _run_batch(conn, wanted)
        except ProbeError as exc:
            for *_, future in batch:
                future.set_exception(exc)
            return
        except Exception:  # noqa: BLE001 -- the batch is an optimisation: each read then runs on its own
            outputs = {}
        for label, read, args, _, future in batch:
            try:
                future.set_result(self._compute(host, label, lambda c, read=read, args=args: read(
                    _Replay(c, outputs), *args)))
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
            self._unreachable[host.name] = _reason(exc)
            raise ProbeError(f"host unreachable: {self._unreachable[host.name]}") from None
        except Exception as exc:
            raise ProbeError(f"{name} on {host.name}: {_reason(exc)}") from None

    def _session(self, host: Host) -> threading.Semaphore:
        with self._locks_lock:
            return self._sessions.setdefault(host.name, threading.Semaphore(SESSIONS_PER_HOST))

    def _lock_of(self, host: Host) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(host.name, threading.Lock())

    def stream(self, host: Host, cmd: str, timeout: float):
        """`cmd` run on the host with its stdout read in chunks as it comes (host_stream.CommandStream), not
        collected whole: a GiB crosses in constant memory. A read waits at most `timeout` s for a byte.

        >>> with pool.stream(host, command("head", "-c", size, "--", path), timeout=30) as s:
        ...     chunk = s.read(1 << 21)
        """
        from acgs_verify.probes import host_stream

        self.get(host)  # the host is reached (or found unreachable) once, as for every other measurement
        via = self._stream_via.get(host.name)
        if via is None:
            raise ProbeError(f"host {host.name}: its {host.backend} connection cannot stream a command's output")
        if via[0] == "local":
            return host_stream.ProcessStream(["sh", "-c", cmd], timeout)
        if via[0] == "ssh":
            return host_stream.ProcessStream(["ssh", "-F", via[1], "--", via[2], cmd], timeout)
        return host_stream.ChannelStream(via[1], cmd, timeout)

    def forget(self) -> None:
        self._facts.clear()

    def close(self) -> None:
        """End the control masters this pool started and remove its ssh_config files."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self._pending.clear()
        for config, dest in self._masters:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(["ssh", "-F", config, "-O", "exit", dest], capture_output=True, timeout=5)
        self._masters.clear()
        for conn in self._hosts.values():
            client = conn.backend.__dict__.get("client")  # a paramiko connection, if one was made
            if client is not None:
                client.close()
        self._hosts.clear()
        if self._ssh_dir is not None:
            shutil.rmtree(self._ssh_dir, ignore_errors=True)
            self._ssh_dir = None

    # ------------------------------------------------------------------------------------ backends
    def _connect(self, host: Host):
        import testinfra  # ~130 ms of imports: only for checks that need host facts

        if host.backend == "local":
            self._stream_via[host.name] = ("local",)
            return testinfra.get_host("local://")
        _check_address(host)
        if host.backend == "ssh":
            config = self._ssh_config(host)
            dest = _bracket(host.address)
            self._masters.append((config, dest))
            self._stream_via[host.name] = ("ssh", config, dest)
            return testinfra.get_host(f"ssh://{dest}", ssh_config=config, timeout=self._timeout())
        if host.backend == "paramiko":
            return self._paramiko(host)
        if host.backend == "ansible":
            return self._ansible(host)
        raise ProbeError(f"host {host.name}: unknown backend {host.backend!r}")

    def _timeout(self) -> int:
        return max(1, math.ceil(self.connect_timeout))  # ssh's ConnectTimeout takes whole seconds

    def _ssh_config(self, host: Host) -> str:
        with self._locks_lock:  # hosts connect from prefetch threads at once: one directory for all
            if self._ssh_dir is None:
                # short: a unix socket path (ControlPath) must stay under 108 bytes
                self._ssh_dir = Path(tempfile.mkdtemp(prefix="acgs-ssh-", dir="/tmp"))
        path = self._ssh_dir / f"{host.name}.config"
        path.write_text(ssh_config_text(host, self._timeout(), self._ssh_dir))
        return str(path)

    def _paramiko(self, host: Host):
        import paramiko
        from testinfra.host import Host as Conn

        # a backend of its own (testinfra.get_host would share one per address): its commands check the host is
        # alive while they wait, and its client is the one made below
        backend = _live_paramiko()(f"paramiko://{_bracket(host.address)}", timeout=self._timeout())
        conn = Conn(backend)
        backend.set_host(conn)
        client = paramiko.SSHClient()
        if host.strict_host_key_checking:
            known = Path(host.known_hosts or "~/.ssh/known_hosts").expanduser()
            if known.exists():
                client.load_host_keys(str(known))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        t = self.connect_timeout
        client.connect(host.address, port=host.port or 22, username=host.user,
                       key_filename=str(Path(host.identity_file).expanduser()) if host.identity_file else None,
                       passphrase=self._passphrases.get(host.name),
                       timeout=t, banner_timeout=t, auth_timeout=t, allow_agent=True, look_for_keys=False)
        # testinfra's own paramiko client accepts any host key (WarningPolicy); this one checks it
        conn.backend.__dict__["client"] = client
        self._stream_via[host.name] = ("paramiko", client)
        client.get_transport().set_keepalive(ALIVE_INTERVAL)  # what stateful firewalls need to keep it open
        return conn

    def _ansible(self, host: Host):
        import testinfra

        if not self.inventory:
            raise ProbeError(f"host {host.name}: backend ansible needs the profile's `inventory`")
        ensure_ansible_on_path()
        config = self._ssh_config(host)
        conn = testinfra.get_host(f"ansible://{host.name}", ansible_inventory=self.inventory, ssh_config=config)
        inner = conn.backend.ansible_runner.get_host(host.name, ssh_config=config, ssh_identity_file=None)
        if inner is not None and inner.backend.NAME == "ssh":
            inner.backend.timeout = self._timeout()  # testinfra's default is 10 s; the profile's wins
            self._masters.append((config, _bracket(inner.backend.host.name)))
            self._stream_via[host.name] = ("ssh", config, _bracket(inner.backend.host.name))
        return conn


def _live_paramiko():
    """testinfra's paramiko backend whose commands do not wait on a host that stopped answering.

    testinfra waits for a command's output and exit status without end. Here the channel is read ALIVE_INTERVAL
    s at a time; after each silent interval the host must answer a request (a session channel opened and closed
    at once, the one request paramiko can wait on with a timeout) within ALIVE_INTERVAL * ALIVE_COUNT s, else the
    command fails with TimeoutError. A command that runs long on a host that answers is left to its remote
    `timeout`."""
    import paramiko
    from testinfra.backend.paramiko import ParamikoBackend

    class LiveParamiko(ParamikoBackend):
        def _exec_command(self, command: bytes) -> tuple[int, bytes, bytes]:
            transport = self.client.get_transport()
            chan = transport.open_session(timeout=ALIVE_INTERVAL * ALIVE_COUNT)
            try:
                chan.settimeout(ALIVE_INTERVAL)
                chan.exec_command(command)
                stdout = self._read(transport, chan.recv)
                stderr = self._read(transport, chan.recv_stderr)
                while not chan.status_event.wait(ALIVE_INTERVAL):
                    self._alive(transport)
                return chan.recv_exit_status(), stdout, stderr
            finally:
                chan.close()

        def _read(self, transport, recv) -> bytes:
            out = bytearray()
            while True:
                try:
                    data = recv(1 << 16)
                except TimeoutError:  # socket.timeout: ALIVE_INTERVAL s without a byte
                    self._alive(transport)
                    continue
                if not data:
                    return bytes(out)
                out += data

        def _alive(self, transport) -> None:
            wait = ALIVE_INTERVAL * ALIVE_COUNT
            try:
                transport.open_session(timeout=wait).close()
            except (paramiko.SSHException, OSError, EOFError):
                raise TimeoutError(f"{self.host.name} stopped answering: no reply within {wait} s while a "
                                   "command ran") from None

    return LiveParamiko


def _check_address(host: Host) -> None:
    """An address that starts with `-` would reach ssh as an option (`-oProxyCommand=...` runs a command here).
    The profile refuses such a value when it loads; this is the same rule again for a Host built without it."""
    from acgs_verify.profile.model import checked_address, checked_user

    for field, check in (("address", checked_address), ("user", checked_user)):
        try:
            check(getattr(host, field))
        except ValueError as exc:
            raise ProbeError(f"host {host.name}: {field} {printable(getattr(host, field))!r} {exc}") from None


def _config_path(host: Host, field: str, path: Path) -> str:
    """A path as one ssh_config value. ssh_config has no escape for a line break or a double quote: a value with
    one would end the line and start a directive of its own (ProxyCommand runs a command), so it is refused."""
    text = str(path)
    if '"' in text or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ProbeError(f"host {host.name}: {field} holds a line break, control character or double quote, "
                         "which an ssh_config line cannot hold")
    return f'"{text}"' if any(c.isspace() or c in "#'\\" for c in text) else text


def ssh_config_text(host: Host, timeout: int, control_dir: Path) -> str:
    """The ssh_config one host is reached with. ssh takes the first value it reads for each option: the profile's
    fields for this address come first, then the profile's own ssh_config (bastions), then the defaults.
    ProbeError for a field that would not stay one value on its line (see _check_address, _config_path)."""
    _check_address(host)
    mine = [f"Host {host.address}"]
    if host.user:
        mine.append(f"  User {host.user}")
    if host.port:
        mine.append(f"  Port {host.port}")
    if host.identity_file:
        mine += [f"  IdentityFile {_config_path(host, 'identity_file', Path(host.identity_file).expanduser())}",
                 "  IdentitiesOnly yes"]
    known = (f"  UserKnownHostsFile {_config_path(host, 'known_hosts', Path(host.known_hosts).expanduser())}"
             if host.known_hosts else None)
    if host.strict_host_key_checking:
        mine += [known] if known else []
        mine.append("  StrictHostKeyChecking yes")
    else:
        mine += ["  StrictHostKeyChecking no", "  UserKnownHostsFile /dev/null"]
    out = ["# generated by acgs-verify for host " + host.name, *mine, "", "Match all"]
    if host.ssh_config:
        out.append(f"  Include {_config_path(host, 'ssh_config', Path(host.ssh_config).expanduser().resolve())}")
    out += ["", "Host *", "  BatchMode yes", f"  ConnectTimeout {timeout}", "  StrictHostKeyChecking yes",
            f"  ServerAliveInterval {ALIVE_INTERVAL}", f"  ServerAliveCountMax {ALIVE_COUNT}", "  ControlMaster auto",
            f"  ControlPath {control_dir}/%C", "  ControlPersist 60"]
    if known:
        out.append(known)
    return "\n".join(out) + "\n"


class _Recorder:
    """A testinfra host that runs commands as usual and notes each (command, args): the plan's first host."""

    def __init__(self, conn):
        self._conn, self.commands = conn, []

    def run(self, command: str, *args: Any, **kwargs: Any):
        self.commands.append((command, args))
        return self._conn.run(command, *args, **kwargs)

    def check_output(self, command: str, *args: Any, **kwargs: Any) -> str:
        self.commands.append((command, args))
        return self._conn.check_output(command, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


class _Replay:
    """A testinfra host whose commands are answered from a batch's outputs when the batch holds them (exit 0,
    nothing on stderr), and run on the host otherwise."""

    def __init__(self, conn, outputs: dict[str, Any]):
        self._conn, self._outputs = conn, outputs

    def run(self, command: str, *args: Any, **kwargs: Any):
        found = self._outputs.get(self._conn.backend.get_command(command, *args))
        return found if found is not None else self._conn.run(command, *args, **kwargs)

    def check_output(self, command: str, *args: Any, **kwargs: Any) -> str:
        res = self.run(command, *args, **kwargs)
        if res.rc != 0:  # as testinfra's run_expect([0], ...)
            raise AssertionError(f"Unexpected exit code {res.rc} for {res}")
        return res.stdout.rstrip("\r\n")

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


def _run_batch(conn, commands: list[str]) -> dict[str, Any]:
    """Run `commands` in one remote shell command; {command: its result} for those that exited 0 with nothing on
    stderr (the others are left out, to be run alone). Each command's stdout goes to the shell's stdout between
    marker lines holding a random token, its stderr into a variable whose length is reported: POSIX sh, nothing
    written on the host.

    >>> _run_batch(conn, ["id -un", "cut -d: -f1 -- /etc/passwd"])
    {'id -un': CommandResult(rc=0, stdout='acgs\n'), 'cut -d: -f1 -- /etc/passwd': CommandResult(...)}
    """
    import secrets

    token = f"@@acgs-{secrets.token_hex(16)}"
    parts = ["exec 3>&1"]
    for i, cmd in enumerate(commands):
        parts.append(f"printf '\\n%s begin {i}\\n' {token}; __e=$( {{ {cmd}\n}} 2>&1 >&3 3>&- ); __r=$?; "
                     f"printf '\\n%s end {i} %s %s\\n' {token} \"$__r\" \"${{#__e}}\"")
    res = conn.run("\n".join(parts))
    out: dict[str, Any] = {}
    raw = res.stdout_bytes
    for i, cmd in enumerate(commands):
        begin = f"\n{token} begin {i}\n".encode()
        end = re.compile(rb"\n" + token.encode() + rb" end " + str(i).encode() + rb" (\d+) (\d+)\n")
        b = raw.find(begin)
        m = end.search(raw, b + len(begin)) if b >= 0 else None
        if m is None:
            continue
        rc, stderr_len = int(m.group(1)), int(m.group(2))
        if rc == 0 and stderr_len == 0:
            out[cmd] = conn.backend.result(0, cmd.encode(), raw[b + len(begin): m.start()], b"")
    return out


def _kind(host: Host) -> tuple:
    """Hosts the same checks run on with the same arguments, as far as the profile tells: backend, roles, mounts."""
    return host.backend, tuple(host.roles), tuple(host.mounts), host.become


def _key(host: Host, read: Callable, args: tuple) -> tuple[str, Callable, str]:
    """(host, the function, its arguments): what one measurement is cached under. The function object, not its
    qualified name, which two lambdas (or two closures) of one scope share."""
    return host.name, read, repr(args)


def _bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _silent(exc: BaseException) -> str | None:
    """ssh's or paramiko's words when a handshake failed for want of any answer (a timeout, no route), else None:
    a refusal, a bad key or a wrong host key came from a host that is up."""
    text = _reason(exc)
    low = text.lower()
    if "timed out" in low or "no route to host" in low or "banner" in low or "network is unreachable" in low:
        return text
    return None


def _reason(exc: BaseException) -> str:
    """One line from whatever a backend raised: ssh's stderr, paramiko's message, a timeout."""
    arg = exc.args[0] if exc.args else None
    stderr = getattr(arg, "stderr", None)
    if isinstance(stderr, str) and stderr.strip():
        lines = [x for x in stderr.strip().splitlines() if x.strip() and not x.startswith("Warning: Perm")]
        text = lines[-1] if lines else stderr
    else:
        text = one_line(exc)
    if type(exc).__name__ in ("timeout", "TimeoutError") and "timed out" not in text:
        text = f"timed out: {text}"
    return one_line(text)


# ------------------------------------------------------------------------------------------- facts


def processes(pool: HostPool, host: Host) -> list[tuple[int, str]]:
    """Every process of `host` as (pid, full command line), read once per run: read_processes."""
    return pool.measure(host, "processes", read_processes)


def read_processes(conn) -> list[tuple[int, str]]:
    """Every process as (pid, full command line): `ps -ww -eo pid=,args=` (-ww: ps cuts lines at 80 columns
    when its output is not a terminal, which would hide the part of the command line a pattern matches)."""
    out = conn.check_output("ps -ww -eo pid=,args=")
    procs = []
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if pid.isdigit():
            procs.append((int(pid), args.strip()))
    return procs


def processes_matching(procs: list[tuple[int, str]], pattern: str) -> list[tuple[int, str]]:
    rx = re.compile(pattern)
    return [(pid, args) for pid, args in procs if rx.search(args) and "ps -ww -eo pid=,args=" not in args]


def read_listening_ports(conn) -> set[int]:
    """TCP ports in LISTEN state on any address: `ss -Htln` (what the runbook's netstat -tlnp shows)."""
    out = conn.check_output("ss -Htln")
    ports = set()
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 4:
            port = cols[3].rsplit(":", 1)[-1]
            if port.isdigit():
                ports.add(int(port))
    return ports


def read_has_systemd(conn) -> bool:
    """sd_booted(3): the host runs systemd when /run/systemd/system is a directory."""
    return conn.file("/run/systemd/system").is_directory


def unit_state(pool: HostPool, host: Host, unit: str) -> str:
    """`systemctl is-active UNIT` on `host`, once per unit per run: active, inactive, failed, activating, unknown..."""
    return pool.measure(host, f"unit {unit}", read_unit_state, unit)


# what `systemctl is-active` prints (systemd's unit_active_state_to_string): anything else is not a state
UNIT_STATES = ("active", "reloading", "inactive", "failed", "activating", "deactivating", "maintenance",
               "refreshing", "unknown")


def read_unit_state(conn, unit: str) -> str:
    """`systemctl is-active -- UNIT`: active, inactive, failed, activating, unknown... (`--`: a unit named
    `--version` is a unit). ProbeError when systemctl prints something that is not a state (its version, help)."""
    res = conn.run(command("systemctl", "is-active", "--", unit))
    state = res.stdout.strip() or "unknown"
    if state not in UNIT_STATES:
        raise ProbeError(f"systemctl is-active {unit}: not a unit state: {one_line(state)[:80]!r}"
                         + (f" ({one_line(res.stderr)})" if res.stderr.strip() else ""))
    return state


def uses_systemd(pool: HostPool, host: Host) -> bool:
    """The profile's word if it gives one, else what the host says."""
    return host.systemd if host.systemd is not None else pool.measure(host, "systemd", read_has_systemd)


# ------------------------------------------------------------------------------ who owns a port (identity by fact)

# one `ps` per host serves identity (SVC-03, DB-02) and memory (SVC-11): rss and %mem ride along
PS_TABLE = "LC_ALL=C ps -ww -eo pid=,ppid=,user:32=,rss=,pmem=,lstart=,args="
_TCP_FILES = ("/proc/net/tcp", "/proc/net/tcp6")
_SHOWN_ARGS = 120  # a command line in a message: enough to tell two servers apart, short enough for a terminal


@dataclass(frozen=True)
class Proc:
    """One process: `ps -eo pid,ppid,user,rss,pmem,lstart,args`."""

    pid: int
    ppid: int
    user: str
    started: str  # local time of the host, "2026-11-30 17:07:40"
    args: str
    rss_kib: int = 0
    mem_percent: float = 0.0

    def describe(self, short: bool = False) -> str:
        """`pid 42 (user acgs, ppid 1, started 2026-11-30 17:07:40, `python -m uvicorn ... --port 8016`)`; `short`
        keeps pid, user and a shorter command line, for lists of other processes."""
        # the program's directory goes: the arguments are what tell two servers apart
        program, _, rest = self.args.partition(" ")
        args = _cut(f"{program.rsplit('/', 1)[-1]} {rest}".strip(), _SHOWN_ARGS // 2 if short else _SHOWN_ARGS)
        if short:
            return f"pid {self.pid} ({self.user}, `{args}`)"
        return f"pid {self.pid} (user {self.user}, ppid {self.ppid}, started {self.started}, `{args}`)"


def _cut(text: str, limit: int) -> str:
    """Head and tail of a long command line: the tail often holds what tells two servers apart (--port 8016)."""
    if len(text) <= limit:
        return text
    tail = limit // 3
    return text[: limit - tail - 3] + "..." + text[-tail:]


@dataclass(frozen=True)
class Listener:
    """A TCP port in LISTEN state and the processes holding its socket. `owners` is empty when the checker may not
    see them; `hidden` then says why ("not visible to user nobody (socket of uid 116 postgres)")."""

    port: int
    addresses: tuple[str, ...]
    owners: tuple[Proc, ...]
    hidden: str | None = None


@dataclass(frozen=True)
class PortOwners:
    """Every listening TCP port of a host with its owners, and the process table they were joined with."""

    user: str  # who the checker runs as on that host
    listeners: dict[int, Listener]
    procs: tuple[Proc, ...]


def port_owners(pool: HostPool, host: Host) -> PortOwners:
    """Who owns each listening TCP port of `host` (through sudo -n when the host says `become`), read once per run:
    read_port_owners."""
    return pool.measure(host, "port owners", read_port_owners, host.become)


def read_port_owners(conn, become: bool = False) -> PortOwners:
    """Who owns each listening TCP port: `ss -Htlnp` (or, without ss, /proc/net/tcp* inodes joined with the
    /proc/PID/fd socket links), joined with `ps` for user, ppid, start time and command line.

    >>> facts = read_port_owners(conn)            # conn: a testinfra host, any backend
    >>> facts.listeners[18016].owners[0].args
    'python -m uvicorn --factory acgs_verify.sandbox.service_app:auth ... --port 18016 ...'

    An unprivileged checker sees only its own sockets' owners: the others come back with `owners=()` and
    `hidden` naming the user and the socket's uid. With `become`, ss runs through `sudo -n` (never prompts).
    """
    user = conn.run("id -un").stdout.strip() or "?"
    sudo = "sudo -n " if become else ""
    refused = None
    res = conn.run(f"{sudo}ss -Htlnp")
    if become and res.rc != 0 and res.rc != 127:
        refused = one_line(res.stderr or "") or f"exit {res.rc}"
        res = conn.run("ss -Htlnp")
    # without ss (a minimal image): the kernel's own tables
    holders = _ss_holders(res.stdout) if res.rc == 0 else _proc_holders(conn, "" if refused else sudo)
    procs = _process_table(conn.check_output(PS_TABLE))
    by_pid = {p.pid: p for p in procs}
    sockets = _socket_uids(conn)  # port -> uids holding a listening socket: visible to anyone
    names = _user_names(conn, {u for uids in sockets.values() for u in uids})
    listeners = {}
    for port, (addresses, pids) in holders.items():
        owners = tuple(by_pid[pid] for pid in sorted(pids) if pid in by_pid)
        hidden = None
        if not owners:
            of = ", ".join(f"uid {u} {names.get(u, '?')}" for u in sorted(sockets.get(port, ()))) or "uid unknown"
            if user == "root":
                hidden = f"held by no process root can see (socket of {of})"
            else:
                hidden = f"not visible to user {user} (socket of {of})"
                hidden += (f"; become: sudo -n refused: {refused}" if refused else
                           "; set `become: true` on the host to read it through sudo -n" if not become else "")
        listeners[port] = Listener(port, tuple(sorted(addresses)), owners, hidden)
    return PortOwners(user, listeners, tuple(p for p in procs if not _is_checker(conn, p, procs)))


def _ss_holders(out: str) -> dict[int, tuple[set[str], set[int]]]:
    """port -> (local addresses, pids) from `ss -Htlnp`: `LISTEN 0 2048 127.0.0.1:18016 0.0.0.0:* users:(("python",
    pid=6086,fd=7))`; a socket whose owner the caller may not see has no users:(...) part."""
    found: dict[int, tuple[set[str], set[int]]] = {}
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 4:
            continue
        address, _, port = cols[3].rpartition(":")
        if not port.isdigit():
            continue
        entry = found.setdefault(int(port), (set(), set()))
        entry[0].add(address)
        entry[1].update(int(p) for p in re.findall(r"pid=(\d+)", line))
    return found


def _tcp_table(conn) -> list[tuple[int, int, int]]:
    """(port, uid, inode) of every listening socket in /proc/net/tcp and tcp6 (state 0A), readable by anyone."""
    out = conn.run(command("cat", "--", *_TCP_FILES)).stdout
    rows = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) > 9 and cols[3] == "0A" and ":" in cols[1] and cols[7].isdigit():
            rows.append((int(cols[1].rsplit(":", 1)[1], 16), int(cols[7]), int(cols[9])))
    return rows


def _socket_uids(conn) -> dict[int, set[int]]:
    uids: dict[int, set[int]] = {}
    for port, uid, _ in _tcp_table(conn):
        uids.setdefault(port, set()).add(uid)
    return uids


def _proc_holders(conn, sudo: str) -> dict[int, tuple[set[str], set[int]]]:
    """Without ss: socket inodes of /proc/net/tcp* joined with the socket:[INODE] links under /proc/PID/fd."""
    links = conn.run(f"{sudo}find /proc -mindepth 3 -maxdepth 3 -path '/proc/[0-9]*/fd/*' -lname 'socket:*' "
                     "-printf '%h %l\\n'").stdout
    by_inode: dict[int, set[int]] = {}
    for line in links.splitlines():
        m = re.match(r"/proc/(\d+)/fd socket:\[(\d+)\]", line)
        if m:
            by_inode.setdefault(int(m.group(2)), set()).add(int(m.group(1)))
    found: dict[int, tuple[set[str], set[int]]] = {}
    for port, _, inode in _tcp_table(conn):
        entry = found.setdefault(port, (set(), set()))
        entry[0].add("*")
        entry[1].update(by_inode.get(inode, ()))
    return found


def _process_table(out: str) -> list[Proc]:
    procs = []
    for line in out.splitlines():
        cols = line.split(None, 10)  # pid ppid user rss pmem, lstart's five words, args
        if len(cols) < 11 or not cols[0].isdigit() or not cols[1].isdigit() or not cols[3].isdigit():
            continue
        try:
            started = datetime.strptime(" ".join(cols[5:10]), "%a %b %d %H:%M:%S %Y").strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            started = " ".join(cols[5:10])
        try:
            pmem = float(cols[4])
        except ValueError:
            pmem = 0.0
        if PS_TABLE.split("ps ", 1)[1] not in cols[10]:
            procs.append(Proc(int(cols[0]), int(cols[1]), cols[2], started, cols[10].strip(), int(cols[3]), pmem))
    return procs


def _user_names(conn, uids: set[int]) -> dict[int, str]:
    if not uids:
        return {}
    out = conn.run(command("getent", "passwd", *sorted(uids))).stdout
    return {int(f[2]): f[0] for f in (line.split(":") for line in out.splitlines()) if len(f) > 2 and f[2].isdigit()}


def _is_checker(conn, proc: Proc, procs: list[Proc]) -> bool:
    """The run itself and its parents (whose command line may quote a pattern given with --set) are no evidence."""
    if getattr(conn.backend, "NAME", "") != "local":
        return False
    by_pid, pid = {p.pid: p for p in procs}, os.getpid()
    while pid > 1:
        if pid == proc.pid:
            return True
        pid = by_pid[pid].ppid if pid in by_pid else 0
    return False


@dataclass(frozen=True)
class Identity:
    """What the process behind a port is, judged against the profile's pattern (see `identify`).

    ok: True (identified, or the weaker evidence held), False (not running, or someone else owns the port),
    None (nothing to judge on: the owner is hidden and no pattern was given)."""

    ok: bool | None
    measured: str
    owner: Proc | None = None
    warning: str | None = None
    pids: tuple[int, ...] = ()


def identify(facts: PortOwners, port: int, pattern: str | None, what: str) -> Identity:
    """The process that owns `port`, and whether the profile's `pattern` matches its command line.

    >>> identify(port_owners(pool, host), 18016, r"uvicorn .*auth", "the service")
    Identity(ok=False, measured="port 18016 owned by pid 123 (... `python -m http.server 18016`) which does not
    match /uvicorn .*auth/; 1 other process matches the pattern: pid 99 (...)", ...)

    A pattern confirms the owner; it never stands in for it. Only when the owner is hidden from the checker does a
    pattern match (plus the port listening) count, as weaker evidence named in `measured` and in `warning`.
    """
    rx = re.compile(pattern) if pattern else None
    matching = _roots([p for p in facts.procs if rx and rx.search(p.args)])
    listener = facts.listeners.get(port)
    if listener is None:
        return Identity(False, f"nothing listens on TCP port {port}: {what} is not running"
                               + _others(facts, matching, pattern, port), pids=tuple(p.pid for p in matching))
    if listener.owners:
        good = [p for p in listener.owners if rx is None or rx.search(p.args)]
        owner = (good or list(listener.owners))[0]
        shown = f"port {port} owned by {owner.describe()}"
        if good:
            return Identity(True, shown, owner, pids=tuple(p.pid for p in listener.owners))
        others = [p for p in matching if p not in listener.owners]
        why = f"{shown}, which does not match /{pattern}/" + _others(facts, others, pattern, port, True)
        return Identity(False, why, owner, pids=(owner.pid, *(p.pid for p in others)))
    if rx is None:
        return Identity(None, f"port {port} listens, but its owner is {listener.hidden}, and the profile gives no "
                              "process pattern to fall back on")
    if not matching:
        return Identity(False, f"port {port} listens, but its owner is {listener.hidden}, and no process matches "
                               f"/{pattern}/")
    warning = (f"the owner of port {port} could not be verified ({listener.hidden}): passed on weaker evidence, "
               f"the port listening and /{pattern}/ matching a process")
    shown = "; ".join(p.describe(short=True) for p in matching[:2])
    return Identity(True, f"port {port} listening, owner not verified: {listener.hidden}; weaker evidence: "
                          f"{plural(len(matching), 'process')} {'matches' if len(matching) == 1 else 'match'} "
                          f"/{pattern}/: {shown}",
                    warning=warning, pids=tuple(p.pid for p in matching))


def _roots(procs: list[Proc]) -> list[Proc]:
    """Matching processes without a matching parent: one line per server, not one per worker or backend."""
    pids = {p.pid for p in procs}
    return [p for p in procs if p.ppid not in pids]


def _others(facts: PortOwners, procs: list[Proc], pattern: str | None, port: int, port_named: bool = False) -> str:
    if not pattern:
        return ""
    if not procs:
        return f"; no process matches /{pattern}/"
    ports = {pid: lis.port for lis in facts.listeners.values() for pid in (o.pid for o in lis.owners)}
    # first those that listen nowhere, the likely impostors, and of those the parents (a postmaster, not its
    # checkpointer): where several servers run on one host, the ones worth naming fit in the message
    matched = {p.pid for p in procs}
    procs = sorted(procs, key=lambda p: (p.pid in ports, p.ppid in matched))
    shown = "; ".join(p.describe(short=True) + (f" listening on {ports[p.pid]}" if p.pid in ports else "")
                      for p in procs[:2])
    more = f" (and {len(procs) - 2} more)" if len(procs) > 2 else ""
    n = len(procs)
    it = "it" if port_named else f"/{pattern}/"
    return (f"; {n} other process{'es' if n != 1 else ''} match{'' if n != 1 else 'es'} {it} but "
            f"own{'' if n != 1 else 's'} no socket on port {port}: {shown}{more}")


def postgres_server(pool: HostPool, host: Host, owner: Proc) -> dict[str, str]:
    """read_postgres_server of the postmaster `owner` on `host`, once per run."""
    return pool.measure(host, f"postgres {owner.pid}", read_postgres_server, owner, host.become)


def read_postgres_server(conn, owner: Proc, become: bool = False) -> dict[str, str]:
    """The data directory and version of the postmaster `owner`: `-D` from its command line (else /proc/PID/cwd,
    where the postmaster lives), and `BINARY --version` (else PG_VERSION in the data directory).

    >>> read_postgres_server(conn, owner)
    {'data_directory': '/var/lib/postgresql/15/main', 'version': 'postgres (PostgreSQL) 15.14'}

    What cannot be read says why instead ("unknown: /proc/88/cwd not readable by nobody").
    """
    sudo = "sudo -n " if become else ""
    argv = owner.args.split()
    data = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-D"), None)
    if data is None:
        res = conn.run(sudo + command("readlink", "--", f"/proc/{owner.pid}/cwd"))
        data = res.stdout.strip() if res.rc == 0 and res.stdout.strip() else \
            f"unknown (no -D, /proc/{owner.pid}/cwd not readable)"
    binary = argv[0] if argv and argv[0].startswith("/") else None
    if binary is None:
        res = conn.run(sudo + command("readlink", "--", f"/proc/{owner.pid}/exe"))
        binary = res.stdout.strip() if res.rc == 0 and res.stdout.strip() else None
    version = None
    if binary and _root_owned(conn, binary):
        res = conn.run(command(binary, "--version"))
        version = res.stdout.strip() if res.rc == 0 else None
    if version is None and data.startswith("/"):
        res = conn.run(sudo + command("cat", "--", f"{data}/PG_VERSION"))
        version = f"PG_VERSION {res.stdout.strip()}" if res.rc == 0 else None
    return {"data_directory": data, "version": version or "unknown (binary and PG_VERSION not readable)"}


def _root_owned(conn, binary: str) -> bool:
    """The program a port's owner runs is what that process says it is: the checker (root, often) runs it with
    --version only when root owns it and nobody else may write it, i.e. when it is the system's own."""
    res = conn.run(command("stat", "-L", "-c", "%u %a", "--", binary))
    uid, _, mode = res.stdout.strip().partition(" ")
    return res.rc == 0 and uid == "0" and mode.isdigit() and not int(mode, 8) & 0o022


def service_processes(facts: PortOwners, port: int) -> list[Proc]:
    """The processes that own `port` and all their descendants (uvicorn --workers, gunicorn's children), biggest
    RSS first (SVC-11). ProbeError when nothing listens on the port or its owner is hidden from the checker.

    >>> [(p.pid, p.rss_kib, p.mem_percent) for p in service_processes(port_owners(pool, host), 18016)]
    [(4242, 61440, 0.7), (4250, 52224, 0.6)]
    """
    listener = facts.listeners.get(port)
    if listener is None:
        raise ProbeError(f"nothing listens on TCP {port} (ss -Htlnp): no service process to measure")
    if not listener.owners:
        raise ProbeError(f"ss shows TCP {port} listening but not which process owns it (run the checks as root "
                         "or as the service's user to see the owner)")
    children: dict[int, list[Proc]] = {}
    for p in facts.procs:
        children.setdefault(p.ppid, []).append(p)
    seen: dict[int, Proc] = {}
    todo = list(listener.owners)
    while todo:
        proc = todo.pop()
        if proc.pid not in seen:
            seen[proc.pid] = proc
            todo.extend(children.get(proc.pid, []))
    return sorted(seen.values(), key=lambda p: p.rss_kib, reverse=True)
