"""Whole runs against the sandbox for the host layer: each system, security and monitoring fault fails exactly its
checks on the right hosts; a host that is down costs one connect timeout; SYS checks report this machine's numbers;
SVC-03/04 and DB-02 work over ssh; xdist keeps a host's checks together."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from acgs_verify.pgbin import server_bindir
from acgs_verify.sandbox.components.sshd import sshd_binary
from tests.conftest import run_checks
from tests.fault_runs import FaultBatches
from tests.hostile import accepted
from tests.servers import server, silent_listener

HAS_SSHD = sshd_binary() is not None
OPS = "ops-1"
NODE_CHECKS = ("SYS-01", "SYS-02", "SYS-03", "SYS-05", "SEC-03", "SEC-04", "SEC-06", "MON-01")
needs_sshd = pytest.mark.skipif(not HAS_SSHD, reason="needs openssh-server (.ci/run installs it)")


def failed(summary) -> set[tuple[str, str]]:
    return {(c["id"], c["target"]) for c in summary["checks"] if c["outcome"] in ("failed", "error")}


def both(check_id: str) -> set[tuple[str, str]]:
    """Checks of files every host of the sandbox reads (one machine): they fail on app-1 and on the ssh host."""
    return {(check_id, "app-1")} | ({(check_id, OPS)} if HAS_SSHD else set())


def expected(fault: str, sandbox) -> set[tuple[str, str]]:
    root = sandbox.dir / "home/acgs/ACGS"
    return {
        "world-writable": {("SEC-01", "app-1")},
        "secret-readable": {("SEC-02", f"{root}/config/production.env@app-1")},
        "unknown-user": both("SEC-04"),
        "oom-kill": both("SYS-05"),
        "failed-logins": both("SEC-03"),
        "breach-indicator": both("SEC-06"),
        "critical-alert": both("MON-01"),
        "stale-key": {("SEC-05", "app@app-1")},
        "process-gone:auth": {("SVC-03", "auth@app-1")},
        # ops-1's own certificate file is read over ssh too (sandbox/components/tls.py)
        "host-down": {(c, OPS) for c in NODE_CHECKS} | {
            ("SYS-04", f"{OPS}:/"), ("TLS-01", f"{sandbox.dir}/hosts/{OPS}/etc/ssl/acgs/cert.pem@{OPS}")},
    }[fault]


FAULTS = ["world-writable", "secret-readable", "unknown-user", "oom-kill", "failed-logins", "breach-indicator",
          "critical-alert", "stale-key", "process-gone:auth",
          pytest.param("host-down", marks=needs_sshd)]


# each on a different check and file: one run; the ssh host down fails every check on it: a run of its own
BATCHES = FaultBatches([
    ("world-writable", "secret-readable", "unknown-user", "oom-kill", "failed-logins", "breach-indicator",
     "critical-alert", "stale-key", "process-gone:auth"),
    ("host-down",),
], [p if isinstance(p, str) else p.values[0] for p in FAULTS], expected=expected)


@pytest.mark.parametrize("fault", FAULTS)
def test_each_host_fault_fails_exactly_its_checks(healthy_sandbox, tmp_path, fault):
    batch = BATCHES.run(healthy_sandbox, fault, lambda *args: run_checks(healthy_sandbox.profile_path,
                                                                         tmp_path / "reports", *args))
    batch.assert_fails_exactly(fault)
    res, summary = batch.res, batch.summary
    for c in summary["checks"]:
        if c["outcome"] == "failed":
            assert "Next:" in c["message"] and c["target"] in c["message"]
    if fault == "host-down":
        assert not [c for c in summary["checks"] if c["outcome"] == "failed"]  # nothing measured wrong
        for c in summary["checks"]:
            if c["outcome"] == "error":  # could not measure, and says why
                assert "host unreachable: ssh: connect to host 127.0.0.2" in c["message"], c["message"]
        # SYS-06 times TCP connects from the checker and needs no ssh: the machine still answers, so it passes
        assert {c["id"] for c in summary["checks"] if c["target"] == OPS and c["outcome"] == "passed"} == {"SYS-06"}
        h = summary["hosts"][OPS]
        assert (h["error"], h["failed"], h["passed"]) == (len(NODE_CHECKS) + 2, 0, 1)
        # the terminal's per-host line
        assert f"{OPS} 1 passed 0 failed {len(NODE_CHECKS) + 2} could not measure" in res.stdout
    if fault == "world-writable":
        (c,) = [c for c in summary["checks"] if c["outcome"] == "failed" and c["id"] == "SEC-01"]
        assert c["value"]["count"] == 1 and c["value"]["first"][0].endswith("constitutional-ai/app/main.py")


def test_healthy_sandbox_runs_every_host_check_on_every_host(healthy_sandbox, tmp_path):
    res = run_checks(healthy_sandbox.profile_path, tmp_path / "reports", "--", "-k", "system or security or monitoring")
    summary = res.summary
    assert res.returncode == 0, res.stdout[-3000:]
    names = {(c["id"], c["target"]) for c in summary["checks"]}
    hosts = ["app-1", OPS] if HAS_SSHD else ["app-1"]
    for host in hosts:
        assert {(c, host) for c in NODE_CHECKS} | {("SYS-04", f"{host}:/")} <= names
    assert {("SEC-01", "app-1"), ("SEC-05", "app@app-1"), ("SEC-05", "db@app-1")} <= names
    assert sum(c["id"] == "SEC-02" for c in summary["checks"]) == 3
    assert set(summary["hosts"]) == set(hosts)
    assert all(h["failed"] == 0 for h in summary["hosts"].values())


def test_sys_checks_report_this_machines_numbers(healthy_sandbox, tmp_path):
    res = run_checks(healthy_sandbox.profile_path, tmp_path / "reports", "--set",
                     "thresholds.memory_percent_max=0.001", "--set", "thresholds.disk_percent_max=0.001", "--set",
                     "thresholds.cpu_percent_max=0.001", "--", "-k", "memory or disk or cpu or load", shared=False)
    summary = res.summary
    hosts = ["app-1", OPS] if HAS_SSHD else ["app-1"]
    assert failed(summary) == {(c, h) for c in ("SYS-02", "SYS-03") for h in hosts} | {
        ("SYS-04", f"{h}:/") for h in hosts}, res.stdout[-2000:]
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    total, avail = (int(meminfo[k].split()[0]) for k in ("MemTotal", "MemAvailable"))
    st = os.statvfs("/")
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    disk_pct = 100 * used / (used + st.f_bavail * st.f_frsize)
    for c in summary["checks"]:
        if c["id"] == "SYS-03":
            assert abs(c["value"] - 100 * (total - avail) / total) < 5, c  # memory moves a little between reads
            assert f"of {total // 1024} MiB" in c["message"]
        if c["id"] == "SYS-04":
            assert abs(c["value"] - disk_pct) < 1, c
        if c["id"] == "SYS-01":
            assert c["outcome"] == "passed" and abs(c["value"] - os.getloadavg()[0]) < 4, c


@pytest.fixture
def black_hole():
    """A TCP listener on 127.0.0.4 that never speaks: ssh waits its whole connect timeout."""
    with silent_listener("127.0.0.4") as s:
        yield s


@pytest.fixture(scope="module")
def dark_run(sandbox, tmp_path_factory):
    """One run of the sandbox's profile with a host beside it that never answers (dark-1, a TCP listener on
    127.0.0.4 that never speaks: ssh waits its whole connect timeout): (connections tried, CompletedProcess,
    summary, run directory)."""
    if not HAS_SSHD:
        pytest.skip("needs openssh-server (.ci/run installs it)")
    tmp_path = tmp_path_factory.mktemp("dark")
    with silent_listener("127.0.0.4") as black_hole:
        data = yaml.safe_load(sandbox.profile_path.read_text())
        data.setdefault("thresholds", {})["connect_timeout_seconds"] = 2
        ops = next(h for h in data["hosts"] if h["name"] == OPS)
        data["hosts"].append({**ops, "name": "dark-1", "address": "127.0.0.4",
                              "port": black_hole.getsockname()[1]})
        dark = tmp_path / "dark.yaml"
        dark.write_text(yaml.safe_dump(data))
        # not SYS-06: its TCP connects would reach the black hole too and be counted as attempts
        res = run_checks(dark, tmp_path / "reports", "--", "-k",
                         "(system or security or monitoring) and not network_latency")
        summary = res.summary
        tried = accepted(black_hole)
    assert summary is not None, res.stdout[-3000:] + res.stderr[-3000:]
    latest = tmp_path / "reports" / "latest"
    yield tried, res, summary, latest.resolve()


def _dark(summary) -> list[dict]:
    return [c for c in summary["checks"] if c["target"].startswith("dark-1")]


@needs_sshd
def test_a_host_that_never_answers_adds_one_connect_timeout_to_the_run(dark_run):
    tried, res, with_dark, _ = dark_run
    dark_checks = _dark(with_dark)
    assert len(dark_checks) == len(NODE_CHECKS) + 1, sorted(c["id"] for c in dark_checks)
    for c in dark_checks:  # nothing was measured there: could not measure, not a failure
        # found once, by the ssh handshake, then cited: "dark-1 unreachable: 127.0.0.4:PORT did not answer ..."
        assert c["outcome"] == "error" and "dark-1 unreachable: 127.0.0.4:" in c["message"] \
            and "timed out" in c["message"], c
        assert c["unreachable"] == "dark-1", c
    assert failed(with_dark) == {(c["id"], c["target"]) for c in dark_checks}, res.stdout[-2000:]
    # 9 checks on that host; one connection tried, so one timeout (2 s) waited for all of them
    assert tried == 1


@needs_sshd
def test_an_unreachable_host_is_error_in_every_output_with_its_reach_step_and_leads_the_reports(dark_run):
    import xml.etree.ElementTree as ET

    from prometheus_client.parser import text_string_to_metric_families

    _, res, summary, run_dir = dark_run
    dark = _dark(summary)
    n = len(dark)
    t = summary["totals"]
    assert (t["failed"], t["errors"]) == (0, n) and summary["exit_code"] == 2  # no pass without evidence
    assert summary["hosts"]["dark-1"] == {"checks": n, "passed": 0, "failed": 0, "error": n, "skipped": 0,
                                          "interrupted": 0}
    for c in dark:  # the step restores the connection: never the runbook's repair for a wrong value
        assert c["next_step"].startswith("restore the connection to dark-1, then run again: `ssh -v -p "), c
        assert c["next_step"].endswith(" 127.0.0.4`") and c["message"].endswith(f"Next: {c['next_step']}"), c
    repairs = {c["next_step"] for c in summary["checks"] if c["outcome"] == "passed"}

    # the last line: could not measure, counted apart from failed
    last = res.stdout.strip().splitlines()[-1]
    assert last == summary["summary"]
    assert last.startswith(f"ACGS CRITICAL - {n} of ") and "checks could not measure (" in last, last
    assert "dark-1 unreachable)" in last and f" failed=0 errors={n} " in last, last

    # junit.xml: <error>, not <failure>
    cases = {tc.get("name").split(": ", 1)[0]: tc for tc in ET.parse(run_dir / "junit.xml").getroot().iter("testcase")}
    for c in dark:
        tc = cases[f"{c['id']} {c['target']}"]
        assert tc.find("failure") is None and tc.find("error").get("type") == "error", ET.tostring(tc)

    # metrics.prom: not a success, and said to be could-not-measure
    samples = [s for f in text_string_to_metric_families((run_dir / "metrics.prom").read_text()) for s in f.samples]
    dark_pairs = {(c["id"], c["target"]) for c in dark}
    success = {(s.labels["id"], s.labels["target"]): s.value for s in samples if s.name == "acgs_verify_check_success"}
    error = {(s.labels["id"], s.labels["target"]) for s in samples if s.name == "acgs_verify_check_error"}
    assert {p: success[p] for p in dark_pairs} == dict.fromkeys(dark_pairs, 0) and error == dark_pairs
    counts = {s.labels["outcome"]: s.value for s in samples if s.name == "acgs_verify_checks"}
    assert (counts["error"], counts["failed"]) == (n, 0)

    # the terminal's findings and report.md open with one block for the host, its checks folded into it
    findings = res.stdout.split("acgs-verify findings", 1)[1].splitlines()[1:]
    assert findings[0].startswith(f"UNREACHABLE dark-1: {n} checks on dark-1 could not measure ("), findings[0]
    assert "ssh -v" in findings[0]
    assert not [line for line in findings if "dark-1" in line and line.startswith(("FAIL", "ERROR"))], findings
    md = (run_dir / "report.md").read_text()
    sections = [line for line in md.splitlines() if line.startswith("## ")]
    assert sections[0] == "## Unreachable: dark-1", sections
    assert f"**{n} checks on dark-1 could not measure (" in md and "**Reach step:** restore the connection" in md
    html = (run_dir / "report.html").read_text()
    assert html.index('class="unreachable"') < html.index('id="failures"')
    assert "Failures (0)" in html and "## Failures (0)" in md
    for text in (md, html):  # no report offers a runbook repair for a check that could not measure
        catalog_steps = {c["next_step"] for c in summary["checks"] if c["id"] in {d["id"] for d in dark}}
        assert not [s for s in repairs & catalog_steps if s in text], text[:2000]


@needs_sshd
def test_parallel_workers_give_the_same_results_per_host(healthy_sandbox, tmp_path):
    serial = run_checks(healthy_sandbox.profile_path, tmp_path / "reports", "--", "-k",
                        "system or security or services").summary
    res = run_checks(healthy_sandbox.profile_path, tmp_path / "reports", "--", "-k", "system or security or services",
                     "-n", "2", "--dist", "loadgroup")
    parallel = res.summary
    assert res.returncode == 0, res.stdout[-2000:]
    assert {(c["name"], c["outcome"]) for c in parallel["checks"]} == {(c["name"], c["outcome"])
                                                                       for c in serial["checks"]}
    assert parallel["hosts"] == serial["hosts"]


# --------------------------------------------------------------------- SVC-03..05 and DB-02 over ssh


@pytest.fixture(scope="module")
def postgres():
    """A real PostgreSQL server on 127.0.0.1 (as the postgres user when run as root), for DB-02: started as
    `postgres -D DATADIR` (the process DB-02 looks for) and accepting a session when the tests start."""
    import psycopg

    try:
        bindir = Path(server_bindir())
    except LookupError:
        pytest.skip("needs PostgreSQL (.ci/run installs it)")
    datadir = Path(tempfile.mkdtemp(prefix="acgs-pg-", dir="/tmp"))
    user = "postgres" if os.geteuid() == 0 else None
    if user:
        shutil.chown(datadir, user)
    subprocess.run([str(bindir / "initdb"), "-D", str(datadir), "-A", "trust", "-U", "acgs"], user=user,
                   check=True, capture_output=True, timeout=120)

    def argv(port: int) -> list[str]:
        return [str(bindir / "postgres"), "-D", str(datadir), "-p", str(port), "-k", str(datadir),
                "-c", "listen_addresses=127.0.0.1"]

    def accepts(port: int) -> bool:
        with contextlib.suppress(psycopg.OperationalError), psycopg.connect(
                host="127.0.0.1", port=port, user="acgs", dbname="postgres", connect_timeout=2):
            return True
        return False

    try:
        with server("postgres", argv, accepts, datadir / "server.log", 30, user=user) as (port, proc):
            yield {"port": port, "datadir": str(datadir), "proc": proc}
    finally:
        shutil.rmtree(datadir, ignore_errors=True)


@needs_sshd
def test_process_port_unit_and_postgres_checks_run_over_ssh(healthy_sandbox, tmp_path, postgres):
    data = yaml.safe_load(healthy_sandbox.profile_path.read_text())
    for h in data["hosts"]:
        h["roles"] = ["db"] if h["name"] == "app-1" else ["app", "db"]  # the services are checked over ssh
    data["databases"] = [{"name": "primary", "dsn": f"postgresql://acgs@127.0.0.1:{postgres['port']}/postgres",
                          "process": rf"postgres -D {postgres['datadir']}( |$)"}]
    profile = tmp_path / "remote.yaml"
    profile.write_text(yaml.safe_dump(data))
    k = ("--", "-k", "process_is_running or port_is_listening or systemd_unit or postgresql_server")
    healthy_sandbox.break_fault("process-gone:auth")
    res = run_checks(profile, tmp_path / "reports", *k)
    summary = res.summary
    assert failed(summary) == {("SVC-03", f"auth@{OPS}")}, res.stdout[-2000:]
    ran = {(c["id"], c["target"], c["outcome"]) for c in summary["checks"]}
    assert ("SVC-04", f"auth@{OPS}", "passed") in ran  # renamed, but the port is still open
    assert ("DB-02", f"primary@{OPS}", "passed") in ran and ("DB-02", "primary@app-1", "passed") in ran
    assert {c["outcome"] for c in summary["checks"] if c["id"] == "SVC-05"} == {"skipped"}  # no systemd here
    assert len([c for c in summary["checks"] if c["id"] == "SVC-03"]) == 6
    postgres["proc"].terminate()
    postgres["proc"].wait(timeout=30)
    healthy_sandbox.heal_fault("process-gone:auth")
    res = run_checks(profile, tmp_path / "reports", *k)
    summary = res.summary
    assert failed(summary) == {("DB-02", f"primary@{OPS}"), ("DB-02", "primary@app-1")}, res.stdout[-2000:]
    assert "nothing listens on TCP port" in next(c["message"] for c in summary["checks"] if c["id"] == "DB-02")
