"""Files that misbehave: log files huge, damaged, rotated mid-read, unreadable; an application tree of 100,000 files
with symlink loops under it. A finding, never a crash or a hang."""

from __future__ import annotations

import json
import multiprocessing
import os
import tracemalloc
from pathlib import Path

import pytest

from acgs_verify.check import ProbeError
from acgs_verify.probes.logs import hash_mentions, request_statuses, tail_lines
from tests.conftest import run_cli

LINE = "2026-11-27 10:00:00,123 - auth_service - INFO - request method=GET path=/api/v1/x status=200 duration_ms=1\n"


def test_tail_of_a_5_gib_log_reads_the_end_in_constant_memory(tmp_path):
    log = tmp_path / "huge.log"
    with open(log, "wb") as f:
        f.truncate(5 << 30)  # sparse: 5 GiB of NULs the tail reader must not walk through
        f.seek(5 << 30)
        f.write(b"\n" + (LINE * 6000).encode() + b"2026-11-27 - x - INFO - Constitutional Hash: cdd01ef066bc6cf2\n")
    tracemalloc.start()
    read_before = _bytes_read()
    lines = tail_lines(str(log), 5000)
    read = _bytes_read() - read_before
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(lines) == 5000 and "cdd01ef066bc6cf2" in lines[-1]
    assert read < 16 << 20, read  # the end was read, not the 5 GiB of NULs before it
    assert peak < 16 << 20, peak


def _bytes_read() -> int:
    """Bytes this process has read through read() and friends so far (the kernel's count, not a clock)."""
    fields = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines())
    return int(fields["rchar"])


def test_invalid_utf8_and_nul_bytes_are_read_not_fatal(tmp_path):
    log = tmp_path / "damaged.log"
    log.write_bytes(b"\xff\xfe garbage \x00\x00 line\n" + LINE.encode() + b"\x80\x81 status=500 path=/api/v1/y\n"
                    + b'{"constitutional_hash": "0badc0ffee15bad0", "msg": "\xc3\x28"}\n')
    lines = tail_lines(str(log), 100)
    assert len(lines) == 4 and all("\0" not in line for line in lines)
    assert request_statuses(lines) == [200, 500]
    assert hash_mentions(lines) == {"0badc0ffee15bad0": 1}


def test_log_rotated_during_the_run_reads_the_new_file(tmp_path):
    log = tmp_path / "svc.log"
    log.write_text(LINE * 10)
    first = tail_lines(str(log), 5)
    os.rename(log, tmp_path / "svc.log.1")
    log.write_text("2026-11-27 10:00:01,000 - auth_service - INFO - Constitutional Hash: cdd01ef066bc6cf2\n")
    second = tail_lines(str(log), 5)
    assert len(first) == 5 and second == [log.read_text().strip()]
    os.unlink(log)
    with pytest.raises(ProbeError, match="does not exist"):
        tail_lines(str(log), 5)


def _read_as_nobody(path: str, queue) -> None:
    os.setgid(65534)
    os.setuid(65534)
    try:
        tail_lines(path, 10)
        queue.put("read")
    except ProbeError as exc:
        queue.put(f"ProbeError: {exc}")
    except Exception as exc:  # anything else is the bug this test looks for
        queue.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_unreadable_log_is_a_finding(tmp_path):
    log = tmp_path / "secret.log"
    log.write_text(LINE)
    log.chmod(0o600)
    tmp_path.chmod(0o755)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_read_as_nobody, args=(str(log), queue))
    proc.start()
    proc.join(30)
    assert queue.get(timeout=5) == f"ProbeError: log {log}: permission denied"


def test_a_directory_or_fifo_where_a_log_should_be(tmp_path):
    with pytest.raises(ProbeError):
        tail_lines(str(tmp_path), 10)
    fifo = tmp_path / "fifo.log"
    os.mkfifo(fifo)
    with pytest.raises(ProbeError, match="not a regular file"):
        tail_lines(str(fifo), 10)  # opening a FIFO with no writer would block: refused before that


def test_world_writable_scan_of_100k_files_with_symlink_loops_is_bounded(tmp_path):
    root = tmp_path / "ACGS"
    for d in range(100):
        sub = root / f"pkg{d:03d}"
        sub.mkdir(parents=True)
        for f in range(1000):
            (sub / f"m{f:04d}.py").touch()
    (root / "loop-a").symlink_to(root / "loop-b")
    (root / "loop-b").symlink_to(root / "loop-a")
    (root / "pkg000" / "up").symlink_to(root)  # a directory loop
    bad = [root / "pkg007" / "m0042.py", root / "pkg099" / "m0999.py"] + [root / "pkg050" / f"m{i:04d}.py"
                                                                          for i in range(30)]
    for p in bad:
        os.chmod(p, 0o666)
    profile = tmp_path / "p.yaml"
    profile.write_text(f"hosts: [{{name: h, roles: [app]}}]\npaths: {{app_root: '{root}'}}\n")
    # a scan that followed the loop would not end: the timeout fails the test rather than hang it
    res = run_cli("run", "--profile", str(profile), "--report-dir", str(tmp_path / "r"), "--", "-k", "SEC-01",
                  timeout=180)
    assert res.returncode == 2, res.stdout + res.stderr
    (c,) = json.loads((tmp_path / "r" / "latest" / "summary.json").read_text())["checks"]
    assert c["outcome"] == "failed" and "32" in c["message"], c["message"]
    listed = [str(p) for p in bad if str(p) in json.dumps(c)]
    assert len(listed) == 20, listed  # the first 20 found, and the count of all of them
