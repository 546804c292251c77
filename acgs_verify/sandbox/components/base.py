"""What every sandbox component (services now; PostgreSQL, Redis, backups, ... later) provides.

A component owns its slice of DIR/state.json (`ctx.state`), its processes and files under DIR, its faults,
and the part of the generated profile that describes it. The manager only sequences components.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
    name: str
    fault_names: tuple[str, ...] = ()

    def targets(self) -> list[str]:
        """What a fault spec `FAULT:TARGET` may name for this component's faults."""
        return []

    def fault_targets(self, fault: str) -> list[str]:
        """What `FAULT:TARGET` may name for this one fault ([]: no target); targets() unless a component's
        faults differ (backup-missing:FILE among faults that take none)."""
        return self.targets()

    @abstractmethod
    def up(self, ctx: Context) -> None:
        """Start everything; on failure undo what was started and raise SandboxError."""

    @abstractmethod
    def down(self, ctx: Context) -> list[str]:
        """Stop exactly what up() started, clear faults; returns one line per thing stopped."""

    @abstractmethod
    def status(self, ctx: Context) -> list[dict[str, Any]]:
        """One dict per process: name, pid, port, state."""

    @abstractmethod
    def profile_fragment(self, ctx: Context) -> dict[str, Any]:
        """Top-level profile keys this component contributes (lists are concatenated, maps merged)."""

    def active_faults(self, ctx: Context) -> list[str]:
        return []

    def break_fault(self, ctx: Context, fault: str, target: str) -> None:
        raise SandboxError(f"{self.name} has no fault {fault!r}")

    def heal_fault(self, ctx: Context, fault: str, target: str) -> None:
        raise SandboxError(f"{self.name} has no fault {fault!r}")


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
    return {"pid": pid, "argv": argv, "start_ticks": _start_ticks(pid)}


def _proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses


def _start_ticks(pid: int) -> int | None:
    st = _proc_stat(pid)
    return int(st[19]) if st else None


def _reap(pid: int) -> None:
    # When the caller itself started the process (tests, one long `up`), a dead child stays a zombie
    # until waited for; this only ever waits for our own children.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def is_alive(record: dict[str, Any] | None) -> bool:
    """True if the very process we started is still running (not a zombie, not a reused pid)."""
    if not record:
        return False
    pid = int(record["pid"])
    _reap(pid)
    st = _proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    if record.get("start_ticks") is not None and int(st[19]) != record["start_ticks"]:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if cmdline.rstrip(b"\0").split(b"\0") == [a.encode() for a in record["argv"]]:
        return True
    # a daemon that retitles itself once started (sshd: "sshd: ARGV [listener] 0 of 10-100 startups")
    return bool(record.get("title")) and cmdline.decode(errors="replace").startswith(record["title"])


def stop(record: dict[str, Any] | None, grace: float = 5.0) -> bool:
    """SIGTERM, then SIGKILL after `grace` seconds. Returns True if it was running."""
    if not is_alive(record):
        return False
    assert record is not None
    pid = int(record["pid"])
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 2.0)):
        if not is_alive(record):  # re-verified before every signal
            break
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and is_alive(record):
            time.sleep(0.02)
    _reap(pid)  # it may have turned zombie after is_alive's own reap: a stopped child leaves no /proc entry
    return True


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
    run = ctx.dir / "run"
    try:
        return spawn([ctx.python, "-m", "acgs_verify.sandbox.holders", *args], python_env(ctx, **env),
                     run / f"{name}.out", run / f"{name}.err")
    except OSError as exc:
        raise SandboxError(f"cannot start the {name} holder: {exc.strerror}: {ctx.python}") from None


def write_secret(path: Path, value: str) -> None:
    """A password file the checks read through password_file: 0600 from its first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    os.chmod(path, 0o600)


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
