"""SVC-07's source is chosen by its probe (probes/error_rate.py), not in the check: the log while it names
requests, /metrics when it names none, and each source's emptiness said rather than taken for 0 % errors. Against
a real log file and a real HTTP server on loopback."""

from __future__ import annotations

import pytest

from acgs_verify.probes.error_rate import error_rate
from acgs_verify.probes.http import HttpProbe
from acgs_verify.probes.logs import LogReader
from acgs_verify.profile import Host, Service
from tests.servers import http_answering

LINE = "2026-11-27 10:00:00,123 - auth_service - INFO - request method=GET path=/api/v1/x status={} duration_ms=1\n"
PROM = ("# TYPE acgs_http_requests_total counter\n"
        'acgs_http_requests_total{method="GET",endpoint="/api/v1/policies",status="200"} 30\n'
        'acgs_http_requests_total{method="GET",endpoint="/api/v1/policies",status="503"} 10\n'
        'acgs_http_requests_total{method="GET",endpoint="/health",status="500"} 99\n')


@pytest.fixture
def metrics_port():
    with http_answering({"/metrics": (200, PROM.encode())}) as port:
        yield port


@pytest.fixture
def http():
    probe = HttpProbe()
    yield probe
    probe.close()


HOST = Host(name="app-1", address="127.0.0.1", backend="local", roles=["app"])


def _rate(http, port, log=None, metrics_path="/metrics"):
    service = Service(name="auth", port=port, log=str(log) if log else None, metrics_path=metrics_path)
    return error_rate(LogReader(None), http, HOST, service, lines=5000, timeout=5)


def test_the_log_is_the_source_while_it_names_requests(tmp_path, http, metrics_port):
    log = tmp_path / "auth.log"
    log.write_text(LINE.format(200) * 3 + LINE.format(502))
    rate = _rate(http, metrics_port, log)
    assert (rate.errors, rate.total, rate.source, rate.percent) == (1, 4, "log", 25.0)
    assert rate.describe() == "25.00 % 5xx (1 of 4 requests, from log)"


def test_metrics_are_the_source_when_the_log_names_no_request(tmp_path, http, metrics_port):
    log = tmp_path / "auth.log"
    log.write_text("2026-11-27 10:00:00,123 - auth_service - INFO - Constitutional Hash: cdd01ef066bc6cf2\n")
    rate = _rate(http, metrics_port, log)
    # the health probe's 500s are not the service's requests
    assert (rate.errors, rate.total, rate.source, rate.percent) == (10, 40, "acgs_http_requests_total", 25.0)
    assert rate.unseen[0] == f"0 request lines among the last 1 line of {log}"
    assert _rate(http, metrics_port).unseen[0] == "no log named for auth"


def test_a_source_with_nothing_to_count_gives_no_rate_and_says_why(tmp_path, http, metrics_port):
    log = tmp_path / "auth.log"
    log.write_text("")
    rate = _rate(http, metrics_port, log, metrics_path=None)
    assert rate.percent is None and rate.unseen == [f"0 request lines among the last 0 lines of {log}"]
    bad = _rate(http, metrics_port, log, metrics_path="/nothing")
    assert bad.percent is None and bad.problem.startswith("metrics unavailable: ") and "404" in bad.problem
