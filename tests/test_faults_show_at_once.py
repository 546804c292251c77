"""A newcomer breaks the sandbox and runs it with its own profile, no --set: the fault shows.

`sandbox break db-long-query`, `db-replica-lag` and `restore-broken` once gave exit 0 straight after breaking.
Now the sandbox profile's thresholds suit the sandbox (a statement active for 2 s is long there), DB-07 does not
pass a replica whose replay is paused, and where a fault shows only in another gate, `break` prints the run that
shows it, and that run fails the fault's check.
"""

from __future__ import annotations

import json
import shlex

from tests.conftest import run_cli, sandbox_admin
from tests.waiting import wait_for


def _break(sandbox, fault: str):
    res = run_cli("sandbox", "break", fault, "--dir", str(sandbox.dir), "--port-offset", str(sandbox.port_offset))
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def _run(argv: list[str], tmp_path):
    """`acgs-verify run ...` as printed, with its reports in tmp_path: (result, {(ID, target): summary entry})."""
    assert argv[:2] == ["acgs-verify", "run"], argv
    args = argv[1:]
    where = args.index("--") if "--" in args else len(args)
    args[where:where] = ["--report-dir", str(tmp_path / "reports")]
    res = run_cli(*args)
    summary = json.loads((tmp_path / "reports" / "latest" / "summary.json").read_text())
    return res, {(c["id"], c["target"]): c for c in summary["checks"]}


def _printed_run(res) -> list[str]:
    line = next(x for x in res.stdout.splitlines() if "acgs-verify run --profile" in x)
    return shlex.split(line[line.index("acgs-verify run"):])


def test_db_long_query_fails_db04_with_the_sandbox_profile(healthy_sandbox, tmp_path):
    res = _break(healthy_sandbox, "db-long-query")
    argv = _printed_run(res)
    assert "--set" not in argv and argv[-2:] == ["-k", "DB-04"], argv

    def older_than_the_threshold() -> bool:
        with sandbox_admin(healthy_sandbox) as admin:
            return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                                 "'%db-long-query' AND now() - query_start > interval '2.2 seconds'").fetchone()[0]

    wait_for("the sandbox's long query to run 2 s", older_than_the_threshold, interval=0.1)
    run, checks = _run(argv, tmp_path)
    db04 = checks[("DB-04", "primary")]
    assert db04["outcome"] == "failed" and "pg_sleep" in db04["message"], run.stdout[-2000:]
    assert run.returncode == 1, run.stdout[-2000:]  # DB-04 is P2


def test_db_replica_lag_fails_db07_at_once(healthy_sandbox, tmp_path):
    """Straight after `break`: the lag is still small, but a paused replay is not streaming."""
    _break(healthy_sandbox, "db-replica-lag")
    run, checks = _run(["acgs-verify", "run", "--profile", str(healthy_sandbox.profile_path), "--", "-k", "DB-07"],
                       tmp_path)
    db07 = checks[("DB-07", "primary")]
    assert db07["outcome"] == "failed", run.stdout[-2000:]
    assert "replay paused" in db07["message"] and "not streaming" in db07["message"], db07["message"]
    assert run.returncode == 2, run.stdout[-2000:]  # DB-07 is P1


def test_restore_broken_break_prints_the_run_that_fails_bk07(healthy_sandbox, tmp_path):
    res = _break(healthy_sandbox, "restore-broken")
    argv = _printed_run(res)
    assert "--gate" in argv and "pre-maintenance" in argv and argv[-2:] == ["-k", "BK-07"], argv
    run, checks = _run(argv, tmp_path)
    bk07 = checks[("BK-07", "backups/latest@app-1")]
    assert bk07["outcome"] == "failed" and "did not restore" in bk07["message"], run.stdout[-2000:]
    assert run.returncode == 2, run.stdout[-2000:]
