"""`acgs-verify run --shard K/N` and `acgs-verify merge`, end to end against the sandbox.

Three shards merged give the same (ID, target, outcome) set and the same exit code as one unsharded run, healthy
and with a fault; each host's checks are in exactly one shard; merge refuses shards of another profile, gate or
run group (one line, exit 3); a missing shard closes the merged run's gate in every report (exit 2).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from acgs_verify.sandbox.components.sshd import sshd_binary
from acgs_verify.shards import ShardError, ci_group, parse_shard, shard_of
from tests.conftest import REPO, run_checks, run_cli
from tests.runs import run_pytest

GROUP = "test-shards"
HAS_SSHD = sshd_binary() is not None


def outcomes(summary: dict) -> set[tuple[str, str, str]]:
    return {(c["id"], c["target"], c["outcome"]) for c in summary["checks"]}


def run_sharded(sandbox, base: Path, count: int = 3, group: str = GROUP, *extra: str):
    """Every shard of one run, each into its own report directory (as each CI job has its own)."""
    shards = {}
    for k in range(1, count + 1):
        res = run_checks(sandbox, base / f"shard-{k}", "--shard", f"{k}/{count}", "--run-group", group, *extra)
        summary = res.summary
        assert summary is not None and summary["shard"] == {"index": k, "count": count, "group": group}, \
            res.stdout[-2000:] + res.stderr
        shards[k] = (res, summary)
    return shards


def merge(*run_dirs: Path, report_dir: Path):
    res = run_cli("merge", *map(str, run_dirs), "--report-dir", str(report_dir))
    summary = report_dir / "latest" / "summary.json"
    return res, json.loads(summary.read_text()) if res.returncode != 3 and summary.exists() else None


@pytest.fixture(scope="module")
def healthy_runs(sandbox, tmp_path_factory):
    """One unsharded run and one run as 3 shards, merged, of the healthy sandbox."""
    for fault in sandbox.faults():
        sandbox.heal_fault(fault)
    base = tmp_path_factory.mktemp("shards-healthy")
    whole = run_checks(sandbox, base / "whole")
    whole = (whole, whole.summary)
    shards = run_sharded(sandbox, base)
    merged = merge(*(base / f"shard-{k}" / "latest" for k in shards), report_dir=base / "merged")
    return base, whole, shards, merged


# ------------------------------------------------------------------------------------ the same verdict


def test_three_shards_merged_are_the_unsharded_run(healthy_runs):
    _, (whole_res, whole), shards, (merged_res, merged) = healthy_runs
    assert whole_res.returncode == 0, whole_res.stdout[-3000:]
    assert merged_res.returncode == whole_res.returncode, merged_res.stdout + merged_res.stderr
    assert outcomes(merged) == outcomes(whole)
    assert len(merged["checks"]) == len(whole["checks"])  # no check twice
    assert merged["totals"] == {**whole["totals"], "warnings": merged["totals"]["warnings"]}  # warnings: timing
    # the shards split the run: every check in exactly one of them
    pieces = [outcomes(s) for _, s in shards.values()]
    assert sum(len(p) for p in pieces) == len(outcomes(whole))
    assert set().union(*pieces) == outcomes(whole)
    assert merged_res.stdout.strip().splitlines()[-1] == merged["summary"]
    assert merged["merged"]["group"] == GROUP and merged["merged"]["missing"] == []
    assert "shard" not in merged  # the merged run is the whole run, not a shard


def test_each_hosts_checks_are_in_exactly_one_shard(healthy_runs):
    _, (_, whole), shards, _ = healthy_runs
    where: dict[str, set[int]] = {}
    for k, (_, summary) in shards.items():
        for c in summary["checks"]:
            where.setdefault(c["host"] or f"target {c['target']}", set()).add(k)
    hosts = {c["host"] for c in whole["checks"] if c["host"]}
    assert (hosts >= {"app-1", "ops-1"}) if HAS_SSHD else ("app-1" in hosts)  # no sshd: the sandbox has no ops-1
    assert all(len(where[h]) == 1 for h in hosts), where
    # targets without a host (database, cache, backups, certificates, ...) each stay in one shard too
    assert all(len(k) == 1 for k in where.values()), where
    assert len({k for ks in where.values() for k in ks}) > 1  # and the work is spread, not all in one shard


def test_the_merged_run_writes_one_of_each_report(healthy_runs):
    base, _, shards, (_, merged) = healthy_runs
    run_dir = (base / "merged" / "latest").resolve()
    for name in ("summary.json", "junit.xml", "report.html", "report.md", "metrics.prom"):
        assert (run_dir / name).is_file(), name
    import xml.etree.ElementTree as ET

    cases = list(ET.parse(run_dir / "junit.xml").getroot().iter("testcase"))
    assert len(cases) == len(merged["checks"])
    history = (base / "merged" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["run_id"] for line in history] == [merged["run_id"]]
    # a shard is part of a run: it writes no history line of its own (its merge does)
    assert not any((base / f"shard-{k}" / "history.jsonl").exists() for k in shards)
    assert f"merged from shards 1, 2, 3 of 3 (run group {GROUP})" in (run_dir / "report.md").read_text()


# The constitutional checks and SVC-01: some on each of 3 shards (the policy files, the cache, app-1 and the database
# hash to different ones). That the fault fails CC-06 and no other check of the whole catalog, test_run_data_faults
# shows; this test is about the sharded run giving the unsharded run's verdict.
FAULT_RUN = ("--", "-k", "CC or SVC-01")


def test_a_fault_gives_the_same_failures_and_exit_code_sharded(sandbox, tmp_path):
    sandbox.break_fault("redis-wrong-hash")
    try:
        whole_res = run_checks(sandbox, tmp_path / "whole", *FAULT_RUN)
        whole = whole_res.summary
        shards = run_sharded(sandbox, tmp_path, 3, "fault-run", *FAULT_RUN)
    finally:
        sandbox.heal_fault("redis-wrong-hash")
    merged_res, merged = merge(*(tmp_path / f"shard-{k}" / "latest" for k in shards), report_dir=tmp_path / "m")
    assert whole_res.returncode == 2, whole_res.stdout[-3000:]
    assert {(i, t) for i, t, o in outcomes(whole) if o == "failed"} == {("CC-06", "cache")}
    assert merged_res.returncode == 2, merged_res.stdout + merged_res.stderr
    assert outcomes(merged) == outcomes(whole)
    assert merged["summary"].startswith("ACGS CRITICAL - 1 of ")
    # who to notify is the whole run's answer, not dropped because the shards disagreed
    assert merged["escalation"] == whole["escalation"] and merged["escalation"]["severity"] == "P1"
    # the shard that holds the cache failed; the others passed (or hold nothing, exit 3: CC-03's one target, the
    # policy folder, may leave a shard empty): the verdict is the whole's, not the last shard's
    codes = [r.returncode for r, s in shards.values() if s["checks"]]
    assert codes.count(2) == 1 and set(codes) <= {0, 2}, codes
    assert all(r.returncode == 3 for r, s in shards.values() if not s["checks"])


def test_shards_that_hold_nothing_count_as_present(sandbox, tmp_path):
    # the smoke gate checks 3 things here (app-1's services, the database, the cache): of 5 shards, 2 or more hold
    # nothing; each says so (exit 3, nothing collected), and the merge is still the unsharded verdict
    whole_res = run_checks(sandbox, tmp_path / "whole", "--gate", "smoke")
    whole = whole_res.summary
    shards = run_sharded(sandbox, tmp_path, 5, "smoke-run", "--gate", "smoke")
    empty = [k for k, (_, s) in shards.items() if not s["checks"]]
    assert len(empty) >= 2 and all(shards[k][0].returncode == 3 for k in empty)
    assert "hashes to shard" in shards[empty[0]][1]["notes"][-1]
    res, merged = merge(*(tmp_path / f"shard-{k}" / "latest" for k in shards), report_dir=tmp_path / "m")
    assert res.returncode == whole_res.returncode == 0, res.stdout + res.stderr
    assert outcomes(merged) == outcomes(whole)
    assert merged["merged"]["missing"] == [] and not any(n.startswith("no checks") for n in merged["notes"])
    assert f"shard {empty[0]} of 5 held no checks: no host or target of the profile hashes to it" in merged["notes"]


# -------------------------------------------------------------------------------- what merge refuses


def test_a_missing_shard_is_reported_everywhere_and_is_not_ok(healthy_runs, tmp_path):
    base, _, shards, _ = healthy_runs
    missing = 2
    res, summary = merge(*(base / f"shard-{k}" / "latest" for k in shards if k != missing), report_dir=tmp_path)
    line = f"shard {missing} of 3 missing"
    assert res.returncode == 2, res.stdout + res.stderr
    assert summary["exit_code"] == 2 and summary["merged"]["missing"] == [missing]
    assert line in summary["summary"] and res.stdout.strip().splitlines()[-1].startswith("ACGS CRITICAL - ")
    run_dir = (tmp_path / "latest").resolve()
    for name in ("report.md", "report.html", "junit.xml"):
        assert line in (run_dir / name).read_text(), name
    assert json.loads((tmp_path / "history.jsonl").read_text())["exit_code"] == 2


def _copy_with(run_dir: Path, dest: Path, **changes) -> Path:
    """A shard's run directory with fields of its summary.json changed, as another run would have written it."""
    shutil.copytree(run_dir.resolve(), dest)
    summary = json.loads((dest / "summary.json").read_text())
    for key, value in changes.items():
        if key in ("group", "index"):
            summary["shard"][key] = value
        else:
            summary[key] = value
    (dest / "summary.json").write_text(json.dumps(summary))
    return dest


@pytest.mark.parametrize("field, value, says", [
    ("profile", "production", "profile 'production'"),
    ("group", "another-pipeline", "run group 'another-pipeline'"),
])
def test_merge_refuses_shards_of_another_run(healthy_runs, tmp_path, field, value, says):
    base, _, _, _ = healthy_runs
    other = _copy_with(base / "shard-2" / "latest", tmp_path / "other", **{field: value})
    res, _ = merge(base / "shard-1" / "latest", other, base / "shard-3" / "latest", report_dir=tmp_path / "m")
    assert res.returncode == 3
    assert res.stderr.count("\n") == 1 and says in res.stderr and "merge joins the shards of one run" in res.stderr
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())  # nothing written


def test_merge_refuses_shards_of_another_gate(sandbox, healthy_runs, tmp_path):
    base, _, _, _ = healthy_runs
    res = run_checks(sandbox, tmp_path / "smoke", "--gate", "smoke", "--shard", "2/3", "--run-group", GROUP)
    assert res.returncode in (0, 3), res.stdout + res.stderr  # 3: the smoke gate may have nothing in shard 2
    res, _ = merge(base / "shard-1" / "latest", tmp_path / "smoke" / "latest", report_dir=tmp_path / "m")
    assert res.returncode == 3 and "gate 'smoke', but" in res.stderr and res.stderr.count("\n") == 1


def test_merge_refuses_a_run_that_is_not_a_shard_and_a_shard_given_twice(healthy_runs, tmp_path):
    base, _, _, _ = healthy_runs
    res, _ = merge(base / "whole" / "latest", report_dir=tmp_path / "m")
    assert res.returncode == 3 and "not a shard" in res.stderr
    twice = _copy_with(base / "shard-1" / "latest", tmp_path / "again", run_id="20990101T000000Z-x")
    res, _ = merge(base / "shard-1" / "latest", twice, report_dir=tmp_path / "m")
    assert res.returncode == 3 and "shard 1 of 3 given twice" in res.stderr
    res, _ = merge(tmp_path / "nothing-here", report_dir=tmp_path / "m")
    assert res.returncode == 3 and "no summary.json" in res.stderr


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize("value", ["0/3", "4/3", "x", "3", "1/0", "-1/3", "1/3/4"])
def test_a_bad_shard_is_one_line_and_exit_3_in_run_and_in_pytest(tmp_path, value):
    res = run_cli("run", f"--shard={value}", "--run-group", "g", "--report-dir", str(tmp_path / "r"))
    assert res.returncode == 3 and res.stderr.count("\n") == 1 and "--shard" in res.stderr, res.stderr
    assert not (tmp_path / "r").exists()
    res = run_pytest("checks", "-p", "no:cacheprovider", f"--shard={value}", "--run-group", "g", timeout=120)
    assert res.returncode == 3 and "acgs-verify: error: --shard" in res.stderr, res.output


def test_sharding_needs_a_run_group_outside_ci_and_no_maintenance_gate(tmp_path):
    outside_ci = dict.fromkeys(("CI_PIPELINE_ID", "GITHUB_RUN_ID", "BUILDKITE_BUILD_ID", "BUILD_TAG"))
    res = run_cli("run", "--shard", "1/2", "--report-dir", str(tmp_path), env=outside_ci)
    assert res.returncode == 3 and "--shard needs --run-group" in res.stderr
    res = run_cli("run", "--shard", "1/2", "--run-group", "g", "--gate", "pre-maintenance")
    assert res.returncode == 3 and "run it unsharded" in res.stderr


def test_the_run_group_defaults_to_the_ci_pipeline():
    assert ci_group({"CI_PIPELINE_ID": "4711"}) == "gitlab-4711"
    assert ci_group({"GITHUB_RUN_ID": "99", "GITHUB_RUN_ATTEMPT": "2"}) == "github-99-2"
    assert ci_group({"GITHUB_RUN_ID": "99"}) is None and ci_group({}) is None
    assert parse_shard("2/4") == (2, 4)
    with pytest.raises(ShardError):
        parse_shard("5/4")


def test_assignment_is_by_name_spread_and_stable():
    names = [f"app-{i}" for i in range(200)]
    before = {n: shard_of(n, 4) for n in names}
    # a host's shard depends on its name only: adding hosts moves none of the others
    assert {n: shard_of(n, 4) for n in [*names, "new-1", "new-2"] if n in before} == before
    sizes = [list(before.values()).count(k) for k in (1, 2, 3, 4)]
    assert all(30 <= s <= 70 for s in sizes), sizes
    # the same in another process (not Python's randomized hash())
    other = subprocess.run([sys.executable, "-c", "from acgs_verify.shards import shard_of;"
                            "print([shard_of(f'app-{i}', 4) for i in range(200)])"],
                           capture_output=True, text=True, cwd=REPO, timeout=60)
    assert other.stdout.strip() == str(list(before.values()))
