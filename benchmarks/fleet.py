"""A fleet of ssh hosts behind a delay: N host entries that all reach the sandbox's sshd through delay_proxy.py.

>>> fleet = Fleet(sandbox_profile, work_dir, hosts=200, rtt_ms=20)    # starts the proxy (one address per host)
>>> path = fleet.profile(50)          # the sandbox profile with hosts fleet-1..fleet-50 (backend ssh) only
>>> fleet.counts()                    # {"127.0.1.1:PORT": {"accepted": 3, "sessions": 1}, ...}
>>> fleet.close()

Each host has its own address (127.0.1.1, 127.0.1.2, ...: loopback answers every 127/8 address), so each is its own
ControlMaster connection, and the proxy counts connections per host. The hosts take the sandbox ssh host's roles,
key and user; the known_hosts file names every proxy address with the sandbox sshd's host key, so host keys are
still checked strictly.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

PROXY = Path(__file__).resolve().parent / "delay_proxy.py"


def fleet_address(i: int) -> str:
    """The i-th host's address (0-based): 127.0.1.1 .. 127.0.1.250, then 127.0.2.1 ..."""
    return f"127.0.{1 + i // 250}.{1 + i % 250}"


def _free_port(addresses: list[str]) -> int:
    """A port free on every address (the proxy listens on the same port of each)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((addresses[0], 0))
            port = s.getsockname()[1]
        try:
            for a in addresses:
                with socket.socket() as s:
                    s.bind((a, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no port free on every fleet address")


class Fleet:
    def __init__(self, base_profile: Path, work: Path, hosts: int, rtt_ms: float = 20.0, max_seconds: float = 3600,
                 silent: int = 0):
        data = yaml.safe_load(base_profile.read_text())
        ssh = [h for h in data.get("hosts", []) if h.get("backend") == "ssh"]
        if not ssh:
            raise RuntimeError("the sandbox has no ssh host (is sshd installed?): no fleet to simulate")
        self.base, self.ssh_host, self.work = data, ssh[0], work
        self.addresses = [fleet_address(i) for i in range(hosts)]
        # down hosts: addresses that take the TCP handshake and never answer (see delay_proxy --silent)
        self.silent_addresses = [fleet_address(hosts + i) for i in range(silent)]
        self.port = _free_port(self.addresses + self.silent_addresses)
        key = Path(self.ssh_host["known_hosts"]).read_text().split()[1:3]
        self.known_hosts = work / "fleet_known_hosts"
        self.known_hosts.write_text("".join(f"[{a}]:{self.port} {' '.join(key)}\n" for a in self.addresses))
        self.stats = work / "fleet_proxy_stats.json"
        ready = work / "fleet_proxy_ready"
        ready.unlink(missing_ok=True)
        cmd = [sys.executable, str(PROXY), "--upstream", f"{self.ssh_host['address']}:{self.ssh_host['port']}",
               "--rtt-ms", str(rtt_ms), "--stats", str(self.stats), "--ready", str(ready),
               "--max-seconds", str(max_seconds)]
        for a in self.addresses:
            cmd += ["--listen", f"{a}:{self.port}"]
        for a in self.silent_addresses:
            cmd += ["--silent", f"{a}:{self.port}"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.poll() is not None else "not ready in 15 s"
                self.close()
                raise RuntimeError(f"delay proxy did not start: {err.strip()}")
            time.sleep(0.05)

    def host(self, i: int, **extra) -> dict:
        """The i-th host entry (0-based), `fleet-{i+1}`."""
        return {"name": f"fleet-{i + 1}", "address": self.addresses[i], "backend": "ssh", "port": self.port,
                "roles": list(self.ssh_host.get("roles", [])), "identity_file": self.ssh_host["identity_file"],
                "known_hosts": str(self.known_hosts), **extra}

    def silent_host(self, i: int, **extra) -> dict:
        """The i-th down host (0-based), `fleet-down-{i+1}`: same key and user, an address that never answers."""
        return {**self.host(0), "name": f"fleet-down-{i + 1}", "address": self.silent_addresses[i], **extra}

    def profile(self, n: int, extra_hosts: list[dict] | None = None) -> Path:
        """The sandbox profile with fleet-1..fleet-n as its only hosts (plus `extra_hosts`)."""
        data = dict(self.base)
        data["hosts"] = [self.host(i) for i in range(n)] + list(extra_hosts or [])
        names = {h["name"] for h in data["hosts"]}  # ops-1's own certificate goes with ops-1
        data["certificates"] = [c for c in data.get("certificates", [])
                                if isinstance(c, str) or c.get("host") in (None, *names)]
        path = self.work / f"profile-fleet-{n}.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def counts(self) -> dict[str, dict[str, int]]:
        """Per proxy address: connections accepted, and sessions (connections on which the client sent a byte)."""
        try:
            return json.loads(self.stats.read_text())
        except (OSError, ValueError):
            return {}

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
