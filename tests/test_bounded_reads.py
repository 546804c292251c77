"""Everything a run reads is bounded (issue 21, "Everything bounded"): a 1 GiB log with no newline, a Redis answering a
1 GiB bulk string or dripping a byte every 1.5 s, a FIFO or /dev/zero where a certificate, a CA file or a
password_file should be. Each is one clear failure naming what was hostile, within a bounded time and a few
hundred MB, locally and over ssh; never a hang, a traceback or gigabytes.

Each run is measured on its own: its peak RSS (its own and its children's, awk and ssh included) comes from wait4,
not from this process's RUSAGE_CHILDREN, which remembers every child any earlier test started. A run is also given
an address-space limit, so that a regression fails here with a MemoryError instead of taking the shared machine's
memory (the old code took 9 GB in gawk and 20 GB on /dev/zero).
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from acgs_verify.errors import ProbeError
from acgs_verify.probes.logs import MAX_TAIL_BYTES, tail_lines
from acgs_verify.probes.policies import MAX_POLICY_BYTES, check_policy
from acgs_verify.sandbox.components.sshd import sshd_binary
from tests.conftest import REPO, free_port_offset
from tests.hostile import REDIS_DRIP_INTERVAL, HostileServer
from tests.waiting import wait_for

PEAK_KB_MAX = 300_000  # a run's peak RSS, checker and children: a few hundred MB whatever the targets hand it
ADDRESS_SPACE_GUARD = 4 << 30  # a regression fails with MemoryError here rather than eat the shared machine
LINE = "2026-11-27 10:00:00,123 - auth_service - INFO - Constitutional Hash: cdd01ef066bc6cf2\n"
SSH_ADDRESS = "127.0.0.6"


@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_kb: int  # ru_maxrss of the run and every descendant it waited for


def run_measured(tmp_path: Path, *args: str, timeout: float = 120) -> Measured:
    """acgs-verify as a user runs it, with its own peak RSS (wait4) and wall time; killed, and the test failed,
    if it has not ended within `timeout`."""
    out, err = tmp_path / "run.stdout", tmp_path / "run.stderr"

    def guard() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE_GUARD, ADDRESS_SPACE_GUARD))

    started = time.monotonic()
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([sys.executable, "-m", "acgs_verify.cli", *args], stdout=o, stderr=e,
                                stdin=subprocess.DEVNULL, cwd=REPO, preexec_fn=guard, start_new_session=True)
    ended: list = []

    def done() -> bool:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            ended.append((os.waitstatus_to_exitcode(status), usage))
        return bool(pid)

    try:
        wait_for(f"acgs-verify {' '.join(args[:3])} to end", done, timeout=timeout, interval=0.1)
    except AssertionError:
        os.killpg(proc.pid, signal.SIGKILL)
        os.waitpid(proc.pid, 0)
        raise AssertionError(f"the run did not end within {timeout:g} s: {out.read_text()[-2000:]}") from None
    finally:
        proc.returncode = 0  # reaped here: Popen must not wait for it again
    code, usage = ended[0]
    return Measured(code, out.read_text(), err.read_text(), time.monotonic() - started, usage.ru_maxrss)


def _checks(report_dir: Path) -> dict[tuple[str, str], dict]:
    summary = json.loads((report_dir / "latest" / "summary.json").read_text())
    return {(c["id"], c["target"]): c for c in summary["checks"]}


def _sparse_log_without_newline(path: Path, size: int = (1 << 30) + 4096) -> Path:
    """A log of `size` NUL bytes and not one newline; sparse (truncate), so it costs no disk."""
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def _assert_bounded(res: Measured, seconds: float) -> None:
    assert "Traceback" not in res.stdout + res.stderr, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.seconds < seconds, f"{res.seconds:.1f} s"
    assert res.peak_kb < PEAK_KB_MAX, f"peak RSS {res.peak_kb} KiB"


# ------------------------------------------------------------------------------------------------ files, locally


def test_hostile_files_on_the_local_host_are_one_clear_failure_each_in_bounded_time_and_memory(tmp_path):
    (tmp_path / "logs").mkdir()
    big = _sparse_log_without_newline(tmp_path / "logs" / "auth.log")
    fifo, policies = tmp_path / "cert-fifo.pem", tmp_path / "policies"
    os.mkfifo(fifo)
    policies.mkdir()
    (policies / "shadow.yaml").symlink_to("/etc/shadow")  # found by walking: not followed, never read
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({
        "hosts": [{"name": "h", "address": "127.0.0.1"}],
        "services": [{"name": "auth", "port": 1, "log": str(big)}],
        "paths": {"logs": str(big.parent), "alerts_log": str(big), "kernel_log": str(big),
                  "policies": str(policies)},
        "certificates": [str(fifo), "/dev/zero"],
    }))
    res = run_measured(tmp_path, "run", "--profile", str(profile), "--report-dir", str(tmp_path / "r"), "--", "-k",
                       "CC-01 or CC-02 or CC-03 or SVC-07 or MON-01 or SEC-03 or SEC-06 or SYS-05 or TLS-01")
    _assert_bounded(res, 60)
    assert res.returncode == 2, res.stdout[-3000:]
    by = _checks(tmp_path / "r")
    for (cid, target), c in by.items():
        assert c["outcome"] in ("failed", "error"), (cid, target, c["message"])
        assert len(c["message"].splitlines()) == 1, c["message"]
    logs = [c for (cid, _), c in by.items() if cid in ("CC-01", "CC-02", "SVC-07", "MON-01")]
    assert len(logs) == 4, sorted(by)
    for c in logs:  # the log tail read its last 16 MiB, found no whole line there, and says so
        assert str(big) in c["message"] and "hold no whole line" in c["message"], c["message"]
    for cid in ("SEC-03", "SEC-06", "SYS-05"):  # through awk: no line read, so nothing to judge
        (c,) = [c for (i, _), c in by.items() if i == cid]
        assert "no line" in c["message"] or "hold no lines" in c["message"], c["message"]
    tls = {t: c["message"] for (cid, t), c in by.items() if cid == "TLS-01"}
    assert any(str(fifo) in m and "a FIFO, not a regular file" in m for m in tls.values()), tls
    assert any("/dev/zero" in m and "a character device, not a regular file" in m for m in tls.values()), tls
    (cc03,) = [c for (cid, _), c in by.items() if cid == "CC-03"]
    assert "a symlink, not followed" in cc03["message"], cc03["message"]


def test_the_security_incident_gate_over_a_20_gib_log_without_a_newline_ends_in_bounded_time(tmp_path):
    # the gate once hung here: SEC-03/06 sent the whole file through `tail -n | awk`, one 20 GiB record
    (tmp_path / "logs").mkdir()
    big = _sparse_log_without_newline(tmp_path / "logs" / "api.log", 20 << 30)
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({
        "hosts": [{"name": "h", "address": "127.0.0.1"}],
        "services": [{"name": "api", "port": 1, "log": str(big)}],
        "paths": {"logs": str(big.parent), "kernel_log": str(big), "app_root": str(tmp_path / "logs")},
        "evidence": {"max_file_mb": 1},
    }))
    res = run_measured(tmp_path, "run", "--profile", str(profile), "--gate", "security-incident", "--report-dir",
                       str(tmp_path / "r"))
    _assert_bounded(res, 60)
    by = _checks(tmp_path / "r")
    for cid in ("SEC-03", "SEC-06", "SYS-05", "CC-01", "CC-02"):
        (c,) = [c for (i, _), c in by.items() if i == cid]
        assert c["outcome"] in ("failed", "error"), c  # no line read: nothing to judge, never a pass


def test_password_files_that_are_a_fifo_or_dev_zero_are_refused_at_once(tmp_path):
    fifo = tmp_path / "redis.pass"
    os.mkfifo(fifo)
    for source in (str(fifo), "/dev/zero"):
        profile = tmp_path / "p.yaml"
        profile.write_text("hosts: [{name: h}]\n"
                           f"redis: [{{name: cache, url: 'redis://127.0.0.1:1/0', password_file: '{source}'}}]\n")
        res = run_measured(tmp_path, "run", "--profile", str(profile), "--report-dir", str(tmp_path / "r"),
                           timeout=60)
        _assert_bounded(res, 30)
        assert res.returncode == 3, res.stdout + res.stderr
        said = (res.stdout + res.stderr).strip().splitlines()
        line = next(x for x in said if "password_file" in x)
        assert f"p.yaml:2: redis[0].password_file: cannot read secret file {source}:" in line, said
        assert "not a regular file" in line, line


def _within(seconds: float, call, release=lambda: None):
    """What `call()` returns or raises, if it ends within `seconds`; otherwise `release()` (unblock it, so no
    thread is left behind) and fail: a regression fails this test instead of hanging the suite."""
    box: list = []

    def run() -> None:
        try:
            box.append(("returned", call()))
        except BaseException as exc:  # noqa: BLE001 -- handed to the test as it was raised
            box.append(("raised", exc))

    thread = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        release()
        thread.join(30)
        raise AssertionError(f"still running after {seconds:g} s")
    return box[0], time.monotonic() - started


def _open_for_writing(fifo: Path):
    """Give a reader blocked on `fifo` its end of file."""
    def release() -> None:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    return release


def test_a_ca_file_that_is_a_fifo_is_refused_not_waited_on(tmp_path):
    from acgs_verify.probes.tls import endpoint

    fifo = tmp_path / "ca.pem"
    os.mkfifo(fifo)
    (how, what), _ = _within(10, lambda: endpoint("https://127.0.0.1:1", ca_file=str(fifo), timeout=1),
                             _open_for_writing(fifo))
    assert how == "raised" and isinstance(what, ProbeError), what
    assert f"cannot read {fifo}: a FIFO, not a regular file" in str(what), what


def test_small_files_are_read_only_when_regular_and_within_the_cap(tmp_path):
    from acgs_verify.probes.bounded import NotReadable, read_regular

    cert = tmp_path / "cert.pem"
    cert.write_bytes(b"x" * 100)
    named = tmp_path / "named.pem"
    named.symlink_to(cert)
    assert read_regular(named, 100) == b"x" * 100  # the profile named the symlink: followed
    with pytest.raises(NotReadable, match="a symlink, not followed"):
        read_regular(named, 100, follow=False)  # found by walking: not followed
    with pytest.raises(NotReadable, match=r"larger than 99 bytes \(100 bytes\)"):
        read_regular(cert, 99)
    with pytest.raises(NotReadable, match="a directory, not a regular file"):
        read_regular(tmp_path, 100)
    tracemalloc.start()
    with pytest.raises(NotReadable, match="a character device, not a regular file"):
        read_regular("/dev/zero", 1 << 20)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20
    policy = tmp_path / "big.yaml"
    policy.write_bytes(b"a: 1\n" * (MAX_POLICY_BYTES // 4))
    assert check_policy(policy, "auto", "constitutional_hash").problem.startswith("larger than")


def test_a_log_line_cut_by_the_byte_cap_is_dropped(tmp_path):
    log = tmp_path / "svc.log"
    log.write_bytes(b"x" * 100 + b"\n" + LINE.encode() * 3)
    cap = len(LINE) * 3 + 10  # the cap ends inside the long first line
    assert tail_lines(str(log), 10, max_bytes=cap) == [LINE.strip()] * 3
    cap = len(LINE) * 3  # the cap ends exactly at a line start: that line is kept whole
    assert tail_lines(str(log), 10, max_bytes=cap) == [LINE.strip()] * 3
    assert tail_lines(str(log), 10, max_bytes=cap + 1) == [LINE.strip()] * 3  # the newline before it, and no more
    with pytest.raises(ProbeError, match="its last 50 bytes hold no whole line"):
        tail_lines(str(log), 10, max_bytes=50)
    assert MAX_TAIL_BYTES <= 32 << 20


# ------------------------------------------------------------------------------------------------ files, over ssh


@pytest.fixture(scope="module")
def ssh_host(tmp_path_factory):
    """A real sshd on 127.0.0.6 (the sandbox's component) and the profile entry of the host it serves."""
    from acgs_verify.sandbox import Sandbox
    from acgs_verify.sandbox.components.sshd import Sshd

    sb = Sandbox(tmp_path_factory.mktemp("sshd"), port_offset=free_port_offset(),
                 components=[Sshd(address=SSH_ADDRESS, host_name="remote-1", roles=("app", "ops"))])
    try:
        sb.up()
        yield sb.profile_data()["hosts"][-1]
    finally:
        sb.down()


@pytest.mark.skipif(sshd_binary() is None, reason="needs openssh-server (.ci/run installs it)")
def test_a_1_gib_log_without_a_newline_over_ssh_is_read_by_bytes(ssh_host, tmp_path):
    big = _sparse_log_without_newline(tmp_path / "auth.log")
    (tmp_path / "ok.log").write_text(LINE * 10 + "2026-11-27 10:00:01,000 - auth - WARNING - Failed login for bob\n")
    host = {**ssh_host, "roles": ["app", "ops"]}
    profile = tmp_path / "p.yaml"
    profile.write_text(yaml.safe_dump({
        "hosts": [host],
        "services": [{"name": "auth", "port": 1, "log": str(big)}, {"name": "ok", "port": 2,
                                                                     "log": str(tmp_path / "ok.log")}],
        "paths": {"logs": str(tmp_path), "alerts_log": str(big), "kernel_log": str(big)},
    }))
    res = run_measured(tmp_path, "run", "--profile", str(profile), "--report-dir", str(tmp_path / "r"), "--", "-k",
                       "CC-01 or MON-01 or SEC-03 or SYS-05")
    _assert_bounded(res, 60)
    by = _checks(tmp_path / "r")
    cc01 = {t: c for (cid, t), c in by.items() if cid == "CC-01"}
    (hostile,) = [c for t, c in cc01.items() if t.startswith("auth@")]
    assert hostile["outcome"] == "error" or hostile["outcome"] == "failed", hostile
    assert str(big) in hostile["message"] and "remote-1" in hostile["message"], hostile["message"]
    assert "hold no whole line" in hostile["message"], hostile["message"]
    (fine,) = [c for t, c in cc01.items() if t.startswith("ok@")]
    assert fine["outcome"] == "passed", fine  # the same read of a sane log still sees its lines
    (mon,) = [c for (cid, _), c in by.items() if cid == "MON-01"]
    assert str(big) in mon["message"] and "hold no whole line" in mon["message"], mon["message"]
    (sec03,) = [c for (cid, _), c in by.items() if cid == "SEC-03"]
    assert sec03["value"] == 1, sec03  # through awk, over ssh: the huge log gave no line, the sane one its one
    (sys05,) = [c for (cid, _), c in by.items() if cid == "SYS-05"]
    assert sys05["outcome"] in ("failed", "error") and "no lines" in sys05["message"], sys05["message"]


# ------------------------------------------------------------------------------------------------ Redis


def _redis_run(tmp_path: Path, mode: str, thresholds: str = "") -> tuple[Measured, dict]:
    with HostileServer(mode) as port:
        profile = tmp_path / "p.yaml"
        profile.write_text(f"hosts: [{{name: h}}]\nredis: [{{name: evil, url: 'redis://127.0.0.1:{port}/0'}}]\n"
                           + (f"thresholds: {{{thresholds}}}\n" if thresholds else ""))
        res = run_measured(tmp_path, "run", "--profile", str(profile), "--report-dir", str(tmp_path / "r"), "--",
                           "-k", "RD-01 or RD-02 or RD-03", timeout=90)
    return res, _checks(tmp_path / "r")


def test_a_redis_answering_a_1_gib_bulk_string_is_cut_at_the_reply_cap(tmp_path):
    res, by = _redis_run(tmp_path, "redis-huge")
    _assert_bounded(res, 60)
    assert res.returncode == 2, res.stdout[-3000:]
    assert {cid for cid, _ in by} == {"RD-01", "RD-02", "RD-03"}, sorted(by)
    for c in by.values():
        assert c["outcome"] in ("failed", "error") and "evil" in c["target"], c
        assert "redis://127.0.0.1:" in c["message"] and "reply larger than 4 MiB" in c["message"], c["message"]


def test_a_redis_dripping_a_byte_every_1_5_s_fails_at_its_deadline_and_only_once(tmp_path):
    # the defaults: redis_timeout_seconds 1, connect_timeout_seconds 3 -> 3 s for a whole reply; each byte comes
    # well within the socket timeout, so only a deadline for the whole reply ends the read
    res, by = _redis_run(tmp_path, "redis-drip")
    assert REDIS_DRIP_INTERVAL < 3
    _assert_bounded(res, 30)  # one deadline (3 s) for the first check, the others fail at once
    assert res.returncode == 2, res.stdout[-3000:]
    for c in by.values():
        assert c["outcome"] in ("failed", "error") and "evil" in c["target"], c
        assert "redis://127.0.0.1:" in c["message"], c["message"]
        assert "no complete reply within the 3 s timeout" in c["message"], c["message"]


@pytest.mark.parametrize("mode, reason", [("redis-huge", "reply larger than 4 MiB"),
                                          ("redis-drip", "no complete reply within the 2 s timeout")])
def test_the_maintenance_snapshot_counts_keys_within_the_same_bounds(mode, reason):
    from acgs_verify.probes.redis import RedisProbe
    from acgs_verify.probes.state import redis_keys

    stack = contextlib.ExitStack()
    with stack:
        port = stack.enter_context(HostileServer(mode))
        tracemalloc.start()
        # 2 s: a byte comes every 1.5 s, within any one read's timeout; ending the server releases a read that hangs
        (how, what), seconds = _within(15, lambda: redis_keys(RedisProbe(f"redis://127.0.0.1:{port}/0", None, 2)),
                                       stack.close)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert how == "raised" and reason in str(what), what
    assert seconds < 10 and peak < 64 << 20, (seconds, peak)


def test_a_real_redis_is_read_as_before_through_the_bounded_connection(tmp_path):
    from acgs_verify.probes.redis import RedisProbe, hit_rate
    from acgs_verify.probes.state import redis_keys
    from tests.servers import redis_server

    with redis_server(tmp_path, password="pw with spaces") as port:
        url = f"redis://127.0.0.1:{port}/0"
        probe = RedisProbe(url, "pw with spaces", timeout=3)
        try:
            assert probe.ping() > 0 and probe.get("acgs:constitutional_hash") is None
            assert hit_rate(probe.info("stats")) == (0, 1)  # the GET above missed
            lat = probe.latency(5)
            assert len(lat.samples_ms) == 5 and not lat.failures
            assert redis_keys(probe) == {"keys": 0, "names": []}
            import redis

            with contextlib.closing(redis.Redis(host="127.0.0.1", port=port, password="pw with spaces")) as admin:
                admin.mset({f"k{i}": "v" for i in range(1200)})  # more than one SCAN page, more than MAX_KEY_NAMES
                assert redis_keys(probe) == {"keys": 1200, "names": None}
                admin.delete(*[f"k{i}" for i in range(600)])
                assert redis_keys(probe) == {"keys": 600, "names": sorted(f"k{i}"
                                                                                  for i in range(600, 1200))}
        finally:
            probe.close()
