"""--gate security-incident (runbook, Security Incident Response): SEC-01..06, CC-01, CC-02, CC-05 and SYS-05, and a
read-only, size-capped copy of the logs those checks read, from every host (the ssh host ops-1 included), into the
run's evidence/ with a MANIFEST and a SHA256SUMS that `sha256sum -c` verifies."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from acgs_verify.catalog import GATES
from acgs_verify.sandbox.components.sshd import sshd_binary
from tests.conftest import SHARED_MACHINE, run_cli

GATE_IDS = {"SEC-01", "SEC-02", "SEC-03", "SEC-04", "SEC-05", "SEC-06", "CC-01", "CC-02", "CC-05", "SYS-05"}
HAS_SSHD = sshd_binary() is not None
BREACH = "Security breach indicator: audit_logs rows changed outside the API"


def _verify(evidence: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=evidence, capture_output=True, text=True, timeout=60)


def _files_under(root: Path) -> dict[str, int]:
    """Every file under root with its inode: a copy written there would show as a new entry."""
    return {str(p): p.stat().st_ino for p in root.rglob("*") if p.is_file()}


def _manifest_rows(evidence: Path) -> list[list[str]]:
    rows = []
    for line in (evidence / "MANIFEST").read_text().splitlines():
        if line and not line.startswith("#") and line.count("\t") == 8:
            rows.append(line.split("\t"))
    return rows


def test_the_gate_runs_exactly_the_runbooks_checks_and_the_cli_names_it():
    assert set(GATES["security-incident"]["ids"]) == GATE_IDS
    res = run_cli("run", "--help")
    assert "security-incident" in re.sub(r"-\s+", "-", res.stdout)  # argparse may wrap the line at the hyphen


def test_nothing_to_copy_closes_the_gate(write_profile, tmp_path):
    """Saw nothing: no log exists where the profile says; the gate does not pass and says what it could not copy."""
    empty = tmp_path / "logs"
    empty.mkdir()
    path = write_profile(f"hosts: [{{name: h}}]\npaths: {{logs: {empty}, kernel_log: {tmp_path}/kern.log, "
                         f"alerts_log: null, app_root: {tmp_path}}}\n")
    res = run_cli("run", "--profile", str(path), "--report-dir", str(tmp_path / "r"), "--gate", "security-incident")
    assert res.returncode == 2, res.stdout + res.stderr
    summary = json.loads((tmp_path / "r" / "latest" / "summary.json").read_text())
    assert "evidence: no log could be copied from any host (see the notes)" in summary["gate_failures"]
    assert any(f"h:{empty}/*.log: no readable file" in n for n in summary["notes"]), summary["notes"]
    evidence = tmp_path / "r" / "latest" / "evidence"
    assert _verify(evidence).returncode == 0  # the MANIFEST alone, saying what was not copied
    assert f"h:{tmp_path}/kern.log: no readable file (read by SYS-05)" in (evidence / "MANIFEST").read_text()


@pytest.fixture(scope="module")
def incident(sandbox, tmp_path_factory):
    """A run of the gate with a breach indicator in the security log."""
    reports = tmp_path_factory.mktemp("reports")
    logs = sandbox.dir / "var" / "log"
    sandbox.break_fault("breach-indicator")
    try:
        before = _files_under(logs)
        res = run_cli("run", "--profile", str(sandbox.profile_path), "--report-dir", str(reports),
                      "--gate", "security-incident", *SHARED_MACHINE)
        after = _files_under(logs)
        run_dir = (reports / "latest").resolve()
        # the sources as they are now: healing the fault rewrites the security log
        now = {r[1]: Path(r[1]).read_bytes() for r in _manifest_rows(run_dir / "evidence")}
    finally:
        sandbox.heal_fault("breach-indicator")
    return res, run_dir, before, after, now


def test_incident_run_fails_sec06_and_escalates_p0(incident):
    res, run_dir, *_ = incident
    assert res.returncode == 2, res.stdout + res.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {c["id"] for c in summary["checks"]} == GATE_IDS
    assert {c["name"] for c in summary["checks"] if c["outcome"] == "failed"} >= {"SEC-06[app-1]"}
    assert summary["escalation"]["line"] == "P0: notify Level 1 on-call engineer within 15 minutes"
    assert res.stdout.strip().splitlines()[-2] == f"ESCALATION {summary['escalation']['line']}"


def test_evidence_verifies_with_sha256sum_and_holds_the_breach_line(incident):
    res, run_dir, *_ = incident
    evidence = run_dir / "evidence"
    check = _verify(evidence)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "MANIFEST: OK" in check.stdout
    rows = _manifest_rows(evidence)
    hosts = {r[0] for r in rows}
    assert "app-1" in hosts and (not HAS_SSHD or "ops-1" in hosts), hosts
    security = [r for r in rows if r[1].endswith("/security.log")]
    assert security and all(BREACH in (evidence / r[0] / r[1].lstrip("/")).read_text() for r in security)
    assert any(r[1].endswith("kern.log") and "SYS-05" in r[7] for r in rows)
    assert any("CC-01, CC-02 (auth)" in r[7] for r in rows)
    manifest = (evidence / "MANIFEST").read_text()
    assert "copied_at: 20" in manifest and all(r[5].startswith("20") for r in rows)
    assert all(r[8] == "complete" for r in rows)  # far below the default caps
    assert "evidence: " in res.stdout and "copied at" in res.stdout


def test_evidence_copies_are_the_sources_bytes_and_nothing_was_written_on_the_target(incident):
    _, run_dir, before, after, now = incident
    evidence = run_dir / "evidence"
    for host, path, size, _, copied, *_ in _manifest_rows(evidence):
        data = (evidence / host / path.lstrip("/")).read_bytes()
        assert len(data) == int(copied) == int(size)
        assert now[path].startswith(data)  # logs only grow; the sandbox's hosts share one disk
    assert set(after) == set(before)  # no copy was made beside the logs (the runbook's cp -r would)


def test_caps_keep_each_files_tail_and_name_the_cap(sandbox, incident, tmp_path):
    # a total cap of about half of what the per-file cap lets through, whatever the number of hosts and logs (the
    # incident run's MANIFEST lists them), so the copy stops at it half-way; thousandths of a MB, as a user writes
    file_cap = int(0.001 * 1024 * 1024)
    through = sum(min(int(r[2]), file_cap) for r in _manifest_rows(incident[1] / "evidence"))
    thousandths = min(100, int(through / 2 / (0.001 * 1024 * 1024)))
    assert thousandths >= 1, f"the logs hold {through} bytes within the per-file cap: too few to show a total cap"
    total_mb = thousandths / 1000
    reports = tmp_path / "r"
    res = run_cli("run", "--profile", str(sandbox.profile_path), "--report-dir", str(reports),
                  "--gate", "security-incident", "--set", "evidence.max_file_mb=0.001",
                  "--set", f"evidence.max_total_mb={total_mb:g}", *SHARED_MACHINE)
    assert res.returncode in (0, 1, 2), res.stdout + res.stderr
    evidence = (reports / "latest").resolve() / "evidence"
    assert _verify(evidence).returncode == 0
    rows = _manifest_rows(evidence)
    cut = [r for r in rows if r[8] != "complete"]
    by_file = "by the cap per file, 0.001 MB"
    assert cut and all(by_file in r[8] or f"by the total cap, {total_mb:g} MB" in r[8] for r in cut)
    for host, path, size, _, copied, *_, how in cut:
        data = (evidence / host / path.lstrip("/")).read_bytes()
        assert len(data) == int(copied) <= file_cap and int(copied) < int(size)
        assert by_file not in how or file_cap < int(size)
        assert data in Path(path).read_bytes()  # the file's tail at the time of the copy
    assert sum(int(r[4]) for r in rows) <= int(total_mb * 1024 * 1024)
    manifest = (evidence / "MANIFEST").read_text()
    assert f"the total cap of {total_mb:g} MB was reached" in manifest
    summary = json.loads((reports / "latest" / "summary.json").read_text())
    assert summary["evidence"]["cut"] and summary["evidence"]["max_file_bytes"] == file_cap
    assert os.path.isfile(evidence / "SHA256SUMS")


def test_planted_links_in_the_sandbox_logs_are_refused_on_app_1_and_ops_1(sandbox, tmp_path):
    """The attack of issue 21 on the sandbox itself: logs/x.log -> a shadow-like file, logs/y.log -> the profile's
    secret file (production.env), logs/z.log -> /etc/shadow, on the local host app-1 and the ssh host ops-1: each
    is one line saying it was refused and why, and no byte of either secret is in any file of the run."""
    from acgs_verify.profile import load_profile

    profile = load_profile(str(sandbox.profile_path))
    logs, secret = Path(profile.paths.logs), Path(profile.security.secret_files[0])
    shadow_like = tmp_path / "shadow"
    shadow_like.write_text("root:$6$SANDBOX-SHADOW-LIKE-5eed:19000:0:99999:7:::\n")
    planted = {"x.log": shadow_like, "y.log": secret, "z.log": Path("/etc/shadow")}
    secrets = [shadow_like.read_bytes().strip(), secret.read_bytes().strip()]
    try:
        for name, target in planted.items():
            (logs / name).symlink_to(target)
        reports = tmp_path / "r"
        res = run_cli("run", "--profile", str(sandbox.profile_path), "--report-dir", str(reports),
                      "--gate", "security-incident", *SHARED_MACHINE)
    finally:
        for name in planted:
            (logs / name).unlink(missing_ok=True)
    assert res.returncode in (0, 1, 2), res.stdout + res.stderr
    run_dir = (reports / "latest").resolve()
    notes = json.loads((run_dir / "summary.json").read_text())["notes"]
    for host in ["app-1", "ops-1"] if HAS_SSHD else ["app-1"]:
        for name, target in planted.items():
            line = (f"evidence not copied: {host}:{logs / name}: refused: a symlink (to {target}): evidence never "
                    "follows one")
            assert sum(n.startswith(line) for n in notes) == 1, (line, notes)
    for p in run_dir.rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            assert not any(s in data for s in secrets), p
    assert not any(s.decode() in res.stdout + res.stderr for s in secrets)
    evidence = run_dir / "evidence"
    assert _verify(evidence).returncode == 0
    for p in [evidence, *evidence.rglob("*")]:
        assert (p.stat().st_mode & 0o777) == (0o700 if p.is_dir() else 0o600), p
