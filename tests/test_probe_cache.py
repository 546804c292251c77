"""Probes own their cache: a check asks `host.port_owners(hosts, host)` and never names a key, so two checks asking
the same function share one measurement, and two functions never share a result by accident.

The end-to-end test counts the commands the real local backend runs (a wrapper around testinfra's LocalBackend.run,
loaded as a pytest plugin into the run): SVC-03, SVC-11 and DB-02 all read the process table, with one `ps`.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from acgs_verify.hosts.pool import HostPool
from acgs_verify.profile import Host
from tests.conftest import SHARED_MACHINE, run_cli

CHECKS = Path(__file__).resolve().parent.parent / "checks"
FORBIDDEN = ("hosts.fact", "hosts.get", ".prefetch(", "getfixturevalue", "that(False")

COUNTER = '''
import os

from testinfra.backend.local import LocalBackend

_run = LocalBackend.run


def run(self, command, *args, **kwargs):
    with open(os.environ["ACGS_TEST_COMMAND_LOG"], "a") as log:
        log.write(" ".join(self.quote(command, *args).split()) + "\\n")
    return _run(self, command, *args, **kwargs)


LocalBackend.run = run
'''


def test_no_check_names_a_cache_key_or_reaches_the_pool():
    found = [f"{path.name}:{n}: {line.strip()}" for path in sorted(CHECKS.glob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if any(f in line for f in FORBIDDEN)]
    assert found == []


def test_stuttering_target_names_are_gone_from_the_checks():
    text = "\n".join(p.read_text() for p in CHECKS.glob("*.py"))
    assert not re.search(r"service\.service\.|database\.database\b|cache\.redis\b|\.redis\.hash_key", text)


def test_one_probe_function_one_measurement_and_two_functions_never_collide():
    calls: list[str] = []

    def first(conn, word):
        calls.append(f"first {word}")
        return f"first {word}"

    def second(conn, word):
        calls.append(f"second {word}")
        return f"second {word}"

    pool, here = HostPool(connect_timeout=3), Host(name="here")
    try:
        assert pool.measure(here, "same label", first, "a") == "first a"
        assert pool.measure(here, "same label", first, "a") == "first a"  # asked twice, measured once
        assert pool.measure(here, "same label", second, "a") == "second a"  # same label, another function
        assert pool.measure(here, "same label", first, "b") == "first b"  # same function, other arguments
        assert pool.measure_later(here, "x", second, "c").result() == pool.measure(here, "x", second, "c")
        assert calls == ["first a", "second a", "first b", "second c"]
    finally:
        pool.close()


def test_two_lambdas_of_one_scope_never_share_a_result():
    reads = [lambda conn: "one", lambda conn: "two"]
    assert reads[0].__qualname__ == reads[1].__qualname__  # one qualified name, two functions
    pool, here = HostPool(connect_timeout=3), Host(name="here")
    try:
        assert [pool.measure(here, "same label", read) for read in reads] == ["one", "two"]
        assert [pool.measure_later(here, "later", read).result() for read in reads] == ["one", "two"]
    finally:
        pool.close()


def test_svc03_svc11_and_db02_share_one_ps_per_host(healthy_sandbox, tmp_path):
    (tmp_path / "count_commands.py").write_text(COUNTER)
    log = tmp_path / "commands.log"
    env = {"ACGS_TEST_COMMAND_LOG": str(log),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    res = run_cli("run", "--profile", str(healthy_sandbox.profile_path), "--report-dir", str(tmp_path / "reports"),
                  *SHARED_MACHINE, "--", "-p", "count_commands", "-k", "SVC-03 or SVC-11 or DB-02", env=env)
    summary_path = tmp_path / "reports" / "latest" / "summary.json"
    assert summary_path.exists(), res.stdout[-2000:] + res.stderr[-2000:]
    summary = json.loads(summary_path.read_text())
    asked = {(c["id"], c["outcome"]) for c in summary["checks"]}
    assert {i for i, _ in asked} == {"SVC-03", "SVC-11", "DB-02"} and {o for _, o in asked} == {"passed"}, asked
    commands = log.read_text().splitlines()
    ps = [c for c in commands if re.search(r"(^|[\s;|&])ps\s", c)]
    # every target of these checks is on app-1 (the local host): one process table for all of them
    assert len(ps) == 1, ps
    assert "rss=" in ps[0] and "pid=" in ps[0]  # the one `ps` carries memory for SVC-11 and owners for SVC-03
