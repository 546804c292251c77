"""One fault semantics in every sandbox component (acgs_verify/sandbox/components/base.py):
a fault whose heal failed stays listed, breaking an active fault and healing an inactive one change nothing, and a
refusal is one SandboxError line. The heals fail for real: something else holds the port the server must come back on.
"""

from __future__ import annotations

import socket
from contextlib import contextmanager

import pytest

from acgs_verify.sandbox import SandboxError
from acgs_verify.sandbox.components.redis import redis_port
from acgs_verify.sandbox.components.sshd import ADDRESS, sshd_binary
from acgs_verify.sandbox.constants import SSH_PORT
from acgs_verify.sandbox.service_app import SERVICES


@contextmanager
def occupied(port: int, address: str = "127.0.0.1"):
    """A real listener on address:port for the duration: whatever must start there cannot."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the stopped server's TIME_WAIT is no obstacle
        s.bind((address, port))
        s.listen()
        yield


def _heal_fails_then_works(sandbox, spec: str, port: int, address: str = "127.0.0.1") -> None:
    sandbox.break_fault(spec)
    with occupied(port, address), pytest.raises(SandboxError) as failed:
        sandbox.heal_fault(spec)
    assert "\n" not in str(failed.value)
    assert spec in sandbox.faults(), f"{spec} healed in vain, yet no longer listed"
    sandbox.heal_fault(spec)  # the port is free again: a plain retry heals it
    assert spec not in sandbox.faults()


def test_failed_heal_stays_listed_services(healthy_sandbox):
    port = SERVICES["auth"].port + healthy_sandbox.port_offset
    _heal_fails_then_works(healthy_sandbox, "service-down:auth", port)
    status = {row["name"]: row for row in healthy_sandbox.status()["components"]["services"]}
    assert status["auth"]["state"] == "running"


def test_failed_heal_stays_listed_redis(healthy_sandbox):
    _heal_fails_then_works(healthy_sandbox, "redis-down", redis_port(healthy_sandbox.port_offset))
    assert healthy_sandbox.status()["components"]["redis"][0]["state"] == "running"


@pytest.mark.skipif(sshd_binary() is None, reason="sshd (openssh-server) is not installed")
def test_failed_heal_stays_listed_sshd(healthy_sandbox):
    _heal_fails_then_works(healthy_sandbox, "host-down", SSH_PORT + healthy_sandbox.port_offset, ADDRESS)


def test_break_active_and_heal_inactive_change_nothing(healthy_sandbox):
    passwd = healthy_sandbox.dir / "etc" / "passwd"
    healthy_sandbox.break_fault("unknown-user")
    once = passwd.read_text()
    healthy_sandbox.break_fault("unknown-user")  # already on: not a second account
    assert passwd.read_text() == once and once.count("\nmallory:x:") == 1
    assert healthy_sandbox.faults().count("unknown-user") == 1
    healthy_sandbox.heal_fault("unknown-user")
    healed = passwd.read_text()
    assert "mallory" not in healed
    healthy_sandbox.heal_fault("unknown-user")  # already off
    assert passwd.read_text() == healed and healthy_sandbox.faults() == []


def test_refusal_is_one_line_and_changes_nothing(healthy_sandbox):
    healthy_sandbox.break_fault("backup-stale")
    with pytest.raises(SandboxError) as refused:
        healthy_sandbox.break_fault("field-backups")
    assert str(refused.value) == "field-backups replaces the backups: heal backup-stale first"
    assert healthy_sandbox.faults() == ["backup-stale"]


@pytest.mark.parametrize("code, ended", [("import sys; print('bind: in use', file=sys.stderr); sys.exit(3)", "exit 3"),
                                         ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
                                          "killed by SIGKILL")])
def test_a_process_that_dies_while_starting_says_how_it_ended(tmp_path, code, ended):
    import sys

    from acgs_verify.sandbox.components.base import start, wait_ready

    record = start("the probe server", [sys.executable, "-c", code], {}, tmp_path, "probe")
    with pytest.raises(SandboxError) as caught:
        wait_ready(record, tmp_path / "probe.err", "the probe server did not start", lambda: False, 30)
    assert str(caught.value).startswith(f"the probe server did not start ({ended}): "), caught.value
    assert ("bind: in use" in str(caught.value)) == (ended == "exit 3")


def test_a_process_is_alive_from_the_moment_it_is_started(tmp_path):
    """posix_spawn returns before the child's argv is laid out; a live process must never read as dead then."""
    import sys

    from acgs_verify.sandbox.components.base import is_alive, start, stop

    records, alive = [], []
    try:
        for i in range(40):
            records.append(start("a sleeper", [sys.executable, "-c", "import time; time.sleep(30)"], {}, tmp_path,
                                 f"s{i}"))
            alive.append(is_alive(records[-1]))
        assert all(alive), f"{alive.count(False)} of 40 read as dead right after they were started"
    finally:
        for r in records:
            stop(r, grace=0)
    assert not any(is_alive(r) for r in records)
