"""The catalog and the design live in the repo: every ID has an evidence rule, docs/checks.md is what
`acgs-verify catalog --markdown` prints now, and nothing users get cites files they do not have."""

from __future__ import annotations

import re

from acgs_verify.catalog import CATALOG, EVIDENCE
from acgs_verify.catalog_doc import render_markdown, threshold_keys
from tests.conftest import REPO, run_cli

REGENERATE = ".venv/bin/acgs-verify catalog --markdown > docs/checks.md"


def test_every_catalog_id_has_an_evidence_rule():
    missing = [i for i in CATALOG if not EVIDENCE.get(i, "").strip()]
    assert not missing, f"catalog IDs without an evidence rule in catalog.EVIDENCE: {missing}"
    for check_id, entry in CATALOG.items():
        assert entry.evidence == EVIDENCE[check_id]
        assert "\n" not in entry.evidence and len(entry.evidence) < 400, check_id


def test_checks_md_is_not_stale():
    committed = (REPO / "docs" / "checks.md").read_text()
    assert committed == render_markdown(REPO / "checks"), f"docs/checks.md is stale: run `{REGENERATE}`"


def test_catalog_markdown_prints_every_id_with_its_evidence_and_next_step():
    res = run_cli("catalog", "--markdown")
    assert res.returncode == 0, res.stderr
    assert res.stdout == (REPO / "docs" / "checks.md").read_text()
    for check_id, entry in CATALOG.items():
        block = res.stdout.split(f"\n### {check_id}\n", 1)[1].split("\n### ", 1)[0]
        for part in (entry.severity, entry.title, entry.target, entry.evidence, entry.next_step, entry.runbook):
            assert part in block, (check_id, part)


def test_threshold_keys_are_read_from_the_checks_and_their_helpers():
    keys = threshold_keys(REPO / "checks")
    assert keys["SVC-06"] == ["health_timeout_seconds", "latency_noise_floor_ms", "latency_p99_fail_ms",
                              "latency_p99_warn_ms", "latency_samples"]
    assert keys["TLS-01"] == ["cert_fail_days", "cert_warn_days"]  # through the module's _expiry helper
    assert "log_tail_lines" in keys["SEC-06"]  # through _security_lines


def test_nothing_users_get_cites_files_they_do_not_have():
    """CHECKS.md, DESIGN.md and shared/... exist beside the source tree only; users have docs/."""
    stale = re.compile(r"(?<!docs/)\b(CHECKS\.md|DESIGN\.md)|shared/runbook")
    found = []
    for folder in ("acgs_verify", "checks", "profiles"):
        for path in sorted((REPO / folder).rglob("*")):
            if path.suffix in (".py", ".yaml", ".yml", ".j2", ".md") and path.is_file():
                for n, line in enumerate(path.read_text().splitlines(), 1):
                    if stale.search(line):
                        found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    for n, line in enumerate((REPO / "README.md").read_text().splitlines(), 1):
        if stale.search(line):
            found.append(f"README.md:{n}: {line.strip()}")
    assert not found, "\n".join(found)
    assert (REPO / "docs" / "design.md").is_file()
