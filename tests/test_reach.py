"""A target that is down is one fact: reachability is measured once per address and port per run (hosts/reach.py),
and every later check or probe on it raises Unreachable at once, citing the first try. A port that refuses answered.

The host that never answers is a loopback listener whose accept queue is full (tests.servers.dead_listener): the
kernel drops every SYN, so a connect times out as to a host that is down. No traffic leaves 127.0.0.0/8."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import yaml

from acgs_verify.errors import ProbeError, Unreachable
from acgs_verify.hosts import reach
from acgs_verify.hosts.pool import HostPool
from acgs_verify.probes import system
from acgs_verify.probes.http import HttpProbe
from acgs_verify.probes.processes import processes
from acgs_verify.profile import Host
from tests.conftest import SHARED_MACHINE, run_cli
from tests.servers import closed_port, dead_listener

TIMEOUT = 1.0
# the silent addresses of this module: 127.0.0.0/8 only, and none that the sandbox or another module binds
DEAD = "127.0.0.31"
DEAD_RUN = "127.0.0.32"


def _timed(fn):
    started = time.monotonic()
    try:
        fn()
    except ProbeError as exc:
        return exc, time.monotonic() - started
    return None, time.monotonic() - started


def test_a_port_that_does_not_answer_is_waited_for_once_and_cited_after():
    with dead_listener(DEAD) as port, reach.session([], TIMEOUT):
        reach.asking("SVC-01")
        first, took = _timed(lambda: reach.gate(DEAD, port, kind="http", url=f"http://{DEAD}:{port}/health"))
        assert isinstance(first, Unreachable) and TIMEOUT * 0.9 <= took < TIMEOUT + 1.5, (first, took)
        assert str(first) == f"{DEAD}:{port} unreachable: {DEAD}:{port} did not answer within 1 s (first tried by " \
                             "SVC-01)"
        assert (first.address, first.port) == (DEAD, port)
        assert first.reach_step == f"`curl -v http://{DEAD}:{port}/health`"
        reach.asking("SVC-06")
        again, took = _timed(lambda: reach.gate(DEAD, port))
        assert isinstance(again, Unreachable) and took < 0.2, took
        assert "(first tried by SVC-01)" in str(again)  # the first try, not the one asking now


def test_a_port_that_refuses_answered_and_is_no_unreachable_host():
    with closed_port() as port, reach.session([], TIMEOUT) as run:
        reach.gate("127.0.0.1", port)  # the host said no at once: up, and the service's own checks say it is down
        assert run.known("127.0.0.1", port).answered


def test_outside_a_run_nothing_is_cached_or_raised():
    """A cache that outlived its run would judge a port the kernel has since given to someone else."""
    with dead_listener(DEAD) as port:
        assert reach.current() is None
        reach.gate(DEAD, port)  # measures nothing, raises nothing
        reply = HttpProbe().get(f"http://{DEAD}:{port}/health", timeout=TIMEOUT)
        assert reply.error and "timed out" in reply.error


def test_threads_asking_at_once_share_one_try():
    with dead_listener(DEAD) as port, reach.session([], TIMEOUT):
        errors: list[BaseException] = []

        def ask():
            try:
                reach.gate(DEAD, port)
            except Unreachable as exc:
                errors.append(exc)

        started = time.monotonic()
        threads = [threading.Thread(target=ask) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        took = time.monotonic() - started
        assert len(errors) == 8 and len({str(e) for e in errors}) == 1
        assert took < 2 * TIMEOUT, took  # one timeout, waited for by all, not one after another


def test_a_host_whose_ssh_port_does_not_answer_makes_every_port_of_it_unreachable_at_once(tmp_path):
    """HostPool's ssh handshake is the host's measurement; then an HTTP service on the same address, which alone
    would be refused at once, is Unreachable citing the host, and SYS-06's TCP samples too."""
    with dead_listener(DEAD) as ssh_port, closed_port(DEAD) as http_port:
        host = Host(name="app-2", address=DEAD, port=ssh_port, backend="ssh", user="acgs",
                    known_hosts=str(tmp_path / "none"))
        pool = HostPool(connect_timeout=TIMEOUT)
        try:
            with reach.session([host], TIMEOUT):
                reach.asking("SYS-02")
                first, took = _timed(lambda: processes(pool, host))
                assert isinstance(first, Unreachable) and took < TIMEOUT + 2, (first, took)
                assert str(first).startswith(f"app-2 unreachable: {DEAD}:{ssh_port} did not answer within 1 s (")
                assert str(first).endswith("(first tried by SYS-02)") and "timed out" in str(first), str(first)
                assert first.reach_step == f"`ssh -v -p {ssh_port} acgs@{DEAD}`"
                reach.asking("SVC-01")
                for probe in (lambda: processes(pool, host),
                              lambda: HttpProbe().get(f"http://{DEAD}:{http_port}/health", timeout=5),
                              lambda: system.tcp_connect_ms(DEAD, http_port, 10, 5)):
                    again, took = _timed(probe)
                    assert isinstance(again, Unreachable) and took < 0.3, (again, took)
                    assert str(again) == str(first), str(again)
        finally:
            pool.close()


def test_the_first_port_asked_of_a_host_is_measured_with_its_ssh_port():
    """An HTTP check that comes before any host check still finds the host down in one connect timeout: its ssh
    port is tried beside the service's, so the host's other checks do not wait a second timeout."""
    with dead_listener(DEAD) as ssh_port, dead_listener(DEAD) as http_port:
        host = Host(name="app-2", address=DEAD, port=ssh_port, backend="ssh")
        with reach.session([host], TIMEOUT) as run:
            reach.asking("CC-04")
            probe = HttpProbe()
            first, took = _timed(lambda: probe.get(f"http://{DEAD}:{http_port}/metrics", timeout=5))
            assert isinstance(first, Unreachable) and took < TIMEOUT + 1, (first, took)
            assert first.target == "app-2" and first.port == ssh_port, str(first)
            assert not run.known(DEAD, ssh_port).answered
            again, took = _timed(lambda: system.tcp_connect_ms(DEAD, ssh_port, 10, 5))
            assert isinstance(again, Unreachable) and took < 0.3
            probe.close()


def test_an_address_two_hosts_share_is_judged_port_by_port():
    """Two sshd ports on one machine: one that does not answer says nothing of the other's."""
    with dead_listener(DEAD) as silent, closed_port(DEAD) as other:
        hosts = [Host(name="a", address=DEAD, port=silent, backend="ssh"),
                 Host(name="b", address=DEAD, port=other, backend="ssh")]
        with reach.session(hosts, TIMEOUT):
            with pytest.raises(Unreachable):
                reach.gate(DEAD, silent)
            reach.gate(DEAD, other)  # refused: answered


# ------------------------------------------------------------------------------------------- a whole run


def _run(profile: Path, tmp_path: Path, name: str):
    reports = tmp_path / f"reports-{name}"
    started = time.monotonic()
    res = run_cli("run", "--profile", str(profile), "--report-dir", str(reports), *SHARED_MACHINE)
    took = time.monotonic() - started
    assert res.returncode in (0, 1, 2), res.stdout[-2000:] + res.stderr[-2000:]
    return res, json.loads((reports / "latest" / "summary.json").read_text()), took


def test_a_run_with_a_host_that_never_answers_costs_one_connect_timeout(healthy_sandbox, tmp_path):
    """The sandbox's whole catalog, with and without an extra ssh host that never answers and a service on it (its
    health, ready/live, metrics and compliance metric): the dead host's run takes at most one connect timeout more
    than the healthy run, plus 2 s, plus slack for a loaded 2-core machine. Before reach.py each HTTP check and SYS-06
    waited a timeout of its own (tens of seconds)."""
    timeout = 2
    data = yaml.safe_load(healthy_sandbox.profile_path.read_text())
    data.setdefault("thresholds", {})["connect_timeout_seconds"] = timeout
    healthy = tmp_path / "healthy.yaml"
    healthy.write_text(yaml.safe_dump(data))
    with dead_listener(DEAD_RUN) as ssh_port, dead_listener(DEAD_RUN) as service_port:
        auth = next(s for s in data["services"] if s["name"] == "auth")
        data["hosts"].append({"name": "app-2", "address": DEAD_RUN, "backend": "ssh", "port": ssh_port,
                              "roles": ["edge"], "user": "acgs"})
        data["services"].append({**auth, "name": "edge", "role": "edge", "port": service_port, "unit": "acgs-edge",
                                 "compliance_metric": "acgs_constitutional_compliance",
                                 "process": "uvicorn .*edge"})
        dead = tmp_path / "dead.yaml"
        dead.write_text(yaml.safe_dump(data))
        _, _, healthy_took = _run(healthy, tmp_path, "healthy")
        res, summary, dead_took = _run(dead, tmp_path, "dead")
    budget = timeout + 2 + 3  # the figure (one timeout + 2 s), and 3 s for a loaded shared machine
    print(f"healthy {healthy_took:.1f} s, with app-2 down {dead_took:.1f} s")
    assert dead_took - healthy_took <= budget, (dead_took, healthy_took, res.stdout[-1500:])
    on_dead = [c for c in summary["checks"] if c["host"] == "app-2"]
    assert sum(c["outcome"] != "skipped" for c in on_dead) > 20, [c["id"] for c in on_dead]
    for c in (c for c in on_dead if c["outcome"] != "skipped"):  # SVC-12, MON-02: judge history, touch nothing
        assert c["outcome"] in ("failed", "error") and f"app-2 unreachable: {DEAD_RUN}:{ssh_port} did not answer" \
            in c["message"], c
    cc04 = next(c for c in summary["checks"] if c["id"] == "CC-04")
    assert "app-2 unreachable" in cc04["message"], cc04


def test_a_database_redis_or_tls_port_that_does_not_answer_is_waited_for_once(tmp_path):
    """PgPool, RedisPool and the TLS probe ask the run's cache before their client connects: the second ask of a
    port that timed out is Unreachable at once with the step for that kind of target, whatever the client."""
    from acgs_verify.probes import tls
    from acgs_verify.probes.postgres import PgPool
    from acgs_verify.probes.redis import RedisPool
    from acgs_verify.profile import load_profile

    with dead_listener(DEAD) as pg_port, dead_listener(DEAD) as redis_port, dead_listener(DEAD) as tls_port:
        path = tmp_path / "p.yaml"
        path.write_text(yaml.safe_dump({
            "hosts": [{"name": "here", "address": "127.0.0.1", "backend": "local", "roles": ["db", "cache"]}],
            "databases": [{"name": "primary", "dsn": f"postgresql://acgs@{DEAD}:{pg_port}/acgs"}],
            "redis": [{"name": "cache", "url": f"redis://{DEAD}:{redis_port}/0"}],
            "thresholds": {"connect_timeout_seconds": TIMEOUT, "db_connect_timeout_seconds": 5,
                           "redis_timeout_seconds": 5}}))
        profile = load_profile(str(path))
        pg, caches = PgPool(profile), RedisPool(profile)
        try:
            with reach.session(profile.hosts, TIMEOUT):
                reach.asking("DB-01")
                asks = {
                    "postgres": (lambda: pg.get(profile.databases[0]), pg_port, f"`pg_isready -h {DEAD} -p {pg_port}`"),
                    "redis": (lambda: caches.get(profile.redis[0]), redis_port,
                              f"`redis-cli -h {DEAD} -p {redis_port} ping`"),
                    "tls": (lambda: tls.endpoint(f"https://{DEAD}:{tls_port}", None, 5), tls_port,
                            f"`openssl s_client -connect {DEAD}:{tls_port}`"),
                }
                for kind, (ask, port, step) in asks.items():
                    first, took = _timed(ask)
                    assert isinstance(first, Unreachable) and took < TIMEOUT + 1.5, (kind, first, took)
                    assert f"{DEAD}:{port} did not answer within 1 s (first tried by DB-01)" in str(first), str(first)
                    assert first.reach_step == step, (kind, first.reach_step)
                    again, took = _timed(ask)
                    assert isinstance(again, Unreachable) and took < 0.3 and str(again) == str(first), (kind, took)
        finally:
            pg.close()
            caches.close()
