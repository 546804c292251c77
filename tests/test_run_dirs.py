"""A run's directory: never a `.partial-*` left behind after Ctrl-C, SIGTERM or a killed run, and a report writer
that fails still leaves summary.json where the error line says (issue 14, item 3), and two runs at once
that each keep their own."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
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


# ---------------------------------------------------------------------------------- history.jsonl and REPORT_DIR
def finished_run(tmp_path: Path, reports: Path) -> tuple[subprocess.CompletedProcess, dict]:
    """One quick real run (TLS-01 only: the certificate is missing, exit 2), with its summary.json."""
    proc = start_run(tmp_path, reports, "--", "-k", "TLS-01")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, out + err
    assert "Traceback" not in out + err
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done, json.loads((reports / "latest" / "summary.json").read_text())


def warnings_of(err: str) -> list[str]:
    lines = [line for line in err.splitlines() if line.strip()]
    assert all(line.startswith("acgs-verify: ") for line in lines), err  # one line each, no traceback
    return [line for line in lines if "WARNING" in line]


def test_history_jsonl_that_is_a_symlink_elsewhere_is_not_appended_to(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    elsewhere = tmp_path / "elsewhere.conf"
    elsewhere.write_text("precious = 1\n")
    (reports / "history.jsonl").symlink_to(elsewhere)
    done, summary = finished_run(tmp_path, reports)
    assert elsewhere.read_text() == "precious = 1\n"
    assert (reports / "history.jsonl").is_symlink()
    said = warnings_of(done.stderr)
    assert any("history.jsonl: not appended to: it is a symlink" in w for w in said), done.stderr
    assert any("history.jsonl: not appended to: it is a symlink" in n for n in summary["notes"])


def test_history_jsonl_with_another_name_is_not_appended_to(tmp_path):
    """A hard link is another name of the same file, wherever it is: appending would write there too."""
    from acgs_verify.report.history import append_history
    from acgs_verify.results import RunResult

    elsewhere = tmp_path / "elsewhere.conf"
    elsewhere.write_text("precious = 1\n")
    reports = tmp_path / "reports"
    reports.mkdir()
    os.link(elsewhere, reports / "history.jsonl")
    said: list[str] = []
    result = RunResult(run_id="r", profile="p", gate="g", started="2026-12-07T00:00:00+00:00")
    assert append_history(result, reports, said.append) is None
    assert elsewhere.read_text() == "precious = 1\n"
    assert len(said) == 1 and "2 names (hard links)" in said[0]


def history_line(run_id: str, **fields) -> str:
    entry = {"run_id": run_id, "profile": "here", "gate": "compliance", "started": "2026-12-01T02:00:00+00:00",
             "duration": 1.0, "exit_code": 0, "compliance_rate": 1.0, "totals": {"passed": 1},
             "services": {"auth@app-1": {"up": True, "fast": True, "p99_ms": 2.0}}, **fields}
    return json.dumps(entry)


BAD_LINES = {  # what a line holds -> what the warning says of it
    "{not json": "not JSON",
    history_line("b1", compliance_rate="abc"): "compliance_rate is not null or a number from 0 to 1",
    history_line("b2", exit_code=[1]): "exit_code is not an exit code",
    history_line("b3", started=5): "started is not an ISO 8601 time",
    history_line("b4", services={"auth@app-1": "up"}): "services is not per service target",
    history_line("b5", duration=float("nan")): "duration is not a number",  # json.dumps writes NaN
    '["a list"]': "not a JSON object",
    "[" * 100_000: "not JSON",  # nesting deeper than the parser's recursion
    history_line("b6", gate="x" * (2 * 1024 * 1024)): "longer than 1 MiB",
}


def test_a_bad_history_line_is_skipped_with_a_warning_and_the_report_still_renders(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    lines = [history_line("good-1"), *BAD_LINES, history_line("good-2")]
    (reports / "history.jsonl").write_text("\n".join(lines) + "\n")
    done, summary = finished_run(tmp_path, reports)
    run_dir = (reports / "latest").resolve()
    html = (run_dir / "report.html").read_text()
    assert 'aria-label="compliance trend"' in html and html.count("<circle ") == 3  # good-1, good-2, this run
    said = warnings_of(done.stderr)
    for number, why in enumerate(BAD_LINES.values(), 2):
        where = f"history.jsonl:{number}: skipped, {why}"
        assert sum(where in w for w in said) == 1, (where, said)
        assert any(where in n for n in summary["notes"]), summary["notes"]
    assert len(said) == len(BAD_LINES)
    # and the run's own line was appended after them
    assert json.loads((reports / "history.jsonl").read_text().splitlines()[-1])["run_id"] == run_dir.name


def test_reading_history_is_capped_and_says_so(tmp_path):
    from acgs_verify.report.history import MAX_READ_BYTES, read_history

    path = tmp_path / "history.jsonl"
    with open(path, "wb") as f:
        f.truncate(MAX_READ_BYTES + 8 * 1024 * 1024)  # a line of 40 MiB of NULs (sparse: no disk)
        f.seek(0, os.SEEK_END)
        f.write(b"\n" + b"x" * (2 * 1024 * 1024) + b"\n" + history_line("good").encode() + b"\n")
    said: list[str] = []
    assert [e["run_id"] for e in read_history(tmp_path, "here", warn=said.append)] == ["good"]
    assert len(said) == 2, said  # the line cut by the window is not read at all: no warning of its own
    assert "only its last 32 MiB were read" in said[0]
    assert said[1].endswith(f"history.jsonl: the line at byte {MAX_READ_BYTES + 8 * 1024 * 1024 + 1}: skipped, "
                            "longer than 1 MiB")


def test_latest_or_a_run_dir_that_links_out_of_the_report_dir_is_not_written_through(tmp_path):
    reports = tmp_path / "reports"
    _, summary = finished_run(tmp_path, reports)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy((reports / "latest" / "summary.json"), elsewhere / "summary.json")
    real_run = (reports / "latest").resolve()
    (reports / "latest").unlink()
    (reports / "latest").symlink_to(elsewhere)
    (reports / "20260101T000000Z-here-compliance-0000").symlink_to(elsewhere)
    for name in ("latest", "20260101T000000Z-here-compliance-0000"):
        res = run_cli("report", name, "--report-dir", str(reports))
        assert res.returncode == 3, res.stdout + res.stderr
        assert res.stderr.count("\n") == 1 and f"{reports / name}:" in res.stderr, res.stderr
        assert "reports are not written" in res.stderr
    assert [p.name for p in elsewhere.iterdir()] == ["summary.json"]
    # the suite's own latest still works, and the next run repoints a planted one (replacing the link itself)
    (reports / "latest").unlink()
    (reports / "latest").symlink_to(real_run.name)
    assert run_cli("report", "latest", "--report-dir", str(reports)).returncode == 0
    (reports / "latest").unlink()
    (reports / "latest").symlink_to(elsewhere)
    finished_run(tmp_path, reports)
    assert (reports / "latest").resolve().parent == reports.resolve()
    assert [p.name for p in elsewhere.iterdir()] == ["summary.json"]


def test_a_directory_named_latest_is_one_line_and_the_verdict_stands(tmp_path):
    reports = tmp_path / "reports"
    (reports / "latest").mkdir(parents=True)
    proc = start_run(tmp_path, reports, "--", "-k", "TLS-01")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{reports / 'latest'}: not repointed" in lines[0], err
    assert out.strip().splitlines()[-1].startswith("ACGS CRITICAL")
    assert (reports / "latest").is_dir() and not (reports / "latest").is_symlink()
    assert len((reports / "history.jsonl").read_text().splitlines()) == 1  # the run is in the history all the same
