"""What every sandbox component provides, and the helpers they share (processes, polling, files, ports).

A component owns its slice of DIR/state.json (`ctx.state`), its processes and files under DIR, its faults,
and the part of the generated profile that describes it. The manager only sequences components.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acgs_verify.sandbox.constants import RUN_DIR


class SandboxError(Exception):
    """A sandbox operation failed; str() is the one line a user sees."""


@dataclass
class Context:
    dir: Path  # absolute sandbox directory
    port_offset: int
    python: str  # interpreter that runs the sandbox's processes
    state: dict[str, Any]  # this component's slice of state.json; mutate in place, then save()
    save: Callable[[], None]  # persists all of state.json atomically, so a crash mid-way loses no pid


class Component(ABC):
    """One part of the stack. A subclass says what it runs (up/status/profile_fragment) and what each fault does
    (`break_` and `heal`); the bookkeeping is here, the same for every component:

    - the active faults are a list of specs (`fault` or `fault:target`) in the state slice's "faults";
    - breaking an active fault and healing an inactive one change nothing;
    - `refuse()` turns a fault down before anything is touched, with one line (SandboxError);
    - a failed break or heal leaves the list as it was: a fault whose heal failed stays listed, so status stays
      true and `heal` can simply be retried.
    """

    name: str
    fault_names: tuple[str, ...] = ()
    # one line per fault name: what it does to the sandbox and which checks then fail (`sandbox faults` prints it)
    fault_help: dict[str, str] = {}
    # (state key, label) of each process the default down() stops, in this order: ("process", "redis server")
    daemons: tuple[tuple[str, str], ...] = ()

    def targets(self) -> list[str]:
        """What a fault spec `FAULT:TARGET` may name for this component's faults."""
        return []

    def fault_targets(self, fault: str) -> list[str]:
        """What `FAULT:TARGET` may name for this one fault ([]: no target); targets() unless a component's
        faults differ (backup-missing:FILE among faults that take none)."""
        return self.targets()

    @abstractmethod
    def up(self, ctx: Context) -> None:
        """Start everything; on failure undo what was started (undone_on_failure) and raise SandboxError."""

    def down(self, ctx: Context) -> list[str]:
        """Stop exactly what up() started, clear faults; returns one line per thing stopped.
        This one stops the `daemons` recorded in the state (none for a component made of files only)."""
        stopped = [line for key, label in self.daemons for line in self.stop_process(ctx, label, key)]
        self.clear_faults(ctx)
        return stopped

    @contextlib.contextmanager
    def undone_on_failure(self, ctx: Context) -> Iterator[None]:
        """up()'s guard: whatever fails or is interrupted inside it, down() stops what was started, then the error
        goes on.

        >>> with self.undone_on_failure(ctx):
        ...     self._start(ctx)
        """
        try:
            yield
        except BaseException:
            self.down(ctx)
            raise

    @abstractmethod
    def status(self, ctx: Context) -> list[dict[str, Any]]:
        """One dict per process: name, pid, port, state (and faults; see row())."""

    @abstractmethod
    def profile_fragment(self, ctx: Context) -> dict[str, Any]:
        """Top-level profile keys this component contributes (lists are concatenated, maps merged)."""

    # --------------------------------------------------------------------------------- fault bookkeeping
    def active_faults(self, ctx: Context) -> list[str]:
        """The specs now broken, e.g. ['db-lock', 'backup-missing:config.tar.gz']."""
        return list(ctx.state.get("faults", []))

    def break_fault(self, ctx: Context, fault: str, target: str) -> None:
        spec = fault_spec(fault, target)
        if spec in self.active_faults(ctx):
            return
        why = self.refuse(ctx, fault, target)
        if why:
            raise SandboxError(why)
        self._apply(ctx, spec, True, lambda: self.break_(ctx, fault, target))

    def heal_fault(self, ctx: Context, fault: str, target: str) -> None:
        spec = fault_spec(fault, target)
        if spec in self.active_faults(ctx):
            self._apply(ctx, spec, False, lambda: self.heal(ctx, fault, target))

    # True: a fault is listed (or unlisted) before break_/heal run, because what they start reads the list
    # (services' processes read DIR/faults.json); False: once they have succeeded, so that a command killed
    # half-way never leaves a fault listed that was not made.
    list_first = False

    def _apply(self, ctx: Context, spec: str, on: bool, action: Callable[[], None]) -> None:
        if not self.list_first:
            action()
            self.list_fault(ctx, spec, on)
            return
        self.list_fault(ctx, spec, on)
        try:
            action()
        except BaseException:
            self.list_fault(ctx, spec, not on)
            raise

    def refuse(self, ctx: Context, fault: str, target: str) -> str | None:
        """Why `fault` cannot be broken now (one line), or None."""
        return None

    def break_(self, ctx: Context, fault: str, target: str) -> None:
        raise SandboxError(f"{self.name} has no fault {fault!r}")

    def heal(self, ctx: Context, fault: str, target: str) -> None:
        raise SandboxError(f"{self.name} has no fault {fault!r}")

    def list_fault(self, ctx: Context, spec: str, on: bool) -> None:
        """Add `spec` to the active faults (on) or remove it, and save the state."""
        faults = ctx.state.setdefault("faults", [])
        if on:
            faults.append(spec)
        elif spec in faults:
            faults.remove(spec)
        ctx.save()

    def stop_process(self, ctx: Context, label: str, key: str = "process") -> list[str]:
        """Stop the process recorded in the state under `key` and forget it: ['LABEL (pid N)'] if it was running."""
        record = ctx.state.get(key)
        stopped = [f"{label} (pid {record['pid']})"] if stop(record) else []
        ctx.state[key] = None
        ctx.save()
        return stopped

    def clear_faults(self, ctx: Context) -> None:
        ctx.state["faults"] = []
        ctx.save()

    # -------------------------------------------------------------------------------------- status rows
    def row(self, ctx: Context, name: str, state: str, pid: int | None = None, port: int | None = None,
            faults: list[str] | None = None) -> dict[str, Any]:
        """One status row: {"name", "pid", "port", "state", "faults"} (faults: this component's, unless given)."""
        return {"name": name, "pid": pid, "port": port, "state": state,
                "faults": self.active_faults(ctx) if faults is None else faults}

    def process_row(self, ctx: Context, name: str, record: dict[str, Any] | None, port: int | None,
                    dead: str = "down") -> dict[str, Any]:
        """The row of one process: running, stopped (never started, or stopped by a fault) or `dead`."""
        state = "running" if is_alive(record) else ("stopped" if record is None else dead)
        return self.row(ctx, name, state, record["pid"] if record else None, port)


def fault_spec(fault: str, target: str) -> str:
    """'slow', 'auth' -> 'slow:auth'; a fault without a target is its name."""
    return f"{fault}:{target}" if target else fault


def poll(predicate: Callable[[], Any], timeout: float, interval: float = 0.05) -> bool:
    """Call predicate until it returns something true (True) or `timeout` seconds have passed (False).
    It is called at least once, and once more at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


def wait_until(what: str | Callable[[], str], predicate: Callable[[], Any], timeout: float,
               interval: float = 0.05) -> None:
    """Wait for a state: poll(predicate) and, at the deadline, SandboxError(what) (a callable `what` is asked
    then, so the line can hold the last answer or a log's tail). A predicate raises SandboxError to give up
    early, e.g. when the process it waits for has died.

    >>> wait_until(lambda: f"sshd did not start: {tail(err)}", lambda: _banner(address, port), 10)
    """
    if not poll(predicate, timeout, interval):
        raise SandboxError(what() if callable(what) else what)


def wait_alive(record: dict[str, Any], what: str | Callable[[], str], predicate: Callable[[], Any], timeout: float,
               interval: float = 0.05) -> None:
    """wait_until() for a state that the process `record` brings about: SandboxError(what) at the deadline, or as
    soon as that process dies.

    >>> wait_alive(record, lambda: f"the lock holder gave up: {tail(err)}", lock_held, 20, interval=0.1)
    """
    def alive_and() -> Any:
        if not is_alive(record):
            raise SandboxError(what() if callable(what) else what)
        return predicate()

    wait_until(what, alive_and, timeout, interval)


def wait_ready(record: dict[str, Any], err: Path, gave_up: str, ready: Callable[[], Any], timeout: float) -> None:
    """Wait until ready() for the process `record` just started; SandboxError "<gave_up>: <tail of err>" as soon
    as it dies, or at the deadline.

    >>> wait_ready(record, run / "tls.err", "the TLS endpoint did not start on port 18443", up, 10)
    """
    wait_alive(record, lambda: f"{gave_up}{ended(record)}: {tail(err)}", ready, timeout)


def atomic_write(path: Path, text: str) -> None:
    """Readers (services polling faults.json, a concurrent `status`) never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide state and profile from a non-root checker
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ------------------------------------------------------------------------------------------ processes
# Shared by every component that runs a daemon. A process is identified by pid AND its start time AND
# its command line, so a pid the kernel has since given to someone else is never signalled.


def spawn(argv: list[str], env: dict[str, str], stdout: Path, stderr: Path) -> dict[str, Any]:
    """Start argv detached in its own session; returns the record that is_alive()/stop() need."""
    stdout.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    # posix_spawn rather than Popen: no Popen object to outlive (ResourceWarning) when the caller
    # is a long-lived process such as pytest; setsid=True is Popen's start_new_session.
    pid = os.posix_spawn(
        argv[0], argv, env,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(stdout), flags, 0o644),
            (os.POSIX_SPAWN_OPEN, 2, str(stderr), flags, 0o644),
        ],
        setsid=True,
    )
    # posix_spawn returns as soon as the child has begun its exec, before the kernel has laid out its new
    # argv: until then /proc/PID/cmdline reads empty and is_alive() would call the live process dead (seen in
    # 259 of 300 reads made at once, and as "sshd did not start: (no output)" under load)
    poll(lambda: _cmdline(pid) != b"" or _ended_stat(_proc_stat(pid)), 5.0, 0.001)
    return {"pid": pid, "argv": argv, "start_ticks": _start_ticks(pid)}


def _cmdline(pid: int) -> bytes | None:
    """/proc/PID/cmdline; None once the process is gone (b"" while it starts its exec or exits)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def start(what: str, argv: list[str], env: dict[str, str], run: Path, name: str) -> dict[str, Any]:
    """spawn() with its output in RUN/NAME.out and .err; SandboxError('cannot start WHAT: why: program')."""
    try:
        return spawn(argv, env, run / f"{name}.out", run / f"{name}.err")
    except OSError as exc:
        raise SandboxError(f"cannot start {what}: {exc.strerror}: {exc.filename or argv[0]}") from None


def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses


def _start_ticks(pid: int) -> int | None:
    st = _proc_stat(pid)
    return int(st[19]) if st else None


def _ended_stat(st: list[str] | None) -> bool:
    """No process, or one that has exited (a zombie)."""
    return st is None or st[0] in ("Z", "X")


def _recorded_stat(record: dict[str, Any]) -> list[str] | None:
    """/proc/PID/stat of the very process `record` started (reaped first if it is our dead child); None once it is
    gone or its pid belongs to another process."""
    pid = int(record["pid"])
    _reap(pid, record)
    st = _proc_stat(pid)
    if st is None or (record.get("start_ticks") is not None and int(st[19]) != record["start_ticks"]):
        return None
    return st


def _reap(pid: int, record: dict[str, Any] | None = None) -> None:
    # When the caller itself started the process (tests, one long `up`), a dead child stays a zombie
    # until waited for; this only ever waits for our own children. How it ended goes into its record, for the
    # line that says it died.
    with contextlib.suppress(ChildProcessError, OSError):
        reaped, status = os.waitpid(pid, os.WNOHANG)
        if reaped == pid and record is not None:
            code = os.waitstatus_to_exitcode(status)
            record["ended"] = f"exit {code}" if code >= 0 else f"killed by {signal.Signals(-code).name}"


def ended(record: dict[str, Any] | None) -> str:
    """' (exit 1)' or ' (killed by SIGKILL)' once a process this one started has been reaped; else ''."""
    return f" ({record['ended']})" if record and record.get("ended") else ""


def is_alive(record: dict[str, Any] | None) -> bool:
    """True if the very process we started is still running (not a zombie, not a reused pid)."""
    if not record:
        return False
    pid = int(record["pid"])
    if _ended_stat(_recorded_stat(record)):
        return False
    cmdline = _cmdline(pid)
    if cmdline is None:
        return False
    if cmdline.rstrip(b"\0").split(b"\0") == [a.encode() for a in record["argv"]]:
        return True
    # a daemon that retitles itself once started (sshd: "sshd: ARGV [listener] 0 of 10-100 startups")
    return bool(record.get("title")) and cmdline.decode(errors="replace").startswith(record["title"])


def stop(record: dict[str, Any] | None, grace: float = 5.0) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds; returns once the process has left, its ports and files
    released. Returns True if it was running."""
    if not record:
        return False
    pid = int(record["pid"])
    running = is_alive(record)
    if running:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
            if not is_alive(record):  # re-verified before every signal
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            poll(lambda: not is_alive(record), wait, 0.02)
    # "not alive" already holds while it exits (its cmdline reads empty once its memory is gone, before its
    # sockets close): also for one that died on its own (a kill -9), wait until it has left, reaping it if it is
    # our child, so the next start finds its port free and no /proc entry is left behind
    poll(lambda: _gone(record), 2.0, 0.02)
    return running


def _gone(record: dict[str, Any]) -> bool:
    """The process has left: no /proc entry, another process under its pid, or a zombie that only its parent,
    not us, can reap. (An init that reaps its orphans every 2 s once made each stop of a `sandbox up` process
    wait those 2 s.)"""
    st = _recorded_stat(record)
    return st is None or (_ended_stat(st) and int(st[1]) != os.getpid())


def tail(path: Path, lines: int = 3, limit: int = 300) -> str:
    """The last lines of a file as one line, for error messages."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no output)"
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
    one = " | ".join(kept) or "(no output)"
    return one if len(one) <= limit else "..." + one[-limit:]


PACKAGE_ROOT = str(Path(__file__).resolve().parents[3])  # the directory holding acgs_verify/


def python_env(ctx: Context, **extra: str) -> dict[str, str]:
    """The environment of a sandbox Python process: this very acgs_verify, whatever the caller's cwd."""
    env = dict(os.environ)
    env["ACGS_SANDBOX_DIR"] = str(ctx.dir)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def spawn_holder(ctx: Context, name: str, args: list[str], **env: str) -> dict[str, Any]:
    """Start `python -m acgs_verify.sandbox.holders ARGS`, the process that keeps a fault in place."""
    return start(f"the {name} holder", [ctx.python, "-m", "acgs_verify.sandbox.holders", *args],
                 python_env(ctx, **env), ctx.dir / RUN_DIR, name)


def write_secret(path: Path, value: str) -> None:
    """A password file the checks read through password_file: 0600 from its first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o600)


def write_password(path: Path, env: str | None = None) -> None:
    """write_secret() of the password in $ENV when it is set, else of a new random one."""
    write_secret(path, (os.environ.get(env) if env else None) or secrets.token_urlsafe(18))


def port_free(port: int, address: str = "127.0.0.1") -> bool:
    """True if nothing listens on address:port (SO_REUSEADDR: a TIME_WAIT leftover is not 'in use')."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def claim_port(port: int, what: str, offset: int, address: str = "127.0.0.1") -> None:
    """SandboxError naming the port, its user and the way out, unless address:port is free."""
    if not port_free(port, address):
        raise SandboxError(f"port {port} ({what}) is already in use on {address}; stop what holds it or choose "
                           f"another port offset (now {offset})")


def adopt(pid: int) -> dict[str, Any]:
    """The record of a process someone else started (a postmaster forked by pg_ctl), for is_alive()/stop()."""
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode("utf-8", "replace").split("\0")
    return {"pid": pid, "argv": argv, "start_ticks": _start_ticks(pid)}
