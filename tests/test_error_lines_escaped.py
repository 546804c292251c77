"""The one line acgs-verify prints when it cannot run, and the lines a gate prints, show an escape sequence and never
let the terminal act on it: a profile's path, a --set value, a field of a profile, a --snapshot path, the summary of
the run compared with and an evidence file's name are chosen by someone else than the operator reading them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import run_cli

ESC = "\x1b]0;owned\x07\x1b[2J\x9b31m\u202e"
RAW = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]")  # anything but the newline ending a line


def _one_escaped_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert not RAW.search(lines[0]), ascii(lines[0])
    assert "\\x1b]0;owned\\x07" in lines[0], ascii(lines[0])
    return lines[0]


@pytest.mark.parametrize("case", ["profile path", "set value", "profile field", "nagios"])
def test_a_could_not_run_line_shows_escape_sequences_escaped(case, tmp_path, write_profile):
    if case == "profile path":
        args = ["run", "--profile", str(tmp_path / f"prod{ESC}.yaml")]
    elif case == "set value":
        path = write_profile("name: p\ncertificates: [/nonexistent.pem]\n")
        args = ["run", "--profile", str(path), "--set", f"thresholds.db_long_query_seconds={ESC}"]
    elif case == "profile field":
        # JSON's escapes are YAML's: the file holds no raw control character, the value does
        path = write_profile(f"name: p\nservices: [{{name: {json.dumps('a' + ESC)}, port: 1}}]\n")
        args = ["run", "--profile", str(path)]
    else:
        args = ["run", "--format", "nagios", "--profile", str(tmp_path / f"prod{ESC}.yaml")]
    res = run_cli(*args, "--report-dir", str(tmp_path / "reports"), timeout=60)
    assert res.returncode == 3, res.stderr
    line = _one_escaped_line(res.stderr)
    assert line.startswith("acgs-verify: error: "), line
    if case == "nagios":
        assert not RAW.search(res.stdout), ascii(res.stdout)


def test_the_gate_lines_show_a_snapshot_path_and_a_baseline_summary_escaped():
    from acgs_verify import gates
    from acgs_verify.profile import Profile
    from acgs_verify.report.snapshot import snapshot_of
    from acgs_verify.results import RunResult

    profile = Profile.model_validate({"name": "p", "hosts": [], "services": [], "databases": [], "redis": []})
    before = RunResult(run_id="r0", profile="p", gate="pre-maintenance", started="2026-01-01T00:00:00Z")
    result = RunResult(run_id="r1", profile="p", gate="post-maintenance", started="2026-01-01T01:00:00Z")
    plan = gates.GatePlan("post-maintenance", snapshot_path=Path(f"/reports/r0{ESC}/snapshot.json"),
                          snapshot=snapshot_of(before), baseline_closed=f"ACGS CRITICAL {ESC} | failed=1")
    lines = gates.finish(result, plan, profile)
    assert len(lines) == 3, lines
    for line in lines + result.notes:
        assert not RAW.search(line), ascii(line)
    assert "\\x1b]0;owned\\x07" in lines[0] and "\\x1b[2J" in lines[1], lines


def test_the_evidence_lines_show_a_file_name_escaped(tmp_path):
    """The gate's evidence note names the first file cut to its tail; the not-copied notes name every file."""
    from acgs_verify import gates
    from acgs_verify.profile import Profile
    from acgs_verify.results import RunResult

    logs = tmp_path / f"logs{ESC}"
    logs.mkdir()
    (logs / "big.log").write_text("line\n" * 2000)
    profile = Profile.model_validate({
        "name": "p", "hosts": [{"name": "h1", "backend": "local", "roles": ["app"]}], "services": [],
        "paths": {"logs": str(logs), "app_root": str(tmp_path), "alerts_log": None,
                  "kernel_log": str(logs / "big.log")},
        "evidence": {"max_file_mb": 0.001}})
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = RunResult(run_id="r1", profile="p", gate="security-incident", started="2026-01-01T01:00:00Z")
    lines = gates._preserve_evidence(result, profile, run_dir)
    assert lines and result.notes, (lines, result.notes)
    for line in lines + result.notes:
        assert not RAW.search(line), ascii(line)
    assert any("\\x1b]0;owned\\x07" in line for line in lines + result.notes), ascii(lines + result.notes)
