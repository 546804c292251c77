"""Interrupted runs: SIGINT or SIGTERM mid-run stops the workers, leaves no child process, writes a
report marked incomplete, keeps `latest` on the last complete run, and exits 3; the check it cut off is
`interrupted` in every file of the run, never passed."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from acgs_verify.sandbox import service_app
from tests.conftest import REPO, run_cli
from tests.junit10 import junit10_violations
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


def connected_to(pids: list[int], port: int) -> bool:
    """One of these processes holds an established TCP connection to port (on this host)."""
    sockets = set()
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        sockets.add(link[len("socket:["):-1])
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()  # sl local remote state ... inode
        if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[3] == "01" and fields[9] in sockets:
            return True
    return False


def wait_until_measuring(proc: subprocess.Popen, marker: str, port: int, log: Path, offset: int,
                         timeout: float = 60) -> None:
    """Until the run (its own processes: `discover` elsewhere on this host asks every service too) is connected to
    the service on `port` and 3 requests have been logged since `offset`: it has collected and is sampling."""

    def measuring() -> bool:
        assert proc.poll() is None, proc.communicate()
        if not connected_to(processes_with_env(marker), port):
            return False
        with log.open("rb") as f:
            f.seek(offset)
            return f.read().count(b"request method=") >= 3

    wait_for(f"the run measuring the service on port {port}", measuring, timeout, 0.05)


def assert_cut_off_is_interrupted(run_dir: Path, service: str) -> None:
    """SVC-06 on `service` (the slowed one, sampling when the signal came) is `interrupted` in every file of the
    run: never passed, no measurement, no success sample, a named JUnit error, an Allure status that is no pass."""
    from prometheus_client.parser import text_string_to_metric_families

    summary = json.loads((run_dir / "summary.json").read_text())
    (cut,) = [c for c in summary["checks"] if c["id"] == "SVC-06" and c["target"].startswith(f"{service}@")]
    assert cut["outcome"] == "interrupted" and cut["measured"] is None and "interrupted" in cut["message"], cut
    name, target = cut["name"], cut["target"]
    t = summary["totals"]
    assert t["interrupted"] >= 1 and t["passed"] == sum(c["outcome"] == "passed" for c in summary["checks"])
    assert t["checks"] + t["not_run"] == summary["planned"]
    assert f"{t['interrupted']} interrupted" in summary["summary"] and "interrupted=" in summary["summary"]

    rows = [line for line in (run_dir / "report.md").read_text().splitlines() if f"| {target} |" in line]
    assert rows and all("| interrupted |" in r and "passed" not in r for r in rows), rows
    html = (run_dir / "report.html").read_text()
    assert re.search(rf">{re.escape(target)}</td><td class=\"interrupted nowrap\">interrupted<", html)
    assert name in html.split('id="interrupted"')[1].split("</p>")[0]  # the banner names it

    junit = run_dir / "junit.xml"
    assert junit10_violations(junit) == []
    cases = list(ET.parse(junit).iter("testcase"))
    assert all(tc.get("name") and tc.get("classname") for tc in cases)  # no nameless case, read as a pass
    (case,) = [tc for tc in cases if tc.get("name", "").startswith(f"SVC-06 {target}: ")]
    error = case.find("error")
    assert error is not None and error.get("type") == "interrupted" and "interrupted" in error.get("message"), \
        ET.tostring(case)
    assert case.get("classname") == "Service health"

    families = {f.name: f for f in text_string_to_metric_families((run_dir / "metrics.prom").read_text())}
    assert target not in {s.labels["target"] for s in families["acgs_verify_check_success"].samples}
    counts = {s.labels["outcome"]: s.value for s in families["acgs_verify_checks"].samples}
    assert counts["interrupted"] == t["interrupted"]

    allure = [json.loads(p.read_text()) for p in (run_dir / "allure-results").glob("*-result.json")]
    (result,) = [r for r in allure if r["name"].endswith(f"[{target}]")]
    assert result["status"] == "unknown" and "interrupted" in result["statusDetails"]["message"]


def start_slowed_run(sandbox, reports: Path, slowed: str, workers: list[str]):
    """`run -k SVC-06` in a session of its own, once it is sampling the slowed service (mid-way through that check):
    (the process, the marker in its and its workers' environment, the slowed service's port)."""
    sandbox.break_fault(f"slow:{slowed}")  # 150 ms a request: 300 samples keep the run busy for 45 s
    log = service_app.log_path(sandbox.dir, service_app.SERVICES[slowed])
    seen = log.stat().st_size
    marker = f"ACGS_TEST_RUN_{uuid.uuid4().hex}"
    env = {**os.environ, marker: "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "acgs_verify.cli", "run", "--profile", str(sandbox.profile_path),
         "--report-dir", str(reports), "--set", "thresholds.latency_samples=300", "--", "-k", "SVC-06", *workers],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    port = service_app.SERVICES[slowed].port + sandbox.port_offset
    wait_until_measuring(proc, marker, port, log, seen)
    return proc, marker, port


@pytest.fixture(scope="module")
def one_complete_run(sandbox, tmp_path_factory):
    """A reports directory holding one complete run (`latest` points at it), for each test to copy."""
    reports = tmp_path_factory.mktemp("complete") / "reports"
    first = run_cli("run", "--profile", str(sandbox.profile_path), "--report-dir", str(reports), "--gate", "smoke")
    assert first.returncode == 0, first.stdout + first.stderr
    return reports


# Each case slows its own service: the run interrupted before leaves requests in flight, which the slowed
# service logs when they end. `group` is Ctrl-C in a terminal: the signal reaches the workers too, and xdist
# reports the check each one was running as crashed.
@pytest.mark.parametrize("sig, workers, slowed, group", [(signal.SIGINT, [], "auth", False),
                                                         (signal.SIGTERM, ["-n", "2"], "constitutional-ai", False),
                                                         (signal.SIGINT, ["-n", "2"], "policy-governance", True)])
def test_interrupt_keeps_latest_and_reports_incomplete(healthy_sandbox, one_complete_run, tmp_path, sig, workers,
                                                       slowed, group):
    reports = tmp_path / "reports"
    shutil.copytree(one_complete_run, reports, symlinks=True)  # `latest` names the run: relative, still valid
    complete_run = os.readlink(reports / "latest")
    assert (reports / "latest" / "summary.json").is_file()

    proc, marker, _ = start_slowed_run(healthy_sandbox, reports, slowed, workers)
    if group:
        os.killpg(proc.pid, sig)
    else:
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
    assert_cut_off_is_interrupted(incomplete, slowed)



def test_a_worker_killed_mid_check_leaves_that_check_interrupted(healthy_sandbox, tmp_path):
    """No signal to the run: the xdist worker sampling the slowed service is killed (as the OOM killer or a
    timeout's kill would). The other checks run on; the one cut off is interrupted and says why, never passed."""
    reports = tmp_path / "reports"
    proc, marker, port = start_slowed_run(healthy_sandbox, reports, "governance-synthesis", ["-n", "2"])

    def sampling_worker() -> int | None:
        found = [pid for pid in processes_with_env(marker) if pid != proc.pid and connected_to([pid], port)]
        return found[0] if found else None

    os.kill(wait_for("the worker sampling the slowed service", sampling_worker, 30, 0.05), signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, out + err
    assert re.match(r"ACGS UNKNOWN - run interrupted after 5 of 6 checks \[1 interrupted", out.strip().splitlines()[-1])
    (run_dir,) = [p for p in reports.iterdir() if p.is_dir() and not p.is_symlink()]
    summary = json.loads((run_dir / "summary.json").read_text())
    (cut,) = [c for c in summary["checks"] if c["outcome"] != "passed"]
    assert cut["target"].startswith("governance-synthesis@") and "its worker died" in cut["message"], cut
    assert_cut_off_is_interrupted(run_dir, "governance-synthesis")
