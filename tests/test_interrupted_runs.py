"""Interrupted runs: SIGINT or SIGTERM mid-run stops the workers, leaves no child process, writes a
report marked incomplete, keeps `latest` on the last complete run, and exits 3."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from acgs_verify.sandbox import service_app
from tests.conftest import REPO, run_cli
from tests.waiting import wait_for


def processes_with_env(marker: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if marker.encode() in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


def wait_for_requests(log: Path, offset: int, proc: subprocess.Popen, count: int, timeout: float = 60) -> None:
    """Until `count` requests beyond `offset` are in a sandbox service's log (the run is measuring it)."""

    def seen() -> bool:
        assert proc.poll() is None, proc.communicate()
        with log.open("rb") as f:
            f.seek(offset)
            return f.read().count(b"request method=") >= count

    wait_for(f"{count} requests in {log}", seen, timeout, 0.1)


@pytest.fixture(scope="module")
def one_complete_run(sandbox, tmp_path_factory):
    """A reports directory holding one complete run (`latest` points at it), for each test to copy."""
    reports = tmp_path_factory.mktemp("complete") / "reports"
    first = run_cli("run", "--profile", str(sandbox.profile_path), "--report-dir", str(reports), "--gate", "smoke")
    assert first.returncode == 0, first.stdout + first.stderr
    return reports


# Each case slows its own service: the run interrupted before leaves requests in flight, which the slowed
# service logs when they end, after the next case has started counting.
@pytest.mark.parametrize("sig, workers, slowed", [(signal.SIGINT, [], "auth"),
                                                  (signal.SIGTERM, ["-n", "2"], "constitutional-ai")])
def test_interrupt_keeps_latest_and_reports_incomplete(healthy_sandbox, one_complete_run, tmp_path, sig, workers,
                                                       slowed):
    reports = tmp_path / "reports"
    shutil.copytree(one_complete_run, reports, symlinks=True)  # `latest` names the run: relative, still valid
    complete_run = os.readlink(reports / "latest")
    assert (reports / "latest" / "summary.json").is_file()

    healthy_sandbox.break_fault(f"slow:{slowed}")  # 150 ms a request: 300 samples keep the run busy for 45 s
    log = service_app.log_path(healthy_sandbox.dir, service_app.SERVICES[slowed])
    seen = log.stat().st_size
    marker = f"ACGS_TEST_RUN_{uuid.uuid4().hex}"
    env = {**os.environ, marker: "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "acgs_verify.cli", "run", "--profile", str(healthy_sandbox.profile_path),
         "--report-dir", str(reports), "--set", "thresholds.latency_samples=300", "--", "-k", "SVC-06", *workers],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_requests(log, seen, proc, 3)  # SVC-06 is sampling the slowed service: the run is mid-way
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, out + err
    assert "Traceback" not in out + err
    last = out.strip().splitlines()[-1]
    # the run set out to run SVC-06 on 6 services and says so, however many had finished (the slowed one takes 45 s)
    assert re.match(r"ACGS UNKNOWN - run interrupted after [0-5] of 6 checks", last), last
    wait_for("no child process of the run left", lambda: not processes_with_env(marker), 10)
    assert os.readlink(reports / "latest") == complete_run
    runs = [p for p in reports.iterdir() if p.is_dir() and p.name != complete_run and not p.is_symlink()]
    (incomplete,) = runs
    summary = json.loads((incomplete / "summary.json").read_text())
    assert summary["complete"] is False and summary["exit_code"] == 3 and summary["planned"] == 6
    assert not any("no checks were collected" in n for n in summary["notes"])
    for name in ("report.md", "report.html"):
        text = (incomplete / name).read_text()
        assert "run interrupted after" in text and "Interrupted" in text and "no checks" not in text, name
    assert not list(reports.glob(".partial-*"))

