"""How a run spreads its work: how many xdist workers it starts, and host facts started early (prefetched) that are
computed once, shared, and fail the checks that read them when they fail."""

from __future__ import annotations

import threading

import pytest

from acgs_verify.check import ProbeError
from acgs_verify.cli import AUTO_WORKERS_MIN_CORES, AUTO_WORKERS_MIN_HOSTS, UsageError, _worker_args, workers_for
from acgs_verify.hosts.pool import HostPool
from acgs_verify.profile import Host


def test_auto_workers_none_for_one_host_or_few_cores():
    assert workers_for("auto", 1, cores=64) == 0
    assert workers_for("auto", AUTO_WORKERS_MIN_HOSTS - 1, cores=64) == 0
    assert workers_for("auto", 500, cores=AUTO_WORKERS_MIN_CORES - 1) == 0


def test_auto_workers_grow_with_hosts_up_to_the_cores():
    assert workers_for("auto", AUTO_WORKERS_MIN_HOSTS, cores=8) == 1
    assert workers_for("auto", 4 * AUTO_WORKERS_MIN_HOSTS, cores=8) == 4
    assert workers_for("auto", 500, cores=8) == 8


def test_workers_given_by_number_and_bad_values_are_usage_errors():
    assert workers_for("3", 1) == 3
    for bad in ("-1", "many"):
        with pytest.raises(UsageError):
            workers_for(bad, 1)


def test_a_users_dash_n_wins_over_workers():
    assert _worker_args("4", ["-n", "2"], 50) == []
    assert _worker_args("4", [], 50) == ["-n", "4", "--dist", "loadgroup"]
    assert _worker_args("0", [], 50) == []


def test_prefetched_fact_is_computed_once_and_shared(tmp_path):
    pool = HostPool(connect_timeout=3)
    host = Host(name="here", address="127.0.0.1", backend="local")
    calls = []

    def uname(node):
        calls.append(threading.current_thread().name)
        return node.check_output("uname -s")

    try:
        pool.connect([host])
        future = pool.measure_later(host, "uname", uname)
        assert pool.measure(host, "uname", uname) == future.result() == "Linux"
        assert pool.measure(host, "uname", uname) == "Linux"
        assert len(calls) == 1 and calls[0].startswith("acgs-prefetch")
    finally:
        pool.close()


def test_prefetched_fact_that_fails_fails_the_check_reading_it():
    pool = HostPool(connect_timeout=3)
    host = Host(name="here", address="127.0.0.1", backend="local")

    def broken(node):
        return node.check_output("exit 3")

    try:
        pool.measure_later(host, "broken", broken)
        with pytest.raises(ProbeError, match="broken on here"):
            pool.measure(host, "broken", broken)
    finally:
        pool.close()


def test_unreachable_host_found_once_by_connect():
    pool = HostPool(connect_timeout=1)
    host = Host(name="gone", address="127.0.0.1", backend="ssh", port=1, known_hosts="/dev/null")
    try:
        pool.connect([host])  # does not raise: the host's checks fail with the reason
        with pytest.raises(ProbeError, match="host unreachable"):
            pool.measure(host, "uname", lambda conn: conn.check_output("uname"))
    finally:
        pool.close()

