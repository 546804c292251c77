"""Reaching a host: a testinfra connection for each backend (local, ssh, paramiko, ansible), and what that starts.

>>> backends = Backends(connect_timeout=3, inventory=None, passphrases={})
>>> conn = backends.open(host)       # a testinfra Host: conn.run("id -un").stdout
>>> backends.close()                 # ends the ssh control masters and paramiko clients it started

testinfra is used through its public API only: `testinfra.get_host` with the options its backends document, a
backend's `run`, `get_command` and `result`, and `testinfra.backend.base.BaseBackend` for the one backend of our own
(paramiko, whose client and liveness are ours). tests/test_testinfra_api.py fails when an upgrade changes any of it.

ssh hosts get a generated ssh_config (one per host, in a private directory): the profile's user, port, key and
known_hosts for that address, strict host key checking, BatchMode, the connect timeout, and a ControlPath so that
every command after the first rides the same connection (~10 ms instead of a ~200 ms handshake). A profile's own
`ssh_config` is included after that, so its ProxyJump (bastions) and other settings apply.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from acgs_verify.errors import ProbeError
from acgs_verify.hosts.destinations import checked_address, checked_user
from acgs_verify.inventory import ensure_ansible_on_path
from acgs_verify.redact import one_line, printable

if TYPE_CHECKING:
    from acgs_verify.profile.model import Host

# A host that stops answering mid-command (frozen, its sshd stopped, a link that drops packets) answers no remote
# `timeout` either: the client side gives up after ALIVE_COUNT unanswered probes ALIVE_INTERVAL s apart, so a
# command waits on a silent host for at most ALIVE_INTERVAL * (ALIVE_COUNT + 1) s, however long it may legitimately
# run while the host still answers. ssh's ServerAliveInterval/ServerAliveCountMax; paramiko's LiveParamiko.
ALIVE_INTERVAL = 5
ALIVE_COUNT = 3


@dataclass(frozen=True)
class Liveness:
    """How long a silent host is waited for: `count` unanswered probes `interval` s apart."""
    interval: int = ALIVE_INTERVAL
    count: int = ALIVE_COUNT

    @property
    def bound(self) -> int:
        """The longest a command waits on a host that stopped answering, in seconds."""
        return self.interval * (self.count + 1)


class Backends:
    """Opens each host's connection by its backend, and keeps what it must end: ssh control masters, their
    ssh_config files (in `ssh_dir`, created on first use) and paramiko clients."""

    def __init__(self, connect_timeout: float, inventory: str | None = None,
                 passphrases: dict[str, str] | None = None, alive: Liveness = Liveness()):
        self.connect_timeout = connect_timeout
        self.inventory = inventory
        self.alive = alive
        # host name -> its identity file's passphrase (paramiko); None where there is none
        self._passphrases = passphrases or {}
        self.ssh_dir: Path | None = None
        self._masters: list[tuple[str, str]] = []  # (ssh_config, destination) of ssh control masters
        self._clients: list[Any] = []  # paramiko clients
        # host name -> how a command's output is streamed from it (stream.py), noted as it is opened:
        # ("local",), ("ssh", argv before the command), ("paramiko", client)
        self.stream_via: dict[str, tuple] = {}
        self._lock = threading.Lock()  # hosts connect from prefetch threads at once

    def open(self, host: Host):
        """A testinfra Host for `host`, not yet connected (its first command connects)."""
        import testinfra  # ~130 ms of imports: only for checks that need host facts

        if host.backend == "local":
            self.stream_via[host.name] = ("local",)
            return testinfra.get_host("local://")
        _check_address(host)
        if host.backend == "ssh":
            config = self._ssh_config(host)
            dest = _bracket(host.address)
            with self._lock:
                self._masters.append((config, dest))
            self.stream_via[host.name] = ("ssh", ["ssh", "-F", config, "--", dest])
            return testinfra.get_host(f"ssh://{dest}", ssh_config=config, timeout=self.timeout())
        if host.backend == "paramiko":
            return self._paramiko(host)
        if host.backend == "ansible":
            return self._ansible(host)
        raise ProbeError(f"host {host.name}: unknown backend {host.backend!r}")

    def timeout(self) -> int:
        return max(1, math.ceil(self.connect_timeout))  # ssh's ConnectTimeout takes whole seconds

    def close(self) -> None:
        """End the control masters and paramiko clients this started and remove its ssh_config files."""
        for config, dest in self._masters:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(["ssh", "-F", config, "-O", "exit", dest], capture_output=True, timeout=5)
        self._masters.clear()
        for client in self._clients:
            client.close()
        self._clients.clear()
        if self.ssh_dir is not None:
            import shutil

            shutil.rmtree(self.ssh_dir, ignore_errors=True)
            self.ssh_dir = None

    def _ssh_config(self, host: Host) -> str:
        with self._lock:
            if self.ssh_dir is None:
                # short: a unix socket path (ControlPath) must stay under 108 bytes
                self.ssh_dir = Path(tempfile.mkdtemp(prefix="acgs-ssh-", dir="/tmp"))
        path = self.ssh_dir / f"{host.name}.config"
        path.write_text(ssh_config_text(host, self.timeout(), self.ssh_dir, self.alive))
        return str(path)

    def _paramiko(self, host: Host):
        import paramiko
        from testinfra.host import Host as Conn

        client = paramiko.SSHClient()
        if host.strict_host_key_checking:
            known = Path(host.known_hosts or "~/.ssh/known_hosts").expanduser()
            if known.exists():
                client.load_host_keys(str(known))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        t = self.connect_timeout
        with self._lock:
            self._clients.append(client)
        client.connect(host.address, port=host.port or 22, username=host.user,
                       key_filename=str(Path(host.identity_file).expanduser()) if host.identity_file else None,
                       passphrase=self._passphrases.get(host.name),
                       timeout=t, banner_timeout=t, auth_timeout=t, allow_agent=True, look_for_keys=False)
        client.get_transport().set_keepalive(self.alive.interval)  # what stateful firewalls need to keep it open
        self.stream_via[host.name] = ("paramiko", client)
        # a backend of our own: testinfra's paramiko backend makes its own client (accepting any host key) and
        # waits on a command without end; this one runs on the client above and checks the host is alive
        backend = live_paramiko_class()(host.address, client, self.alive)
        conn = Conn(backend)
        backend.set_host(conn)
        return conn

    def _ansible(self, host: Host):
        """The inventory's host through testinfra's AnsibleRunner. One it reaches over ssh is opened as an ssh
        host with the inventory's own settings plus ours (ssh_config, the profile's timeout: testinfra's is 10 s);
        any other connection runs its commands through ansible itself."""
        import testinfra
        from testinfra.utils.ansible_runner import AnsibleRunner

        if not self.inventory:
            raise ProbeError(f"host {host.name}: backend ansible needs the profile's `inventory`")
        ensure_ansible_on_path()
        config = self._ssh_config(host)
        inner = AnsibleRunner.get_runner(self.inventory).get_host(host.name, ssh_config=config)
        if inner is None or inner.backend.get_connection_type() != "ssh":
            return testinfra.get_host(f"ansible://{host.name}", ansible_inventory=self.inventory,
                                      ssh_config=config)
        found = inner.backend
        spec = found.host  # testinfra's HostSpec: name, port, user, password
        login = urllib.parse.quote(spec.user, safe="") if spec.user else ""
        if login and spec.password:
            login += ":" + urllib.parse.quote(spec.password, safe="")
        dest = _bracket(spec.name)
        with self._lock:
            self._masters.append((config, dest))
        # the inventory's user and port ride the argv; a password (ssh would prompt for it) streams nothing
        if not spec.password:
            self.stream_via[host.name] = ("ssh", ["ssh", "-F", config, *(["-p", str(spec.port)] if spec.port else []),
                                                  *(["-l", spec.user] if spec.user else []),
                                                  *(["-i", found.ssh_identity_file] if found.ssh_identity_file
                                                    else []), "--", dest])
        return testinfra.get_host(
            f"ssh://{login + '@' if login else ''}{dest}{':' + str(spec.port) if spec.port else ''}",
            ssh_config=config, ssh_identity_file=found.ssh_identity_file, ssh_extra_args=found.ssh_extra_args,
            controlpath=found.controlpath, sudo=found.sudo, sudo_user=found.sudo_user, timeout=self.timeout())


def live_paramiko_class():
    """A testinfra backend (BaseBackend, its public base) running commands on a paramiko client we made, without
    waiting on a host that stopped answering.

    The channel is read `alive.interval` s at a time; after each silent interval the host must answer a request (a
    session channel opened and closed at once, the one request paramiko can wait on with a timeout) within
    interval * count s, else the command fails with TimeoutError. A command that runs long on a host
    that answers is left to its remote `timeout`."""
    import paramiko
    from testinfra.backend.base import BaseBackend

    class LiveParamiko(BaseBackend):
        NAME = "paramiko"

        def __init__(self, hostname: str, client: paramiko.SSHClient, alive: Liveness, **kwargs: Any):
            super().__init__(hostname, **kwargs)
            self.client = client
            self.alive = alive

        def run(self, command: str, *args: str, **kwargs: Any):
            cmd = self.encode(self.get_command(command, *args))
            rc, stdout, stderr = self._exec(cmd)
            return self.result(rc, cmd, stdout, stderr)

        def _exec(self, command: bytes) -> tuple[int, bytes, bytes]:
            transport = self.client.get_transport()
            if transport is None or not transport.is_active():
                raise RuntimeError(f"{self.hostname}: the ssh connection is closed")
            chan = transport.open_session(timeout=self.alive.interval * self.alive.count)
            try:
                chan.settimeout(self.alive.interval)
                chan.exec_command(command)
                stdout = self._read(transport, chan.recv)
                stderr = self._read(transport, chan.recv_stderr)
                while not chan.status_event.wait(self.alive.interval):
                    self._alive(transport)
                return chan.recv_exit_status(), stdout, stderr
            finally:
                chan.close()

        def _read(self, transport, recv) -> bytes:
            out = bytearray()
            while True:
                try:
                    data = recv(1 << 16)
                except TimeoutError:  # socket.timeout: alive.interval s without a byte
                    self._alive(transport)
                    continue
                if not data:
                    return bytes(out)
                out += data

        def _alive(self, transport) -> None:
            wait = self.alive.interval * self.alive.count
            try:
                transport.open_session(timeout=wait).close()
            except (paramiko.SSHException, OSError, EOFError):
                raise TimeoutError(f"{self.hostname} stopped answering: no reply within {wait} s while a "
                                   "command ran") from None

    return LiveParamiko


def _check_address(host: Host) -> None:
    """An address that starts with `-` would reach ssh as an option (`-oProxyCommand=...` runs a command here).
    The profile refuses such a value when it loads; this is the same rule again for a Host built without it."""
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


def ssh_config_text(host: Host, timeout: int, control_dir: Path, alive: Liveness = Liveness()) -> str:
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
            f"  ServerAliveInterval {alive.interval}", f"  ServerAliveCountMax {alive.count}", "  ControlMaster auto",
            f"  ControlPath {control_dir}/%C", "  ControlPersist 60"]
    if known:
        out.append(known)
    return "\n".join(out) + "\n"


def _bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def silent(exc: BaseException) -> str | None:
    """ssh's or paramiko's words when a handshake failed for want of any answer (a timeout, no route), else None:
    a refusal, a bad key or a wrong host key came from a host that is up."""
    text = reason(exc)
    low = text.lower()
    if "timed out" in low or "no route to host" in low or "banner" in low or "network is unreachable" in low:
        return text
    return None


def reason(exc: BaseException) -> str:
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
