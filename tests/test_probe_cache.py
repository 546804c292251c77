"""Probes own their cache: a check asks `host.port_owners(hosts, host)` and never names a key, so two checks asking
the same function share one measurement, and two functions never share a result by accident.

The end-to-end test counts the commands the real local backend runs (a wrapper around testinfra's LocalBackend.run;
the run is in the test's process): SVC-03, SVC-11 and DB-02 all read the process table, with one `ps`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from testinfra.backend.local import LocalBackend

from acgs_verify.hosts.pool import HostPool
from acgs_verify.profile import Host
from tests.conftest import run_checks

CHECKS = Path(__file__).resolve().parent.parent / "checks"
# the pool's own calls (a check asks a probe, which owns the cache key) and pytest's back door to fixtures
POOL_ONLY = {"fact", "prefetch", "measure", "measure_later", "getfixturevalue"}


def reaches_the_pool(source: str, name: str = "checks") -> list[str]:
    """Where `source` names the pool's or pytest's ways around a probe: an attribute (`hosts.fact(...)`,
    `request.getfixturevalue`), the same name through getattr, or a check that asserts a constant (`that(False`).
    Walked as the parser sees it, so neither an alias, a line break nor getattr hides one."""
    found = []
    for node in ast.walk(ast.parse(source)):
        attr = node.attr if isinstance(node, ast.Attribute) else None
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr" and len(node.args) > 1 and \
                isinstance(node.args[1], ast.Constant):
            attr = node.args[1].value
        if attr in POOL_ONLY or (attr == "get" and getattr(node.value, "id", None) == "hosts"):
            found.append(f"{name}:{node.lineno}: {attr}")
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "that" and node.args and \
                isinstance(node.args[0], ast.Constant):
            found.append(f"{name}:{node.lineno}: that({node.args[0].value!r}")
    return sorted(found, key=lambda hit: int(hit.split(":")[1]))


def test_no_check_names_a_cache_key_or_reaches_the_pool():
    found = [hit for path in sorted(CHECKS.glob("*.py")) for hit in reaches_the_pool(path.read_text(), path.name)]
    assert found == []


def test_the_pool_is_found_however_it_is_reached():
    source = ("def test_x(hosts, request, check):\n    h = hosts\n    h.fact(\n        'ps')\n"
              "    getattr(request, 'getfixturevalue')('x')\n    hosts.get('k')\n    check.that(False, measured='x')\n"
              "    check.that(ok, measured='ok')\n")
    assert reaches_the_pool(source) == ["checks:3: fact", "checks:5: getfixturevalue", "checks:6: get",
                                        "checks:7: that(False"]


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


def test_svc03_svc11_and_db02_share_one_ps_per_host(healthy_sandbox, tmp_path, monkeypatch):
    commands: list[str] = []
    real = LocalBackend.run

    def counted(self, command, *args, **kwargs):
        commands.append(" ".join(self.quote(command, *args).split()))
        return real(self, command, *args, **kwargs)

    monkeypatch.setattr(LocalBackend, "run", counted)  # the run is in this process: every command it runs is seen
    res = run_checks(healthy_sandbox, tmp_path / "reports", "--", "-k", "SVC-03 or SVC-11 or DB-02")
    asked = {(c["id"], c["outcome"]) for c in res.summary["checks"]}
    assert {i for i, _ in asked} == {"SVC-03", "SVC-11", "DB-02"} and {o for _, o in asked} == {"passed"}, asked
    ps = [c for c in commands if re.search(r"(^|[\s;|&])ps\s", c)]
    # every target of these checks is on app-1 (the local host): one process table for all of them
    assert len(ps) == 1, ps
    assert "rss=" in ps[0] and "pid=" in ps[0]  # the one `ps` carries memory for SVC-11 and owners for SVC-03
