"""What a new on-call engineer tripped on (issue 22, item 7): messages that repeat themselves, bury what matters
or leave out what to act on, and the smaller surprises of the CLI and the sandbox. One test per item."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import SHARED_MACHINE, run_cli


def test_an_unknown_waiver_id_is_said_once_with_the_id_it_may_mean(tmp_path):
    from acgs_verify.waivers import WaiverError, load_waivers

    path = tmp_path / "waivers.yaml"
    path.write_text("waivers:\n  - {id: SEC-3, reason: pen test, owner: bob, expires: 2030-01-01}\n")
    with pytest.raises(WaiverError) as err:
        load_waivers(path)
    line = str(err.value)
    assert line.count("SEC-3") == 1 and "did you mean SEC-03?" in line and str(path) in line, line
    assert "\n" not in line


@pytest.fixture(scope="module")
def readiness_run(sandbox, tmp_path_factory):
    """auth's readiness path pointed at /health, whose body holds no `ready`: the issue's `ready=None`."""
    for fault in sandbox.faults():
        sandbox.heal_fault(fault)
    reports = tmp_path_factory.mktemp("messages") / "reports"
    res = run_cli("run", "--profile", str(sandbox.profile_path), "--report-dir", str(reports), *SHARED_MACHINE,
                  "--set", "services.auth.ready_path=/health", "--", "-k", "SVC-09 or CC-02 or TLS-02")
    summary = json.loads((reports / "latest" / "summary.json").read_text())
    return res, {(c["id"], c["target"]): c for c in summary["checks"]}


def test_readiness_says_each_path_once_and_never_a_flag_it_did_not_get(readiness_run):
    res, checks = readiness_run
    c = checks["SVC-09", "auth@app-1"]
    assert c["outcome"] == "failed", c
    assert "None" not in c["message"] and c["message"].count("/health/live") == 1, c["message"]
    assert re.search(r"measured /health: HTTP 200 in \d+ ms, no `ready` in the body; "
                     r"/health/live: HTTP 200 in \d+ ms, alive: true; expected", c["message"]), c["message"]


def test_cc02_names_the_log_it_read(readiness_run, sandbox):
    import yaml

    _, checks = readiness_run
    logs = {s["name"]: s["log"] for s in yaml.safe_load(sandbox.profile_path.read_text())["services"]}
    c = checks["CC-02", "auth@app-1"]
    assert c["outcome"] == "passed" and f"of {logs['auth']} on app-1:" in c["measured"], c["measured"]


def test_tls02_leads_with_the_days_left(readiness_run):
    _, checks = readiness_run
    (c,) = [c for (cid, _), c in checks.items() if cid == "TLS-02"]
    assert re.match(r"\d+\.\d days left; chain verified against ", c["measured"]), c["measured"]
    assert c["expected"].startswith("more than 7 days left"), c["expected"]
