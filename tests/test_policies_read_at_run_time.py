"""Nothing is read from disk at collection: CC-03 has one target per host's policy folder (`policies@app-1`) and
lists the folder's files when it runs. A file that appears after collection is validated; a folder that cannot be listed
still collects, and CC-03 reports it at run time."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

HASH = "cdd01ef066bc6cf2"
SYSTEM_PYTHON = "/usr/bin/python3.11"  # the venv's interpreter may sit under /root (0700); same ABI


def _profile(tmp_path: Path, policies: Path) -> Path:
    profile = tmp_path / "p.yaml"
    profile.write_text(f"hosts: [{{name: here, roles: [app]}}]\npaths: {{policies: '{policies}'}}\n")
    return profile


class _AddsAPolicyAfterCollection:
    """A plugin of this test: once the items exist, a broken policy file appears in the folder."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.collected: list[str] = []

    def pytest_collection_finish(self, session):
        self.collected = [item.nodeid for item in session.items]
        (self.folder / "late.yaml").write_text("constitutional_hash: [unclosed\n")


def test_a_policy_file_written_after_collection_is_validated(tmp_path, monkeypatch):
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "constitution.yaml").write_text(f"constitutional_hash: {HASH}\n")
    reports = tmp_path / "reports"
    adds = _AddsAPolicyAfterCollection(policies)
    monkeypatch.chdir(REPO)
    code = pytest.main(["checks", "-q", "-p", "no:cacheprovider", "--profile", str(_profile(tmp_path, policies)),
                        "-k", "CC-03", "--report-dir", str(reports)], plugins=[adds])
    assert [n.split("[")[-1] for n in adds.collected] == ["policies@here]"], adds.collected
    (cc03,) = json.loads((reports / "latest" / "summary.json").read_text())["checks"]
    assert code == 2 and cc03["outcome"] == "failed", cc03  # the file the collection never saw
    assert "late.yaml: yaml: YAML syntax error" in cc03["message"], cc03["message"]
    assert "constitution.yaml" not in cc03["measured"]  # only what is wrong is the finding; the rest is evidence


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser") or not Path(SYSTEM_PYTHON).is_file(),
                    reason="needs root, runuser and /usr/bin/python3.11 to run as nobody")
def test_an_unreadable_policy_folder_still_collects_and_cc03_says_so(tmp_path, importable_by_others):
    work = Path(tmp_path)
    for p in (work, *work.parents):  # nobody must reach the profile and the report folder
        p.chmod(p.stat().st_mode | 0o001)
    policies = work / "policies"
    policies.mkdir()
    (policies / "constitution.yaml").write_text(f"constitutional_hash: {HASH}\n")
    policies.chmod(0o700)  # root's: nobody cannot list it
    profile = _profile(work, policies)
    profile.chmod(0o644)
    reports = work / "reports"
    reports.mkdir(mode=0o777)
    reports.chmod(0o777)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp", "LANG": "C.UTF-8",
           "PYTHONPATH": os.pathsep.join(importable_by_others)}
    res = subprocess.run(["runuser", "-u", "nobody", "--", SYSTEM_PYTHON, "-m", "acgs_verify.cli", "run",
                          "--profile", str(profile), "--report-dir", str(reports), "--", "-k", "CC-03",
                          "-p", "no:cacheprovider"],
                         capture_output=True, text=True, env=env, cwd="/tmp", timeout=120)
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    (cc03,) = json.loads((reports / "latest" / "summary.json").read_text())["checks"]
    assert cc03["target"] == "policies@here" and cc03["outcome"] == "failed", cc03
    assert f"no policy file under {policies}: cannot list it: permission denied" in cc03["message"], cc03["message"]
