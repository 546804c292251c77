"""A run's directory: never a `.partial-*` left behind after Ctrl-C, SIGTERM or a killed run, and a report writer
that fails still leaves summary.json where the error line says (issue 14, item 3)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

# a local host: its checks take a few seconds (a CPU sample's window), and need nothing started
PROFILE = "hosts: [{name: here, roles: [app]}]\ncertificates: [/nonexistent/cert.pem]\n"


def start_run(tmp_path: Path, reports: Path, *extra: str, code: str | None = None) -> subprocess.Popen:
    profile = tmp_path / "here.yaml"
    profile.write_text(PROFILE)
    argv = ["run", "--profile", str(profile), "--report-dir", str(reports), *extra]
    cmd = [sys.executable, "-c", code, *argv] if code else [sys.executable, "-m", "acgs_verify.cli", *argv]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_partial(reports: Path, proc: subprocess.Popen, timeout: float = 30) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = list(reports.glob(".partial-*")) if reports.exists() else []
        if found:
            return found[0]
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    raise AssertionError("no .partial-* directory appeared")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_as_soon_as_the_run_directory_exists_leaves_no_partial(tmp_path, sig):
    reports = tmp_path / "reports"
    proc = start_run(tmp_path, reports)
    wait_for_partial(reports, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, out + err
    assert "Traceback" not in out + err
    assert not list(reports.glob(".partial-*")), list(reports.iterdir())


def test_a_killed_runs_partial_directory_is_removed_by_the_next_run(tmp_path):
    reports = tmp_path / "reports"
    proc = start_run(tmp_path, reports)
    partial = wait_for_partial(reports, proc)
    proc.send_signal(signal.SIGKILL)  # nothing can clean up after this one but the next run
    proc.communicate(timeout=30)
    assert partial.exists()
    nxt = start_run(tmp_path, reports, "--", "-k", "TLS-01")
    out, err = nxt.communicate(timeout=120)
    assert nxt.returncode == 2, out + err  # the certificate is missing
    assert not partial.exists() and not list(reports.glob(".partial-*"))


def test_a_failing_report_writer_still_leaves_summary_json_where_it_says(tmp_path):
    reports = tmp_path / "reports"
    # a real run whose HTML writer breaks (a bug in one writer must not lose the run's verdict)
    code = ("import sys; import acgs_verify.report as r\n"
            "def broken(result, path): raise RuntimeError('template exploded')\n"
            "r.WRITERS['report.html'] = broken\n"
            "from acgs_verify.cli import main; sys.exit(main(sys.argv[1:]))\n")
    proc = start_run(tmp_path, reports, "--", "-k", "TLS-01", code=code)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, out + err  # the verdict stands: the certificate is missing
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "template exploded" in lines[0] and "summary.json is in" in lines[0], err
    where = Path(lines[0].rsplit("summary.json is in ", 1)[1].rstrip("/"))
    summary = json.loads((where / "summary.json").read_text())
    assert summary["exit_code"] == 2 and summary["checks"]
    assert out.strip().splitlines()[-1].startswith("ACGS CRITICAL")
    assert not list(reports.glob(".partial-*"))
