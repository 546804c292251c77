"""The maintenance gate compares with a pre-maintenance run; if that run's own gate was closed, it says so, and
takes it only when --snapshot names it (issue 14, item 5)."""

from __future__ import annotations

import json

from tests.conftest import run_cli

# a local host and a missing certificate: TLS-01 (P1) fails, so the pre-maintenance gate closes; no sandbox needed
PROFILE = "hosts: [{name: here, roles: [app]}]\ncertificates: [/nonexistent/cert.pem]\n"


def test_a_closed_pre_maintenance_gate_is_not_a_silent_baseline(tmp_path):
    profile = tmp_path / "here.yaml"
    profile.write_text(PROFILE)
    reports = tmp_path / "reports"
    common = ("--profile", str(profile), "--report-dir", str(reports))
    pre = run_cli("run", *common, "--gate", "pre-maintenance", "--", "-k", "TLS-01")
    assert pre.returncode == 2, pre.stdout[-2000:] + pre.stderr
    pre_dir = (reports / "latest").resolve()

    implicit = run_cli("run", *common, "--gate", "post-maintenance", "--", "-k", "TLS-01")
    assert implicit.returncode == 3, implicit.stdout[-2000:]
    lines = [line for line in implicit.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "gate was closed" in lines[0] and "--snapshot" in lines[0], implicit.stderr
    assert pre_dir.name in lines[0]

    explicit = run_cli("run", *common, "--gate", "post-maintenance", "--snapshot", str(pre_dir), "--", "-k", "TLS-01")
    assert explicit.returncode == 2, explicit.stdout[-2000:] + explicit.stderr
    last = explicit.stdout.strip().splitlines()[-1]
    assert last.startswith("ACGS CRITICAL") and "baseline's own gate was closed" in last, last
    run_dir = (reports / "latest").resolve()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["comparison"]["baseline_gate_closed"].startswith("ACGS CRITICAL")
    assert any("gate was closed" in note for note in summary["notes"])
    for report in ("report.html", "report.md"):
        assert "gate was closed" in (run_dir / report).read_text(), report
