"""Log files that misbehave: huge, damaged, rotated mid-read, unreadable. A finding, never a crash or a hang."""

from __future__ import annotations

import multiprocessing
import os
import time
import tracemalloc

import pytest

from acgs_verify.check import ProbeError
from acgs_verify.probes.logs import hash_mentions, request_statuses, tail_lines

LINE = "2026-11-27 10:00:00,123 - auth_service - INFO - request method=GET path=/api/v1/x status=200 duration_ms=1\n"


def test_tail_of_a_5_gib_log_is_fast_and_constant_memory(tmp_path):
    log = tmp_path / "huge.log"
    with open(log, "wb") as f:
        f.truncate(5 << 30)  # sparse: 5 GiB of NULs the tail reader must not walk through
        f.seek(5 << 30)
        f.write(b"\n" + (LINE * 6000).encode() + b"2026-11-27 - x - INFO - Constitutional Hash: cdd01ef066bc6cf2\n")
    tracemalloc.start()
    start = time.perf_counter()
    lines = tail_lines(str(log), 5000)
    took = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(lines) == 5000 and "cdd01ef066bc6cf2" in lines[-1]
    assert took < 1.0, took
    assert peak < 16 << 20, peak


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
    start = time.perf_counter()
    with pytest.raises(ProbeError, match="not a regular file"):
        tail_lines(str(fifo), 10)
    assert time.perf_counter() - start < 1
