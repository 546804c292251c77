"""A gate imports only the check modules of its sections (plugin.pytest_ignore_collect): it collects exactly the
checks that the whole catalog's collection would keep for it, and every check sits in its section's module, which is
what makes skipping a module by its name safe."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from acgs_verify.catalog import CATALOG, GATES, SECTIONS
from tests.runs import run_pytest

REPO = Path(__file__).resolve().parent.parent
PROFILE = """\
hosts: [{name: app-1, address: 127.0.0.1, backend: local, roles: [app, db, cache]}]
services: [{name: auth, port: 18016, log: /nonexistent/auth.log}]
databases: [{name: primary, dsn: "postgresql://acgs@127.0.0.1:15432/acgs"}]
redis: [{name: cache, url: "redis://127.0.0.1:16379/0"}]
certificates: [/nonexistent/cert.pem]
tls_endpoints: ["https://127.0.0.1:18443"]
"""


def _collected(profile: Path, gate: str) -> list[str]:
    out = run_pytest("checks", "-p", "acgs_verify.plugin", "-p", "no:cacheprovider", "--profile", str(profile),
                     "--gate", gate, "--collect-only", "-q", env={"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return sorted(line for line in out.stdout.splitlines() if line.startswith("checks/"))


def _check_ids() -> dict[str, str]:
    """nodeid prefix `checks/test_x.py::test_y` -> its runbook ID, from the check modules' own marks."""
    sys.path.insert(0, str(REPO / "checks"))
    try:
        ids = {}
        for path in sorted((REPO / "checks").glob("test_*.py")):
            module = importlib.import_module(path.stem)
            for name, fn in vars(module).items():
                for mark in getattr(fn, "pytestmark", []):
                    if mark.name == "runbook":
                        ids[f"checks/{path.name}::{name}"] = mark.args[0]
        return ids
    finally:
        sys.path.remove(str(REPO / "checks"))


def test_every_check_sits_in_its_sections_module():
    ids = _check_ids()
    assert len(ids) > 50  # the marks were found
    misplaced = {n: i for n, i in ids.items() if n.split("::")[0] != f"checks/test_{CATALOG[i].section}.py"}
    assert not misplaced
    assert {f"test_{s}.py" for s in SECTIONS} == {p.name for p in (REPO / "checks").glob("test_*.py")}


@pytest.mark.parametrize("gate", ["smoke", "security-incident"])
def test_a_gate_collects_what_the_whole_catalog_keeps_for_it(tmp_path, gate):
    profile = tmp_path / "p.yaml"
    profile.write_text(PROFILE)
    ids = _check_ids()
    wanted = set(GATES[gate]["ids"])
    everything = _collected(profile, "compliance")
    expected = [n for n in everything if ids[n.split("[")[0]] in wanted]
    got = _collected(profile, gate)
    assert got == expected and got
    skipped = {f"checks/test_{s}.py" for s in SECTIONS if not any(CATALOG[i].section == s for i in wanted)}
    assert skipped and not {n.split("::")[0] for n in got} & skipped  # some module was left out, none of it ran
