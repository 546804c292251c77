"""Memory bounded by the hosts in flight, not the fleet (issue 24 item 7): a host's facts leave the pool when the test
loop moves past it, and a passed check's pytest reports keep only what pytest's summary counts."""

from __future__ import annotations

import pytest

from acgs_verify.hosts.pool import HostPool
from acgs_verify.profile import Host


def test_a_hosts_facts_leave_the_pool_when_the_loop_moves_past_it():
    pool = HostPool(connect_timeout=3)
    one, two = Host(name="one"), Host(name="two")
    calls: list[str] = []

    def uname(conn, word):
        calls.append(word)
        return conn.run("uname -s").stdout.strip()

    try:
        pool.moved_to(one, [two])
        assert pool.measure(one, "uname", uname, "one") == "Linux"
        pool.measure(one, "uname", uname, "one")
        assert calls == ["one"]  # one measurement while its checks run
        pool.moved_to(two, [])
        pool.measure(two, "uname", uname, "two")
        pool.measure(two, "uname", uname, "two")
        assert calls == ["one", "two"]
        # host one's checks are done: what it measured is gone, so asking again measures again
        pool.measure(one, "uname", uname, "one")
        assert calls == ["one", "two", "one"]
    finally:
        pool.close()


def test_a_done_read_ahead_is_dropped_with_its_host():
    pool = HostPool(connect_timeout=3)
    one, two = Host(name="one"), Host(name="two")
    calls: list[str] = []

    def uname(conn):
        calls.append("uname")
        return conn.run("uname -s").stdout.strip()

    try:
        pool.moved_to(one, [two])
        assert pool.measure_later(one, "uname", uname).result(timeout=30) == "Linux"
        pool.moved_to(two, [])
        pool.measure(one, "uname", uname)
        assert calls == ["uname", "uname"]  # the finished future went with host one's facts
    finally:
        pool.close()


CHECKS = '''
import sys

def test_quiet():
    print("x" * 100_000)

def test_loud():
    print("y" * 1000)
    assert False
'''


class _Kept:
    """The reports pytest's terminal keeps until the run ends (its stats), read at the end of the run."""

    def __init__(self):
        self.reports: list = []

    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter):
        self.reports = [r for rs in terminalreporter.stats.values() for r in rs if hasattr(r, "when")]


@pytest.mark.parametrize("flags, passed_output_kept", [([], False), (["-rP"], True)])
def test_a_passed_reports_captured_output_is_not_kept(tmp_path, flags, passed_output_kept):
    (tmp_path / "test_two.py").write_text(CHECKS)
    kept = _Kept()
    code = pytest.main([str(tmp_path / "test_two.py"), "-q", "-p", "acgs_verify.plugin", "-p", "no:cacheprovider",
                        "-p", "no:xdist", "--rootdir", str(tmp_path), "-c", "/dev/null", "--tb=short", "--assert=plain",
                        "--import-mode=importlib", *flags],
                       plugins=[kept])
    assert code == 1
    passed = [r for r in kept.reports if r.nodeid.endswith("test_quiet") and r.when == "call"]
    failed = [r for r in kept.reports if r.nodeid.endswith("test_loud") and r.when == "call"]
    assert len(passed) == 1 and len(failed) == 1
    assert bool(passed[0].sections) is passed_output_kept
    assert bool(passed[0].keywords) is passed_output_kept
    # a failure keeps what --tb and -r print
    assert any("y" * 1000 in text for _, text in failed[0].sections) and failed[0].keywords
