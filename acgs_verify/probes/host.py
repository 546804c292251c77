"""Host facts through testinfra, the same over the local, ssh, paramiko and ansible backends.

>>> pool = HostPool(connect_timeout=3)
>>> pool.fact(host, "processes", processes)    # raises ProbeError('host unreachable: ...'), found once per host
[(4242, 'python -m uvicorn ... service_app:auth ...'), ...]
>>> pool.fact(host, "listening", listening_ports), pool.fact(host, "systemd", has_systemd)
({18016, 22}, False)
>>> pool.prefetch(host, "system", read_system)  # starts now in a thread; a later fact() of that name waits for it
>>> pool.close()                                # ends the ssh control masters this pool started

ssh hosts get a generated ssh_config (one per host, in a private directory): the profile's user, port, key and
known_hosts for that address, strict host key checking, BatchMode, the connect timeout, and a ControlPath so that
every command after the first rides the same connection (~10 ms instead of a ~200 ms handshake). A profile's own
`ssh_config` is included after that, so its ProxyJump (bastions) and other settings apply.
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from acgs_verify.check import ProbeError
from acgs_verify.inventory import ensure_ansible_on_path
from acgs_verify.profile import Host

PREFETCH_THREADS = 64  # facts started early are mostly waiting (a sleep, a remote command): threads are cheap


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
        self._facts: dict[tuple[str, str], Any] = {}
        self._ssh_dir: Path | None = None
        self._masters: list[tuple[str, str]] = []  # (ssh_config, destination) of ssh control masters
        self._pending: dict[tuple[str, str], Future] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def get(self, host: Host):
        with self._lock_of(host):  # prefetch threads and the test loop connect a host once between them
            if host.name in self._unreachable:
                raise ProbeError(f"host unreachable: {self._unreachable[host.name]}")
            if host.name not in self._hosts:
                try:
                    node = self._connect(host)
                    node.run("true")  # the handshake; later commands reuse the connection
                except ProbeError:
                    raise
                except Exception as exc:  # testinfra raises backend-specific errors; all mean the same here
                    self._unreachable[host.name] = _reason(exc)
                    raise ProbeError(f"host unreachable: {self._unreachable[host.name]}") from None
                self._hosts[host.name] = node
            return self._hosts[host.name]

    def fact(self, host: Host, name: str, compute):
        """A host fact read once per run (one `ps`, one `ss`, one read of /proc) shared by every check of that host.

        A host that stops answering half-way is marked unreachable, so its other checks fail at once too.
        """
        key = (host.name, name)
        pending = self._pending.pop(key, None)
        if pending is not None:
            self._facts[key] = pending.result()  # a ProbeError raised in the thread is raised here
        if key not in self._facts:
            self._facts[key] = self._compute(host, name, compute)
        return self._facts[key]

    def connect(self, hosts: list[Host]) -> None:
        """Connect to every host at once (ssh handshakes in parallel); one that cannot be reached is remembered,
        and its checks fail with the reason as before."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=PREFETCH_THREADS, thread_name_prefix="acgs-prefetch")
        for future in [self._executor.submit(self.get, h) for h in hosts if h.name not in self._hosts]:
            with contextlib.suppress(ProbeError):
                future.result()

    def prefetch(self, host: Host, name: str, compute) -> Future:
        """Start reading a fact now, in a thread (one per host at most at a time): facts that wait (the CPU sample's
        window) are then taken for every host at once instead of one host after another."""
        key = (host.name, name)
        if key not in self._pending:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=PREFETCH_THREADS, thread_name_prefix="acgs-prefetch")
            self._pending[key] = self._executor.submit(self._compute, host, name, compute)
        return self._pending[key]

    def _compute(self, host: Host, name: str, compute):
        node = self.get(host)
        try:
            return compute(node)
        except ProbeError:
            raise
        except RuntimeError as exc:  # testinfra's ssh backend: ssh itself failed (exit 255)
            self._unreachable[host.name] = _reason(exc)
            raise ProbeError(f"host unreachable: {self._unreachable[host.name]}") from None
        except Exception as exc:
            raise ProbeError(f"{name} on {host.name}: {_reason(exc)}") from None

    def _lock_of(self, host: Host) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(host.name, threading.Lock())

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
        for node in self._hosts.values():
            client = node.backend.__dict__.get("client")  # a paramiko connection, if one was made
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
            return testinfra.get_host("local://")
        if host.backend == "ssh":
            config = self._ssh_config(host)
            dest = _bracket(host.address)
            self._masters.append((config, dest))
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
        import testinfra

        node = testinfra.get_host(f"paramiko://{_bracket(host.address)}", timeout=self._timeout())
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
        node.backend.__dict__["client"] = client
        return node

    def _ansible(self, host: Host):
        import testinfra

        if not self.inventory:
            raise ProbeError(f"host {host.name}: backend ansible needs the profile's `inventory`")
        ensure_ansible_on_path()
        config = self._ssh_config(host)
        node = testinfra.get_host(f"ansible://{host.name}", ansible_inventory=self.inventory, ssh_config=config)
        inner = node.backend.ansible_runner.get_host(host.name, ssh_config=config, ssh_identity_file=None)
        if inner is not None and inner.backend.NAME == "ssh":
            inner.backend.timeout = self._timeout()  # testinfra's default is 10 s; the profile's wins
            self._masters.append((config, _bracket(inner.backend.host.name)))
        return node


def ssh_config_text(host: Host, timeout: int, control_dir: Path) -> str:
    """The ssh_config one host is reached with. ssh takes the first value it reads for each option: the profile's
    fields for this address come first, then the profile's own ssh_config (bastions), then the defaults."""
    mine = [f"Host {host.address}"]
    if host.user:
        mine.append(f"  User {host.user}")
    if host.port:
        mine.append(f"  Port {host.port}")
    if host.identity_file:
        mine += [f"  IdentityFile {_quote(Path(host.identity_file).expanduser())}", "  IdentitiesOnly yes"]
    known = f"  UserKnownHostsFile {_quote(Path(host.known_hosts).expanduser())}" if host.known_hosts else None
    if host.strict_host_key_checking:
        mine += [known] if known else []
        mine.append("  StrictHostKeyChecking yes")
    else:
        mine += ["  StrictHostKeyChecking no", "  UserKnownHostsFile /dev/null"]
    out = ["# generated by acgs-verify for host " + host.name, *mine, "", "Match all"]
    if host.ssh_config:
        out.append(f"  Include {_quote(Path(host.ssh_config).expanduser().resolve())}")
    out += ["", "Host *", "  BatchMode yes", f"  ConnectTimeout {timeout}", "  StrictHostKeyChecking yes",
            "  ServerAliveInterval 5", "  ServerAliveCountMax 3", "  ControlMaster auto",
            f"  ControlPath {control_dir}/%C", "  ControlPersist 60"]
    if known:
        out.append(known)
    return "\n".join(out) + "\n"


def _bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _quote(path: Path) -> str:
    return f'"{path}"' if " " in str(path) else str(path)


def _reason(exc: BaseException) -> str:
    """One line from whatever a backend raised: ssh's stderr, paramiko's message, a timeout."""
    arg = exc.args[0] if exc.args else None
    stderr = getattr(arg, "stderr", None)
    if isinstance(stderr, str) and stderr.strip():
        lines = [x for x in stderr.strip().splitlines() if x.strip() and not x.startswith("Warning: Perm")]
        text = lines[-1] if lines else stderr
    else:
        text = str(exc) or type(exc).__name__
    if type(exc).__name__ in ("timeout", "TimeoutError") and "timed out" not in text:
        text = f"timed out: {text}"
    return " ".join(text.split())[:200]


# ------------------------------------------------------------------------------------------- facts


def processes(node) -> list[tuple[int, str]]:
    """Every process as (pid, full command line): `ps -ww -eo pid=,args=` (-ww: ps cuts lines at 80 columns
    when its output is not a terminal, which would hide the part of the command line a pattern matches)."""
    out = node.check_output("ps -ww -eo pid=,args=")
    procs = []
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if pid.isdigit():
            procs.append((int(pid), args.strip()))
    return procs


def processes_matching(procs: list[tuple[int, str]], pattern: str) -> list[tuple[int, str]]:
    rx = re.compile(pattern)
    return [(pid, args) for pid, args in procs if rx.search(args) and "ps -ww -eo pid=,args=" not in args]


def listening_ports(node) -> set[int]:
    """TCP ports in LISTEN state on any address: `ss -Htln` (what the runbook's netstat -tlnp shows)."""
    out = node.check_output("ss -Htln")
    ports = set()
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 4:
            port = cols[3].rsplit(":", 1)[-1]
            if port.isdigit():
                ports.add(int(port))
    return ports


def has_systemd(node) -> bool:
    """sd_booted(3): the host runs systemd when /run/systemd/system is a directory."""
    return node.file("/run/systemd/system").is_directory


def unit_state(node, unit: str) -> str:
    """`systemctl is-active UNIT`: active, inactive, failed, activating, unknown..."""
    return node.run("systemctl is-active %s", unit).stdout.strip() or "unknown"


def uses_systemd(pool: HostPool, host: Host) -> bool:
    """The profile's word if it gives one, else what the host says."""
    return host.systemd if host.systemd is not None else pool.fact(host, "systemd", has_systemd)
