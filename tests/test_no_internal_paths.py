"""No report of a run names a path inside the suite's own code: a skip's reason is what the check said, not where
in acgs_verify pytest.skip was raised (junit.xml carried `.../acgs_verify/check.py:145: ` before every skip)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tests.conftest import REPO, SHARED_MACHINE, run_cli

INTERNAL = (str(REPO / "acgs_verify"), "acgs_verify/check.py", "acgs_verify/plugin.py")


def test_no_report_names_an_internal_path(healthy_sandbox, tmp_path):
    # BK-07 skips (the restore drill is opt-in), SVC-05 skips (no systemd in the sandbox)
    res = run_cli("run", "--profile", str(healthy_sandbox.profile_path), "--report-dir", str(tmp_path / "r"),
                  *SHARED_MACHINE, "--", "-k", "BK-07 or SVC-05")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    run_dir = (tmp_path / "r" / "latest").resolve()
    skipped = list(ET.parse(run_dir / "junit.xml").getroot().iter("skipped"))
    assert skipped, "the run was meant to skip checks"
    for element in skipped:
        assert element.text == element.get("message") and element.text.startswith(("BK-07 ", "SVC-05 ")), \
            (element.text, element.attrib)
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(files) > 5
    for path in files:
        text = path.read_text(errors="replace")
        assert not [s for s in INTERNAL if s in text], (path.name, [s for s in INTERNAL if s in text])
