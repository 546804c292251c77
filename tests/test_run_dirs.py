"""A run's directory: never a `.partial-*` left behind after Ctrl-C, SIGTERM or a killed run, and a report writer
that fails still leaves summary.json where the error line says (issue 14, item 3), and two runs at once
that each keep their own."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.waiting import wait_for

# a local host: its checks take a few seconds (a CPU sample's window), and need nothing started
PROFILE = "hosts: [{name: here, roles: [app]}]\ncertificates: [/nonexistent/cert.pem]\n"


def start_run(tmp_path: Path, reports: Path, *extra: str, code: str | None = None) -> subprocess.Popen:
    profile = tmp_path / "here.yaml"
    profile.write_text(PROFILE)
    argv = ["run", "--profile", str(profile), "--report-dir", str(reports), *extra]
    cmd = [sys.executable, "-c", code, *argv] if code else [sys.executable, "-m", "acgs_verify.cli", *argv]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_partial(reports: Path, proc: subprocess.Popen, timeout: float = 30) -> Path:
    def partial() -> list[Path]:
        found = list(reports.glob(".partial-*")) if reports.exists() else []
        assert found or proc.poll() is None, proc.communicate()
        return found

    return wait_for("a .partial-* directory", partial, timeout, 0.01)[0]


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


def test_two_runs_at_once_do_not_collide(healthy_sandbox, tmp_path):
    """Both complete, each with its own directory and reports; `latest` names one; history has both lines."""
    reports = tmp_path / "reports"
    cmd = [sys.executable, "-m", "acgs_verify.cli", "run", "--profile", str(healthy_sandbox.profile_path),
           "--gate", "smoke", "--report-dir", str(reports)]
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    runs = sorted(p for p in reports.iterdir() if p.is_dir() and not p.is_symlink())
    assert len(runs) == 2 and not list(reports.glob(".partial-*")) and not list(reports.glob(".latest-*"))
    for d in runs:
        assert json.loads((d / "summary.json").read_text())["complete"] is True
        names = {f.name for f in d.iterdir()}
        assert {"summary.json", "junit.xml", "report.html", "report.md", "metrics.prom", "allure-results"} <= names
    assert (reports / "latest").resolve() in [d.resolve() for d in runs]
    lines = (reports / "history.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["run_id"] for x in lines) == sorted(d.name for d in runs)


def test_a_run_killed_while_making_its_partial_leaves_nothing_the_next_run_keeps(tmp_path):
    """The partial appears with its owner inside (made as .starting-*, renamed): one killed between the two steps
    leaves only a .starting-* directory, which the next run removes once it is older than any start takes."""
    import os
    import time

    from acgs_verify import rundir

    partial = rundir.start(tmp_path, "20261130T000000Z-here-compliance-0001")
    assert (partial / rundir.OWNER_FILE).read_text().startswith(f"{os.getpid()}@")
    assert not list(tmp_path.glob(f"{rundir.STARTING}*"))
    old, new = tmp_path / f"{rundir.STARTING}a", tmp_path / f"{rundir.STARTING}b"
    old.mkdir()
    new.mkdir()
    past = time.time() - rundir.STALE_STARTING_SECONDS - 1
    os.utime(old, (past, past))
    assert rundir.clean_stale(tmp_path) == [old]
    assert new.is_dir() and partial.is_dir()  # one being made now, and a live run's partial, are left alone
