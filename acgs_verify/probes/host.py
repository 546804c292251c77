"""Host facts through testinfra, the same over the local, ssh, paramiko and ansible backends.

>>> pool = HostPool(connect_timeout=3)
>>> node = pool.get(profile.hosts[0])          # raises ProbeError('host unreachable: ...') once per host
>>> processes_matching(node, r"uvicorn .*auth")
[(4242, 'python -m uvicorn ... service_app:auth ...')]
>>> is_listening(node, 18016), has_systemd(node)
(True, False)
"""

from __future__ import annotations

import re
from typing import Any

from acgs_verify.check import ProbeError
from acgs_verify.profile import Host


class HostPool:
    """One testinfra connection per host per process; a host that cannot be reached is tried once."""

    def __init__(self, connect_timeout: float):
        self.connect_timeout = connect_timeout
        self._hosts: dict[str, Any] = {}
        self._unreachable: dict[str, str] = {}
        self._facts: dict[tuple[str, str], Any] = {}

    def get(self, host: Host):
        if host.name in self._unreachable:
            raise ProbeError(f"host unreachable: {self._unreachable[host.name]}")
        if host.name not in self._hosts:
            node = self._connect(host)
            try:
                node.run("true")
            except Exception as exc:  # testinfra raises backend-specific errors; all mean the same here
                reason = " ".join(str(exc).split())[:200] or type(exc).__name__
                self._unreachable[host.name] = reason
                raise ProbeError(f"host unreachable: {reason}") from None
            self._hosts[host.name] = node
        return self._hosts[host.name]

    def _connect(self, host: Host):
        import testinfra  # ~130 ms of imports: only for checks that need host facts

        if host.backend == "local":
            return testinfra.get_host("local://")
        raise ProbeError(f"host {host.name}: backend {host.backend!r} is not supported yet")

    def fact(self, host: Host, name: str, compute):
        """A host fact read once per run (one `ps`, one `ss`) and shared by every check of that host."""
        key = (host.name, name)
        if key not in self._facts:
            self._facts[key] = compute(self.get(host))
        return self._facts[key]

    def forget(self) -> None:
        self._facts.clear()


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
