"""Without --profile, `acgs-verify run` checks the sandbox that is running (its own profile.yaml, at whatever port
offset it was started), and says so; with none running it says how to start one or name a profile, exit 3."""

from __future__ import annotations

import json

from tests.conftest import SHARED_MACHINE, run_cli


def test_run_without_profile_uses_the_running_sandbox_and_says_so(healthy_sandbox, tmp_path):
    """The session sandbox runs at a free offset, never the default 10000: the default ports would be refused."""
    reports = tmp_path / "reports"
    res = run_cli("run", "--report-dir", str(reports), *SHARED_MACHINE, "--", "-k", "SVC-01",
                  env={"ACGS_SANDBOX_DIR": str(healthy_sandbox.dir)}, cwd=tmp_path)
    said = f"acgs-verify: no --profile: using the running sandbox's profile {healthy_sandbox.profile_path}"
    assert said in res.stderr.splitlines(), res.stderr
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-1000:]
    checks = json.loads((reports / "latest" / "summary.json").read_text())["checks"]
    assert checks and all(c["outcome"] == "passed" for c in checks), checks  # at its own ports


def test_run_without_profile_and_no_sandbox_running_says_how_to_start_one(tmp_path):
    for state in ("absent", "down"):
        sandbox_dir = tmp_path / state
        if state == "down":  # a sandbox that was taken down leaves its state behind
            sandbox_dir.mkdir()
            (sandbox_dir / "state.json").write_text(json.dumps({"version": 1, "up": False, "port_offset": 10000}))
        res = run_cli("run", "--report-dir", str(tmp_path / "r"), env={"ACGS_SANDBOX_DIR": str(sandbox_dir)},
                      cwd=tmp_path)
        assert res.returncode == 3, (state, res.stdout[-1000:], res.stderr)
        assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
        line = res.stderr.strip()
        assert "no --profile" in line and "`acgs-verify sandbox up`" in line and "--profile NAME_OR_PATH" in line
        assert str(sandbox_dir) in line, line
        assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())  # no run was started
