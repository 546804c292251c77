"""The suite's run helper (tests/runs.py): runs in this process are as independent as runs in processes of their
own, and what a run changes in the process is put back."""

from __future__ import annotations

import os
import sys

import yaml

from tests.conftest import run_checks

SVC = ("--", "-k", "SVC-01")


def test_in_process_runs_in_a_row_with_different_profiles_give_independent_results(healthy_sandbox, tmp_path,
                                                                                   closed_port):
    """The sandbox, then a copy with its first host renamed and auth on a refused port, then the sandbox again:
    each run's checks are its own profile's (no parametrization, reach verdict or cached module from the run
    before), and the third run passes what the second failed."""
    profile = yaml.safe_load(healthy_sandbox.profile_path.read_text())
    profile["hosts"][0]["name"] = "app-9"
    next(s for s in profile["services"] if s["name"] == "auth")["port"] = closed_port
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(profile))
    environ, modules = dict(os.environ), set(sys.modules)

    first = run_checks(healthy_sandbox, tmp_path / "r1", *SVC)
    second = run_checks(other, tmp_path / "r2", *SVC)
    third = run_checks(healthy_sandbox, tmp_path / "r3", *SVC)

    assert first.returncode == 0 and third.returncode == 0, first.output + third.output
    assert first.checks.keys() == third.checks.keys() and ("SVC-01", "auth@app-1") in first.checks
    assert second.returncode == 2, second.output
    assert all(target.endswith("@app-9") for _, target in second.checks), second.checks.keys()
    assert second.checks[("SVC-01", "auth@app-9")]["outcome"] in ("failed", "error")
    assert {c["outcome"] for c in third.summary["checks"]} == {"passed"}, third.output
    assert first.summary["run_id"] != third.summary["run_id"]
    # nothing of the runs stayed in the process: not the environment they set, not the checks they imported
    assert dict(os.environ) == environ
    assert not [m for m in set(sys.modules) - modules if "checks" in str(getattr(sys.modules[m], "__file__", ""))]
