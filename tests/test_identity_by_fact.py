"""Identity by fact: a service is the process that owns its port, a database server the one that listens on its
port. A pattern confirms that owner; a pattern that matches only other processes is a failure that says so.

The field's false negatives, against the sandbox's real servers: a stopped service while a decoy matches a loose
pattern (`uvicorn.*auth`, as profiles/production.yaml once had), a stopped primary while another PostgreSQL runs.
"""

from __future__ import annotations

import json

import yaml

from tests.conftest import keep_hosts, run_checks
from tests.test_run_hosts import failed

K = ("--", "-k", "process_is_running or port_is_listening or postgresql_server")


def _profile(sandbox, tmp_path, auth_pattern: str, db_pattern: str):
    data = yaml.safe_load(sandbox.profile_path.read_text())
    keep_hosts(data, lambda h: h["name"] == "app-1")
    for s in data["services"]:
        if s["name"] == "auth":
            s["process"] = auth_pattern
    data["databases"][0]["process"] = db_pattern
    path = tmp_path / "loose.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _check(summary, check_id: str, target: str) -> dict:
    return next(c for c in summary["checks"] if c["id"] == check_id and c["target"] == target)


def test_loose_patterns_pass_the_running_owners_and_fail_stopped_servers_beside_decoys(healthy_sandbox, tmp_path):
    profile = _profile(healthy_sandbox, tmp_path, "uvicorn.*auth", "postgres")
    res = run_checks(profile, tmp_path / "reports", *K)
    summary = res.summary
    assert failed(summary) == set(), res.stdout[-3000:]
    assert "owned by pid" in _check(summary, "SVC-03", "auth@app-1")["measured"]
    assert "data directory" in _check(summary, "DB-02", "primary@app-1")["measured"]

    healthy_sandbox.break_fault("service-down-decoy:auth")
    healthy_sandbox.break_fault("db-down-decoy")
    res = run_checks(profile, tmp_path / "reports", *K)
    summary = res.summary
    assert failed(summary) == {("SVC-03", "auth@app-1"), ("SVC-04", "auth@app-1"),
                               ("DB-02", "primary@app-1")}, res.stdout[-3000:]
    state = json.loads((healthy_sandbox.dir / "state.json").read_text())["components"]
    svc = _check(summary, "SVC-03", "auth@app-1")
    assert "nothing listens on TCP port" in svc["message"] and "/uvicorn.*auth/ but" in svc["message"], svc
    pid = state["services"]["decoys"]["auth"]["pid"]
    assert f"pid {pid} " in svc["message"]  # those that listen nowhere come first: the likely impostors
    assert pid in svc["value"]
    db = _check(summary, "DB-02", "primary@app-1")
    assert "nothing listens on TCP port" in db["message"] and "match /postgres/" in db["message"], db
    # the decoy is among the matches; the message may show others first where more PostgreSQLs run on the machine
    assert state["postgres"]["processes"]["decoy"]["pid"] in db["value"]


def test_a_pattern_that_matches_only_another_process_fails_and_names_both(healthy_sandbox, tmp_path):
    """The auth port is up, but the profile's pattern matches the constitutional-ai process, not the port's owner."""
    offset = healthy_sandbox.port_offset  # this sandbox's processes only: others may run on the same machine
    profile = _profile(healthy_sandbox, tmp_path, rf"service_app:constitutional_ai .*--port {8002 + offset} ",
                       rf"postgres -D \S+/replica -p {5433 + offset}")
    res = run_checks(profile, tmp_path / "reports", *K)
    summary = res.summary
    assert failed(summary) == {("SVC-03", "auth@app-1"), ("DB-02", "primary@app-1")}, res.stdout[-3000:]
    svc = _check(summary, "SVC-03", "auth@app-1")["message"]
    assert "service_app:auth" in svc and "which does not match /service_app:constitutional_ai" in svc, svc
    assert "1 other process matches it" in svc and "listening on" in svc, svc
    db = _check(summary, "DB-02", "primary@app-1")["message"]
    assert "/primary -p" in db and "which does not match" in db and "/replica -p" in db, db


def _hidden(procs, users=("root",)):
    from acgs_verify.probes.processes import Listener, PortOwners

    hidden = Listener(8016, ("*",), (), "not visible to user nobody (socket of uid 0 root)", users)
    return PortOwners("nobody", {8016: hidden}, tuple(procs))


def _proc(pid, user, args):
    from acgs_verify.probes.processes import Proc

    return Proc(pid, 1, user, "2026-12-07 18:00:00", args)


def test_a_hidden_owner_is_the_one_process_of_the_sockets_user_naming_the_port():
    """What nobody can read decides: the socket's user (/proc/net/tcp) and the port in a command line. Two such
    processes are not one owner (no verdict, saying which); a match of another user only is a failure."""
    from acgs_verify.probes.processes import identify

    real = _proc(10, "root", "uvicorn app:auth --port 8016")
    other_user = _proc(20, "daemon", "uvicorn app:auth --port 8016")
    other_port = _proc(30, "root", "uvicorn app:auth --port 18016")
    seen = identify(_hidden([real, other_user, other_port]), 8016, "uvicorn .*auth", "auth")
    assert (seen.ok, seen.owner, seen.pids) == (True, real, (10,)) and "names port 8016" in seen.measured
    assert "anchored on the port" in seen.warning

    twin = _proc(40, "root", "uvicorn app:auth --port 8016 --copy")
    seen = identify(_hidden([real, twin]), 8016, "uvicorn .*auth", "auth")
    assert seen.ok is None and seen.pids == (10, 40) and "cannot be told" in seen.measured

    seen = identify(_hidden([other_user]), 8016, "uvicorn .*auth", "auth")
    assert seen.ok is False and seen.pids == (20,) and "no process of user root matches" in seen.measured
