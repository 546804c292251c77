"""What a new on-call engineer tripped on (issue 22, item 7): messages that repeat themselves, bury what matters
or leave out what to act on, and the smaller surprises of the CLI and the sandbox. One test per item."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import SHARED_MACHINE, run_checks, run_cli


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
    assert c["expected"].startswith("> 7 days left (warn within "), c["expected"]
    assert abs(c["value"] - float(c["measured"].split()[0])) < 0.06, c  # the days left as a number, for the reports


# ------------------------------------------------------------------------------------------ the CLI


def test_a_filter_that_matches_nothing_exits_3_and_leaves_latest_alone(healthy_sandbox, tmp_path):
    reports = tmp_path / "reports"
    first = run_checks(healthy_sandbox, reports, "--gate", "smoke", "--", "-k", "SVC-01")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr
    latest = (reports / "latest").resolve()
    history = (reports / "history.jsonl").read_text()
    res = run_checks(healthy_sandbox, reports, "--gate", "smoke", "--", "-k", "nomatch")
    assert res.returncode == 3, res.stdout[-2000:] + res.stderr
    last = res.stdout.strip().splitlines()[-1]
    assert last.startswith("ACGS UNKNOWN - nothing collected: no check of gate smoke matches the -k and -m filters")
    assert f"{reports}/latest left as it was" in last
    # the nightly unit publishes what latest points at: still the run before
    assert (reports / "latest").resolve() == latest and (reports / "history.jsonl").read_text() == history
    assert sorted(p.name for p in reports.iterdir()) == sorted([latest.name, "latest", "history.jsonl"])


def test_a_bad_pytest_flag_is_one_line_of_ours(healthy_sandbox, tmp_path):
    res = run_checks(healthy_sandbox, tmp_path / "reports", "--", "--no-such-flag")
    assert res.returncode == 3 and res.stdout == "", res.stdout
    assert res.stderr == "acgs-verify: error: run: pytest arguments after --: unrecognized arguments: " \
                         "--no-such-flag\n", res.stderr
    assert not (tmp_path / "reports" / "latest").exists()


def test_a_shard_says_it_is_one_and_merge_names_who_to_notify(healthy_sandbox, tmp_path):
    healthy_sandbox.break_fault("wrong-hash:auth")  # SVC-02 (P0) fails: someone is to be notified
    shard = run_checks(healthy_sandbox, tmp_path / "shard", "--gate", "smoke", "--shard", "1/1", "--run-group", "g1")
    assert shard.returncode == 2, shard.stdout[-2000:] + shard.stderr
    last = shard.stdout.strip().splitlines()[-1]
    text, _, perf = last.partition(" | ")
    assert text.startswith("ACGS CRITICAL") and text.endswith(
        "[shard 1 of 1 only: `acgs-verify merge` its shards for the run's verdict]"), last
    assert perf.startswith("passed=")
    merged = run_cli("merge", str(tmp_path / "shard" / "latest"), "--report-dir", str(tmp_path / "merged"))
    assert merged.returncode == 2, merged.stdout[-2000:] + merged.stderr
    lines = merged.stdout.strip().splitlines()
    assert lines[-2].startswith("ESCALATION P0: notify "), lines[-3:]
    assert lines[-1].startswith("ACGS CRITICAL") and "shard 1 of 1 only" not in lines[-1]


# ------------------------------------------------------------------------------------------ the sandbox


def test_every_sandbox_fault_says_what_it_does(tmp_path):
    from acgs_verify.sandbox import Sandbox

    for component in Sandbox(tmp_path / "sb").components:
        assert set(component.fault_help) == set(component.fault_names), component.name
        assert all(text and "\n" not in text for text in component.fault_help.values()), component.name
    res = run_cli("sandbox", "faults", "--dir", str(tmp_path / "sb"))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert len(lines) > 100 and all(re.match(r"\S+ {2,}\S", line) for line in lines), lines[:5]
    assert re.search(r"^slow:auth +every request waits 150 ms \(SVC-06 fails\)$", res.stdout, re.M)


def test_heal_all_heals_every_fault_on(healthy_sandbox):
    healthy_sandbox.break_fault("slow:auth")
    healthy_sandbox.break_fault("redis-wrong-hash")
    res = run_cli("sandbox", "heal", "all", "--dir", str(healthy_sandbox.dir))
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == "faults healed: slow:auth, redis-wrong-hash"
    assert healthy_sandbox.faults() == []
    again = run_cli("sandbox", "heal", "all", "--dir", str(healthy_sandbox.dir))
    assert again.returncode == 0 and again.stdout.strip() == "no fault was on"


def test_a_sandbox_without_sshd_says_which_checks_it_leaves_out():
    """`make demo` ran 117 checks, not the README's 127, and nothing said why: `sandbox up` (whose stderr the demo
    shows) says so. The status is the one a machine without sshd gives (components/sshd.py)."""
    from acgs_verify.cli import sandbox_notes

    status = {"up": True, "components": {
        "services": [{"name": "auth", "state": "running"}],
        "sshd": [{"name": "sshd", "state": "not installed (no remote host)"}]}}
    (note,) = sandbox_notes(status)
    assert note.startswith("sshd is not installed here") and "ops-1" in note and "openssh-server" in note
    assert sandbox_notes({"up": True, "components": {"sshd": [{"name": "sshd", "state": "running"}]}}) == []
