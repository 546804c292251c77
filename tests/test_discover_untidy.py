"""discover on an untidy host (issue 24, item 5), built from real servers by tests/untidy_host.py: it chooses the
PostgreSQL server by what it holds and the Redis server by the services' connections, not by the runbook's port,
says which fact decided, finds the application tree above the services' working directories, writes two
same-named services as two entries, writes no password variable for servers that need none, and finds the backup
root a crontab's script names. The profile it writes runs with no edit and no variable exported, and exits 0."""

from __future__ import annotations

import contextlib
import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

from acgs_verify.discover import find
from acgs_verify.discover.writer import render, summary_line
from acgs_verify.profile import Host, load_profile
from tests.conftest import SHARED_MACHINE, free_port_offset, host_services_lock, run_cli
from tests.untidy_host import (
    APP,
    forget_statements,
    postgres_cluster,
    redis_on,
    seed_cache,
    service,
    write_backups,
    write_tree,
)


def _enter_together(stack: contextlib.ExitStack, managers: list) -> list:
    """The values of `managers` entered at once (each waits for a server of its own to start, and these do not
    depend on each other), their exits on `stack`: whatever started is stopped, even when another did not start."""
    with ThreadPoolExecutor(len(managers)) as pool:
        entered = [pool.submit(m.__enter__) for m in managers]
    failed = next((f.exception() for f in entered if f.exception() is not None), None)
    for manager, future in zip(managers, entered, strict=True):
        if future.exception() is None:
            stack.push(manager)  # its __exit__, called when the stack closes
    if failed is not None:
        raise failed
    return [f.result() for f in entered]


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    prefix = tmp_path_factory.mktemp("untidy") / "root"
    prefix.mkdir()
    prefix.chmod(0o755)
    offset = free_port_offset()
    app = write_tree(prefix)
    with contextlib.ExitStack() as stack:
        bare_pg, real_pg, bare_redis, real_redis = _enter_together(stack, [
            postgres_cluster("bare", port=5432 + offset), postgres_cluster("real", seeded=True),
            redis_on(prefix / "run/redis-bare", port=6379 + offset), redis_on(prefix / "run/redis-real")])
        seed_cache(real_redis)
        # the servers above are no ACGS service: other modules wait for this one's services alone
        stack.enter_context(host_services_lock())
        services = _enter_together(stack, [
            service(prefix, factory, app / "services" / folder, real_redis)
            for factory, folder in (("auth", "platform/authentication"), ("auth", "platform/auth-b"),
                                    ("constitutional_ai", "core/constitutional-ai/app"))])
        backups = write_backups(prefix, real_pg["port"])
        forget_statements(real_pg["port"])
        yield {"prefix": prefix, "app": app, "offset": offset, "bare_pg": bare_pg, "real_pg": real_pg,
               "bare_redis": bare_redis, "real_redis": real_redis, "services": services, "backups": backups,
               "ports": {s["port"] for s in services} | {bare_pg["port"], real_pg["port"], bare_redis, real_redis}}


@pytest.fixture(scope="module")
def found(host):
    """discover over this host's own ports (the other stacks of a shared machine left out)."""
    return find(Host(name="untidy-1"), port_offset=host["offset"], ports=host["ports"])


def test_postgres_is_chosen_by_content_not_by_the_runbook_port(host, found):
    (db,) = found.databases
    assert db.data["dsn"] == f"postgresql://acgs@127.0.0.1:{host['real_pg']['port']}/acgs_production"
    assert any("chosen by content: it holds database acgs_production" in e for e in db.evidence), db.evidence
    assert any(f"{host['bare_pg']['port']}" in t and "left out" in t for t in found.todos), found.todos
    assert "database chosen: " in summary_line(found) and "by content" in summary_line(found)


def test_redis_is_chosen_by_the_services_established_connections(host, found):
    (cache,) = found.redis
    assert cache.data["url"] == f"redis://127.0.0.1:{host['real_redis']}/0"
    assert any("chosen by the services' established connections" in e for e in cache.evidence), cache.evidence
    assert "cache chosen: " in summary_line(found)


def test_the_application_tree_is_found_above_the_services_working_directories(host, found):
    assert found.paths["app_root"].data["value"] == str(host["app"])
    assert "holding config/" in found.paths["app_root"].evidence[0]
    assert found.paths["policies"].data["value"] == str(host["app"] / "config/policies")
    assert str(host["app"] / "config/production.env") in found.security["secret_files"].data["value"]
    assert [k["path"] for k in found.security["keys"].data["value"]] == [str(host["app"] / "config/keys/app.key")]


def test_two_services_reporting_one_name_are_two_entries_named_by_port(host, found):
    auth = sorted(s["port"] for s in host["services"][:2])
    names = sorted(s.data["name"] for s in found.services)
    assert names == sorted([f"auth-{auth[0]}", f"auth-{auth[1]}", "constitutional-ai"])
    assert not found.candidates, [c.evidence for c in found.candidates]


def test_no_password_variable_for_servers_that_take_none(found):
    (db,) = found.databases
    (cache,) = found.redis
    assert "password_env" not in db.data and "password_env" not in cache.data
    assert any("opened a session without a password" in e for e in db.evidence)
    assert any("answered PING without a password" in e for e in cache.evidence)


def test_the_backup_root_comes_from_the_script_a_crontab_runs(host, found):
    item = found.paths["backups"]
    assert item.data["value"] == str(host["backups"])
    script, cron = host["prefix"] / "opt/acgs/bin/nightly-backup.sh", host["prefix"] / "etc/cron.d/acgs-backup"
    assert item.evidence[0].startswith(f"BACKUP_DIR in {script} (run by {cron} line 3): 10 dated backup folders")


def test_the_profile_discover_writes_runs_clean_with_no_edit_and_no_variable(host, found, tmp_path):
    out = tmp_path / "untidy.yaml"
    out.write_text(render(found))
    profile = load_profile(str(out))  # secrets resolved: no variable is needed
    assert not [d.password_env for d in profile.databases if d.password_env]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACGS_", "PG"))}
    ran = run_cli("run", "--profile", str(out), "--report-dir", str(tmp_path / "r"), *SHARED_MACHINE, env=env)
    summary = json.loads((tmp_path / "r" / "latest" / "summary.json").read_text())
    bad = [f"{c['name']}: {c['outcome']}: {c['message']}" for c in summary["checks"]
           if c["outcome"] not in ("passed", "skipped")]
    assert ran.returncode == 0 and not bad, bad
    judged = {c["id"] for c in summary["checks"] if c["outcome"] == "passed"}
    assert {"DB-01", "BK-01", "SVC-01"} <= judged, sorted(judged)
    assert yaml.safe_load(out.read_text())["paths"]["app_root"] == str(host["app"])


def test_whole_host_discover_on_a_shared_machine_chooses_the_same(host, tmp_path):
    """The CLI over every port of the machine (other stacks included): the same servers, tree and backups."""
    out = tmp_path / "whole.yaml"
    res = run_cli("discover", "--port-offset", str(host["offset"]), "--name", "untidy-1", "-o", str(out),
                  timeout=180)
    assert res.returncode == 0, res.stderr
    data = yaml.safe_load(out.read_text())
    assert [d["dsn"] for d in data["databases"]] == [
        f"postgresql://acgs@127.0.0.1:{host['real_pg']['port']}/acgs_production"]
    assert [r["url"] for r in data["redis"]] == [f"redis://127.0.0.1:{host['real_redis']}/0"]
    assert data["paths"]["app_root"] == str(host["app"]) and data["paths"]["backups"] == str(host["backups"])
    mine = {s["port"] for s in host["services"]}
    assert {s["port"] for s in data["services"]} == mine, data["services"]
    assert "database chosen: " in res.stderr and "next: acgs-verify run" in res.stderr, res.stderr
    assert APP in data["paths"]["policies"]


def test_a_redis_that_refuses_a_password_less_ping_gets_password_env(tmp_path):
    """The other side of the rule: a server that asks for a password gets the variable, and the comment says why."""
    from tests.servers import redis_server

    with redis_server(tmp_path, password="untidy-" + os.urandom(6).hex()) as port:
        found = find(Host(name="untidy-2"), ports={port})
    (cache,) = found.redis
    assert cache.data["password_env"] == "ACGS_REDIS_PASSWORD"
    assert any("it refused PING without a password" in e for e in cache.evidence), cache.evidence
    assert any("chosen by the only one" in e for e in cache.evidence), cache.evidence
