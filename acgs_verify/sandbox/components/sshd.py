"""A second host reached over ssh: an OpenSSH server on 127.0.0.2, with its own host key, user key and known_hosts.

Present when sshd is installed (Debian: openssh-server). It logs in the user running the sandbox, with HOME set to
an empty directory so that no shell rc file runs (root's here runs `pyenv init`, +110 ms per command). Fault
`host-down` stops the server: every check on that host then fails with `host unreachable`.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

from acgs_verify.redact import one_line
from acgs_verify.sandbox.components.base import (
    Component,
    Context,
    SandboxError,
    atomic_write,
    claim_port,
    start,
    stop,
    wait_ready,
)
from acgs_verify.sandbox.constants import READY_TIMEOUT, RUN_DIR, SSH_PORT

ADDRESS = "127.0.0.2"
HOST_NAME = "ops-1"


def sshd_binary() -> str | None:
    found = shutil.which("sshd")
    if found:
        return found
    return next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.access(p, os.X_OK)), None)


class Sshd(Component):
    name = "sshd"
    fault_names = ("host-down",)
    fault_help = {"host-down": "stops sshd: the second host is unreachable and every check on it fails"}
    daemons = (("process", "sshd"),)

    def __init__(self, address: str = ADDRESS, host_name: str = HOST_NAME, roles: tuple[str, ...] = ("ops",)):
        self.address, self.host_name, self.roles = address, host_name, list(roles)

    def up(self, ctx: Context) -> None:
        self.clear_faults(ctx)
        binary = sshd_binary()
        if binary is None:
            ctx.state["process"] = None
            ctx.save()
            return
        d = self._dir(ctx)
        (d / "home").mkdir(parents=True, exist_ok=True)
        for key in ("host_ed25519", "id_ed25519"):
            if not (d / key).exists():
                _keygen(d / key)
        atomic_write(d / "authorized_keys", (d / "id_ed25519.pub").read_text())
        host_key = " ".join((d / "host_ed25519.pub").read_text().split()[:2])
        atomic_write(d / "known_hosts", f"[{self.address}]:{self._port(ctx)} {host_key}\n")
        atomic_write(d / "sshd_config", self._config(ctx))
        os.chmod(d / "id_ed25519", 0o600)
        os.chmod(d / "host_ed25519", 0o600)
        self._start(ctx, binary)

    def status(self, ctx: Context) -> list[dict[str, Any]]:
        if sshd_binary() is None:
            return [self.row(ctx, "sshd", "not installed (no remote host)")]
        name, record = f"sshd {self.host_name}", ctx.state.get("process")
        if "host-down" in self.active_faults(ctx):
            return [self.row(ctx, name, "down (fault)", record["pid"] if record else None, self._port(ctx))]
        return [self.process_row(ctx, name, record, self._port(ctx), dead="crashed")]

    def profile_fragment(self, ctx: Context) -> dict[str, Any]:
        if sshd_binary() is None:
            return {}
        d = self._dir(ctx)
        # no `user`: ssh logs in as whoever runs the checks, the user this sshd lets in
        return {"hosts": [{"name": self.host_name, "address": self.address, "backend": "ssh", "roles": self.roles,
                           "port": self._port(ctx), "identity_file": str(d / "id_ed25519"),
                           "known_hosts": str(d / "known_hosts")}]}

    def refuse(self, ctx: Context, fault: str, target: str) -> str | None:
        return None if sshd_binary() else "host-down needs sshd (openssh-server), which is not installed"

    def break_(self, ctx: Context, fault: str, target: str) -> None:
        self.stop_process(ctx, "sshd")

    def heal(self, ctx: Context, fault: str, target: str) -> None:
        binary = sshd_binary()
        assert binary is not None
        self._start(ctx, binary)

    # ------------------------------------------------------------------------------------ helpers
    def _dir(self, ctx: Context) -> Path:
        return ctx.dir / "ssh"

    def _port(self, ctx: Context) -> int:
        return SSH_PORT + ctx.port_offset

    def _config(self, ctx: Context) -> str:
        d = self._dir(ctx)
        return "\n".join([
            f"ListenAddress {self.address}:{self._port(ctx)}",
            f"HostKey {d / 'host_ed25519'}",
            f"AuthorizedKeysFile {d / 'authorized_keys'}",
            f"PidFile {d / 'sshd.pid'}",
            "StrictModes no",  # the keys live under the sandbox directory, which sshd would find too open
            "UsePAM no", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password", f"AllowUsers {getpass.getuser()}",
            f"SetEnv HOME={d / 'home'}",  # an empty home: no shell rc file runs for each command
            "MaxSessions 64", "MaxStartups 64:30:128", "LogLevel ERROR", "",
        ])

    def _start(self, ctx: Context, binary: str) -> None:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd refuses to start without it
        claim_port(self._port(ctx), "sshd", ctx.port_offset, self.address)
        run = ctx.dir / RUN_DIR
        record = start("sshd", [binary, "-D", "-e", "-f", str(self._dir(ctx) / "sshd_config")], dict(os.environ),
                       run, "sshd")
        record["title"] = "sshd: " + " ".join(record["argv"])  # what sshd -D calls itself once it listens
        ctx.state["process"] = record
        ctx.save()
        gave_up = f"sshd did not start on {self.address}:{self._port(ctx)}"
        try:
            wait_ready(record, run / "sshd.err", gave_up, lambda: _banner(self.address, self._port(ctx)),
                       READY_TIMEOUT)
        except SandboxError:
            stop(record)
            ctx.state["process"] = None
            ctx.save()
            raise


def _keygen(path: Path) -> None:
    res = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "acgs-verify sandbox", "-f",
                          str(path)], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise SandboxError(f"ssh-keygen failed: {one_line(res.stderr)}")


def _banner(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1) as s:
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False

