"""The nightly unit in deploy/ runs with least privilege: systemd's own scoring says so, not a list we keep.

`systemd-analyze security` rates a unit's exposure from 0 (locked down) to 10 (UNSAFE); issue 21 asked for 4.5 or
less. It reads the unit file offline, so no systemd needs to be running (a container has none), only installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import REPO

UNIT = REPO / "deploy" / "systemd" / "acgs-verify-compliance.service"
EXPOSURE_MAX = 4.5


def _analyze(unit) -> subprocess.CompletedProcess:
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed here")
    res = subprocess.run(["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
                         capture_output=True, text=True, timeout=60)
    if "--offline" in res.stderr and "unrecognized" in res.stderr:
        pytest.skip("this systemd-analyze cannot score a unit file offline (systemd 252 or later can)")
    return res


def _exposure(res: subprocess.CompletedProcess) -> float:
    found = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", res.stdout + res.stderr)
    assert found, res.stdout[-2000:] + res.stderr
    return float(found.group(1))


def test_the_compliance_unit_scores_at_most_4_5_exposure():
    exposure = _exposure(_analyze(UNIT))
    assert exposure <= EXPOSURE_MAX, f"systemd-analyze security: {exposure} > {EXPOSURE_MAX}"


def test_the_score_falls_when_the_hardening_is_taken_out(tmp_path):
    """The figure above measures the unit's own settings: the same unit without them scores EXPOSED."""
    lines = UNIT.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("SupplementaryGroups="))
    end = next(i for i, ln in enumerate(lines) if ln.startswith("[Install]"))
    bare = tmp_path / UNIT.name
    bare.write_text("\n".join(lines[:start] + lines[end:]) + "\n")
    assert _exposure(_analyze(bare)) > EXPOSURE_MAX + 3


def test_the_unit_gives_the_checker_no_capability_and_no_way_to_gain_one():
    settings = dict(ln.split("=", 1) for ln in UNIT.read_text().splitlines() if re.match(r"^[A-Z]\w+=", ln))
    assert settings["User"] != "root"
    assert settings["CapabilityBoundingSet"] == "" and settings["AmbientCapabilities"] == ""
    assert settings["NoNewPrivileges"] == "true"
    assert settings["ProtectSystem"] == "strict" and settings["ProtectHome"] == "read-only"
