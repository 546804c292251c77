"""A host that stops answering in the middle of a command makes that command fail within a bound, over ssh and
paramiko: the remote `timeout` that bounds a command runs on the host, and a frozen host runs nothing.

The host is a real sshd on loopback (the sandbox's component); "stops answering" is SIGSTOP to every process of
that sshd (the listener, the connection's own process, the command), the way a frozen VM or a hung kernel looks
from the checker: the TCP connection stays open, and nothing comes back on it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from acgs_verify.hosts.backends import ALIVE_COUNT, ALIVE_INTERVAL, Liveness, ssh_config_text
from acgs_verify.hosts.pool import HostPool
from acgs_verify.profile import Host
from acgs_verify.sandbox.components.sshd import sshd_binary
from tests.servers import lone_sshd
from tests.waiting import wait_for

ADDRESS = "127.0.0.3"  # the address tests/test_host_layer.py's sshd uses too; the port offset keeps them apart
# The pool here probes 2 s apart, twice (the product's default is 5 s, 3 times: a 20 s wait a test need not pay);
# a loaded machine's loopback sshd still answers a probe within 4 s
ALIVE = Liveness(interval=2, count=2)
# `count` unanswered probes `interval` s apart, after `interval` s of silence, and room for a loaded machine; a
# command that waited on the frozen host would never end at all
BOUND = ALIVE.bound + 20

pytestmark = pytest.mark.skipif(sshd_binary() is None, reason="sshd (openssh-server) is not installed")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    with lone_sshd(tmp_path_factory.mktemp("sshd"), ADDRESS) as (sb, host):
        yield sb, Host.model_validate(host)


def _parents() -> dict[int, int]:
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                out[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return out


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _sshd_tree(sandbox_dir: Path) -> list[int]:
    """The sandbox's sshd (its command line names its config under the sandbox's directory) and every descendant."""
    parents = _parents()
    roots = [p for p in parents if str(sandbox_dir) in _cmdline(p) and "sshd" in _cmdline(p)]
    tree, grew = set(roots), True
    while grew:
        more = {p for p, pp in parents.items() if pp in tree} - tree
        tree |= more
        grew = bool(more)
    return sorted(tree)


def test_the_generated_ssh_config_bounds_a_silent_server():
    text = ssh_config_text(Host(name="h", address="127.0.0.9", backend="ssh"), 3, Path("/tmp/x"))
    assert f"  ServerAliveInterval {ALIVE_INTERVAL}\n" in text and f"  ServerAliveCountMax {ALIVE_COUNT}\n" in text
    assert "  ConnectTimeout 3\n" in text
    text = ssh_config_text(Host(name="h", address="127.0.0.9", backend="ssh"), 3, Path("/tmp/x"), ALIVE)
    assert "  ServerAliveInterval 2\n" in text and "  ServerAliveCountMax 2\n" in text


@pytest.mark.parametrize("backend", ["ssh", "paramiko"])
def test_a_host_that_stops_answering_mid_command_fails_within_a_bound(sshd, backend):
    sb, host = sshd
    host = host.model_copy(update={"name": f"frozen-{backend}", "backend": backend})
    pool = HostPool(connect_timeout=3, alive=ALIVE)
    stopped: list[int] = []
    tag = f"acgs-liveness-{backend}-{os.getpid()}"
    try:
        conn = pool.get(host)
        assert conn.check_output("echo ready") == "ready"
        outcome: dict = {}

        def command() -> None:
            started = time.monotonic()
            try:  # 600 s: far longer than the bound, so only the client side can end it in time
                outcome["result"] = conn.run(f"exec -a {tag} sleep 600; echo late")
            except Exception as exc:  # noqa: BLE001 - the failure is what this test wants to see
                outcome["error"] = exc
            outcome["seconds"] = time.monotonic() - started

        worker = threading.Thread(target=command, daemon=True)
        worker.start()
        wait_for("the remote command running", lambda: any(tag in _cmdline(p) for p in _sshd_tree(sb.dir)), 20)
        stopped = _sshd_tree(sb.dir)
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        worker.join(BOUND)
        assert not worker.is_alive(), f"{backend}: the command still waits on the frozen host after {BOUND} s"
        assert outcome["seconds"] < BOUND, outcome
        assert "result" not in outcome, outcome  # never an answer: the command did not finish
        error = outcome["error"]
        if backend == "ssh":  # the client gives up on the silent server and exits 255; testinfra raises on that
            assert isinstance(error, RuntimeError) and "exit_status=255" in str(error), repr(error)
        else:
            assert isinstance(error, TimeoutError) and "stopped answering" in str(error), repr(error)
    finally:
        # the remote `sleep` would outlive its session (its sshd is not its killer): ended by its pid, first
        for pid in [p for p in stopped if tag in _cmdline(p)] + stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL if tag in _cmdline(pid) else signal.SIGCONT)
        pool.close()
