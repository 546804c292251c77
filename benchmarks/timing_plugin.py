"""Loaded by benchmarks/bench.py into `acgs-verify run` (`-- -p benchmarks.timing_plugin`): where a run's time goes.

Per test item, from the start of pytest's runtest protocol to its end (setup, call, teardown, report hooks,
JUnit): wall time and the on-CPU time of the thread running it (time.thread_time). A thread blocked on a socket,
a pipe, a child process or a sleep is not on a CPU, so on-CPU time is wall time minus the I/O wait: the
framework's per-check overhead plus the probe's own parsing (BENCHMARKS.md, "per-check overhead"). The check
function's own on-CPU time (the call phase's test function) is recorded apart, so the framework's share alone is
known too. Per process: the moments start-up ended (pytest configured), collection ended, the first and the last
check ran, and peak RSS. Written as JSON to $ACGS_BENCH_OUT/<pid>.json at exit.
"""

from __future__ import annotations

import json
import os
import resource
import time

import pytest

_items: list[dict] = []
_marks: dict[str, float] = {}


def pytest_configure(config):
    _marks["configured"] = time.time()


def pytest_collection_finish(session):
    _marks["collected"] = time.time()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _marks.setdefault("first_item", time.time())
    wall, cpu = time.perf_counter(), time.thread_time()
    item.stash[_CALL_CPU] = 0.0
    try:
        return (yield)
    finally:
        _items.append({"nodeid": item.nodeid, "wall": time.perf_counter() - wall, "cpu": time.thread_time() - cpu,
                       "check_cpu": item.stash[_CALL_CPU]})
        _marks["last_item"] = time.time()


_CALL_CPU = pytest.StashKey[float]()


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    cpu = time.thread_time()
    try:
        return (yield)
    finally:
        pyfuncitem.stash[_CALL_CPU] = time.thread_time() - cpu


def pytest_unconfigure(config):
    out = os.environ.get("ACGS_BENCH_OUT")
    if not out:
        return
    _marks["unconfigured"] = time.time()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    data = {"pid": os.getpid(), "worker": hasattr(config, "workerinput"), "marks": _marks, "items": _items,
            "cpu_seconds": usage.ru_utime + usage.ru_stime, "maxrss_kib": usage.ru_maxrss}
    with open(os.path.join(out, f"{os.getpid()}.json"), "w") as f:
        json.dump(data, f)
