"""summary.json is a published format: a schema_version, a JSON Schema shipped in the package (the same file as
docs/summary.schema.json) that the model's output meets, and readers (`acgs-verify report`, `merge`, `diff`) that
ignore fields they do not know, fill the optional ones a file lacks, and refuse a newer major version in one line.
Every summary.json a run writes in the suite's tests is checked against the schema too (run_cli, tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from acgs_verify.report import write_all
from acgs_verify.report.diff import compare
from acgs_verify.report.snapshot import snapshot_of
from acgs_verify.results import SCHEMA_VERSION, SECTIONS, RunResult
from tests.conftest import REPO, run_cli
from tests.summary_schema import schema_errors
from tests.test_reports_say_it_once import check, failing, run


def test_the_shipped_schema_is_the_one_in_docs():
    shipped = REPO / "acgs_verify" / "schemas" / "summary.schema.json"
    assert shipped.read_bytes() == (REPO / "docs" / "summary.schema.json").read_bytes()
    schema = json.loads(shipped.read_text())
    assert f"Version {SCHEMA_VERSION}." in schema["description"]
    # every optional section of the model is in the schema, and nothing else the model does not write
    assert set(SECTIONS) <= set(schema["properties"])
    assert set(schema["properties"]) == set(full_run().as_dict())


def full_run() -> RunResult:
    """A run with every optional section set, as the gates, shards, --wait and --since set them."""
    waived = failing("SVC-06", "auth@app-1", "p99 180 ms", "<= 100 ms")
    waived.waived = {"id": "SVC-06", "target": "auth@*", "reason": "JIT", "owner": "alice", "expires": "2099-01-01"}
    r = run([check("SVC-01", value=200.0, evidence={"health body": '{"status": "healthy"}'}), waived,
             check("SVC-03", outcome="error", message="SVC-03 auth@app-1: could not measure: refused"),
             check("BK-01", "backups", "skipped", "P1", None, message="no backups path"),
             check("SVC-02", outcome="interrupted", message="SVC-02 auth@app-1: interrupted")],
            planned=7, complete=False, gate_failures=["gate pre-maintenance: SVC-01[auth@app-1] must pass"])
    r.extra["trend"] = [{"run_id": "r0", "gate": "compliance", "started": "2025-05-31T02:00:00+00:00",
                         "exit_code": 0, "compliance_rate": 1.0}]
    r.extra["shard"] = {"index": 1, "count": 2, "group": "g1"}
    r.extra["merged"] = {"group": "g1", "count": 2, "missing": [2], "shards": [{"index": 1, "run_id": "r1",
                                                                                 "exit_code": 2}]}
    r.extra["wait"] = {"seconds": 60, "attempts": 2, "recovered": ["SVC-01[auth@app-1] after 2 attempts"],
                       "still_failing": []}
    r.extra["log_window_since"] = "2025-06-01T01:00:00+00:00"
    r.extra["state"] = {"tables": {"primary": {"public.policies": 12}}, "redis": {"cache": 3}, "errors": []}
    before = snapshot_of(run([check("SVC-01"), check("SVC-02")], run_id="r0"))
    r.extra["comparison"] = {"snapshot": "/r/snapshot.json", **compare(before, snapshot_of(r)).as_dict(),
                             "baseline_gate_closed": "ACGS CRITICAL - 1 of 2 checks failed (P0: 1)"}
    r.extra["escalation"] = {"severity": "P0", "failed": 1, "line": "P0: notify X within 15 min"}
    r.extra["availability"] = {"target_percent": 99.9, "window_days": 30, "min_runs": 10}
    r.extra["evidence"] = {"dir": "evidence", "copied_at": "2025-06-01T02:00:00+00:00", "files": 1, "bytes": 10,
                           "hosts": ["app-1"], "max_file_bytes": 1, "max_total_bytes": 2, "cut": [], "refused": [],
                           "not_copied": []}
    return r


def test_the_model_writes_what_the_schema_describes_and_reads_it_back(tmp_path):
    r = full_run()
    write_all(r, tmp_path)
    assert schema_errors(tmp_path / "summary.json") == []
    data = json.loads((tmp_path / "summary.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert RunResult.from_dict(data).as_dict() == r.as_dict()


def test_a_field_the_model_does_not_have_cannot_be_set():
    with pytest.raises(KeyError, match="'threshold' is not a section of the result model"):
        run([]).extra["threshold"] = 1  # a loose key would be a field the published format does not describe


def test_the_schema_refuses_what_the_model_would_not_write(tmp_path):
    r = full_run()
    bad = r.as_dict()
    bad["checks"][0]["outcome"] = "crashed"
    del bad["checks"][1]["target"]
    bad["threshold"] = 5
    (tmp_path / "summary.json").write_text(json.dumps(bad))
    errors = schema_errors(tmp_path / "summary.json")
    assert any(e.startswith("checks/0/outcome: 'crashed' is not one of") for e in errors), errors
    assert any(e.startswith("checks/1: 'target' is a required property") for e in errors), errors
    assert any("'threshold' was unexpected" in e for e in errors), errors


def shard_dir(base: Path, name: str, changes) -> Path:
    """A shard's run directory (1 of 1, every report written), its summary.json then changed by `changes`."""
    r = run([check("SVC-01"), failing("SVC-02", "auth@app-1", "hash x", "hash y")], run_id=name)
    r.extra["shard"] = {"index": 1, "count": 1, "group": "g1"}
    d = base / name
    write_all(r, d)
    data = json.loads((d / "summary.json").read_text())
    changes(data)
    (d / "summary.json").write_text(json.dumps(data))
    return d


def with_unknown_fields(data: dict) -> None:
    data["schema_version"] = "1.7"  # a newer minor: fields this version does not know
    data["runner"] = {"os": "linux"}
    data["checks"][0]["flaky_score"] = 0.5


def without_optional_fields(data: dict) -> None:
    for key in ("schema_version", "duration", "notes", "gate_failures", "planned", "complete"):
        data.pop(key)
    for c in data["checks"]:
        for key in ("attempts", "host", "evidence", "waived", "warning", "duration", "message", "name"):
            c.pop(key)


@pytest.mark.parametrize("changes", [with_unknown_fields, without_optional_fields])
def test_report_merge_and_diff_read_a_summary_with_unknown_or_missing_optional_fields(changes, tmp_path):
    one, two = shard_dir(tmp_path, "r1", changes), shard_dir(tmp_path, "r2", changes)
    res = run_cli("report", str(one), "--report-dir", str(tmp_path))
    assert res.returncode == 0 and res.stdout.splitlines()[-1].startswith("ACGS CRITICAL - 1 of 2 checks failed"), \
        res.stdout + res.stderr
    regenerated = json.loads((one / "summary.json").read_text())
    assert regenerated["schema_version"] == SCHEMA_VERSION and "runner" not in regenerated
    assert regenerated["checks"][0]["attempts"] == 1  # kept, or filled
    assert schema_errors(one / "summary.json") == []
    merged = run_cli("merge", str(two), "--report-dir", str(tmp_path / "merged"))
    assert merged.returncode == 2 and "ACGS CRITICAL - 1 of 2 checks failed" in merged.stdout, \
        merged.stdout + merged.stderr
    diff = run_cli("diff", str(one), str(two), "--report-dir", str(tmp_path))
    assert diff.returncode == 0 and diff.stdout.splitlines()[-1].startswith("ACGS DIFF OK"), diff.stdout + diff.stderr


def test_missing_optional_fields_are_filled_with_their_defaults():
    r = run([check("SVC-01")])
    data = r.as_dict()
    without_optional_fields(data)
    back = RunResult.from_dict(data)
    assert (back.duration, back.notes, back.complete, back.planned) == (0.0, [], True, None)
    c = back.checks[0]
    assert (c.attempts, c.host, c.evidence, c.waived, c.message) == (1, None, {}, None, "")


@pytest.mark.parametrize("command", ["report", "merge", "diff"])
def test_a_newer_major_version_is_refused_in_one_line(command, tmp_path):
    newer = shard_dir(tmp_path, "r1", lambda d: d.update(schema_version="2.0"))
    args = {"report": [str(newer)], "merge": [str(newer)], "diff": [str(newer), str(newer)]}[command]
    res = run_cli(command, *args, "--report-dir", str(tmp_path / "out"))
    assert res.returncode == 3 and res.stdout == "", res.stdout
    (line,) = res.stderr.strip().splitlines()
    assert f"{newer / 'summary.json'}" in line or str(newer) in line
    assert "schema_version 2.0 is newer than this acgs-verify reads (1.x): upgrade acgs-verify" in line
    assert "Traceback" not in res.stderr


@pytest.mark.parametrize("field", ["run_id", "checks"])
def test_a_summary_without_a_required_field_is_refused_naming_it(field, tmp_path):
    d = shard_dir(tmp_path, "r1", lambda data: data.pop(field))
    res = run_cli("report", str(d), "--report-dir", str(tmp_path))
    assert res.returncode == 3 and f"required field {field!r} missing" in res.stderr, res.stderr


def test_the_check_on_every_run_catches_a_summary_that_breaks_the_schema(tmp_path):
    from tests.summary_schema import assert_written_summaries_valid, summaries

    before = summaries(tmp_path)
    write_all(run([check("SVC-01")]), tmp_path / "r1")
    assert_written_summaries_valid(tmp_path, before)  # a run as the model writes it
    data = json.loads((tmp_path / "r1" / "summary.json").read_text())
    data["checks"][0]["outcome"] = "crashed"
    (tmp_path / "r1" / "summary.json").write_text(json.dumps(data))
    with pytest.raises(AssertionError, match="r1/summary.json does not meet summary.schema.json"):
        assert_written_summaries_valid(tmp_path, before)
