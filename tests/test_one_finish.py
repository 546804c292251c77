"""`acgs-verify run`, `acgs-verify merge` and plain `pytest checks --report-dir` end a run through one function
(acgs_verify/finish.py): for the same checks they write the same files and print the same closing lines."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli
from tests.runs import run_pytest

# a local host and a certificate that is not there: TLS-01 (P1) cannot measure at once, no sandbox needed
PROFILE = "hosts: [{name: here, roles: [app]}]\ncertificates: [/nonexistent/cert.pem]\n"


def ending(stdout: str) -> list[str]:
    """The closing lines from "reports: ..." on, with what differs by run alone (run id, duration) taken out."""
    lines = stdout.strip().splitlines()
    start = max(i for i, line in enumerate(lines) if line.startswith("reports: "))
    out = [lines[start].split(" (", 1)[1], *lines[start + 1:]]
    return [line.split(" duration=")[0] for line in out]


def files(run_dir: Path) -> set[str]:
    return {p.name for p in run_dir.iterdir()}


def test_run_merge_and_plain_pytest_end_the_same(tmp_path):
    profile = tmp_path / "p.yaml"
    profile.write_text(PROFILE)
    run = run_cli("run", "--profile", str(profile), "--report-dir", str(tmp_path / "run"), "--", "-k", "TLS-01")
    shard = run_cli("run", "--profile", str(profile), "--report-dir", str(tmp_path / "shard"), "--shard", "1/1",
                    "--run-group", "one", "--", "-k", "TLS-01")
    merged = run_cli("merge", str(tmp_path / "shard" / "latest"), "--report-dir", str(tmp_path / "merged"))
    plain = run_pytest("checks", "-p", "no:cacheprovider", "-q", "--profile", str(profile), "-k", "TLS-01",
                       "--report-dir", str(tmp_path / "plain"), timeout=180)
    assert run.returncode == merged.returncode == plain.returncode == shard.returncode == 2, \
        run.stdout[-2000:] + merged.stdout[-2000:] + plain.stdout[-2000:]
    dirs = {name: (tmp_path / name / "latest").resolve() for name in ("run", "merged", "plain")}
    assert files(dirs["run"]) == files(dirs["merged"]) == files(dirs["plain"]), dirs
    assert {"summary.json", "junit.xml", "report.html", "report.md", "metrics.prom", "allure-results"} <= \
        files(dirs["run"])
    # the same closing lines: where the reports are, the escalation, the summary line (gates.last_line) last
    assert ending(run.stdout) == ending(merged.stdout) == ending(plain.stdout), \
        (run.stdout[-1500:], merged.stdout[-1500:], plain.stdout[-1500:])
    assert ending(run.stdout)[-2:] == ["ESCALATION P1: notify Level 1 on-call engineer within 1 hour",
                                       "ACGS CRITICAL - 1 of 1 checks could not measure (P1: 1) | passed=0 failed=0 "
                                       "errors=1 skipped=0"]
    for name, res in (("run", run), ("merged", merged), ("plain", plain)):
        summary = json.loads((dirs[name] / "summary.json").read_text())
        assert res.stdout.strip().splitlines()[-1] == summary["summary"], name  # printed as recorded
    # a shard's last line says it is one shard, under plain pytest too (which once printed the bare summary line)
    plain_shard = run_pytest("checks", "-p", "no:cacheprovider", "-q", "--profile", str(profile), "-k", "TLS-01",
                             "--report-dir", str(tmp_path / "ps"), "--shard", "1/1", "--run-group", "one", timeout=180)
    assert "[shard 1 of 1 only" in ending(shard.stdout)[-1]
    assert ending(plain_shard.stdout) == ending(shard.stdout), (plain_shard.stdout[-1500:], shard.stdout[-1500:])
