"""A service's share of 5xx answers (SVC-07), from the source that has requests to count: its log first, then its
/metrics.

>>> rate = error_rate(logs, http, host, auth, lines=5000, timeout=2)
>>> rate.percent, rate.source
(0.12, 'log')

The log is read first because it is what the runbook tails; /metrics (acgs_http_requests_total) is asked only
when the log names no request line (or the profile names no log). What each source gave instead of requests is
kept (`unseen`), so an empty window is said as such and never judged as 0 % errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from acgs_verify.errors import ProbeError
from acgs_verify.probes import metrics
from acgs_verify.probes.logs import request_statuses
from acgs_verify.profile import Host, Service
from acgs_verify.words import plural

REQUESTS_METRIC = "acgs_http_requests_total"


@dataclass(frozen=True)
class ErrorRate:
    """`errors` of `total` requests, counted in `source` ("log" or the metric's name); `problem` is a /metrics
    that answered wrong (a failure of the service, not an empty window); `unseen` says why each source had none."""

    errors: float = 0
    total: float = 0
    source: str = ""
    problem: str | None = None
    unseen: list[str] = field(default_factory=list)

    @property
    def percent(self) -> float | None:
        return 100 * self.errors / self.total if self.total else None

    def describe(self) -> str:
        return f"{self.percent:.2f} % 5xx ({self.errors:g} of {self.total:g} requests, from {self.source})"


def error_rate(logs, http, host: Host, service: Service, lines: int, timeout: float) -> ErrorRate:
    """The 5xx rate of `service` on `host`: its log's last `lines` lines, else its metrics_path. An unreadable log
    raises ProbeError (logs.tail); a /metrics that does not answer, or gives no rate, is `problem`."""
    unseen = [f"no log named for {service.name}"]
    if service.log:
        read = logs.tail(host, service.log, lines)
        statuses = request_statuses(read)
        if statuses:
            return ErrorRate(sum(1 for s in statuses if s >= 500), len(statuses), "log")
        unseen = [f"0 request lines among the last {plural(len(read), 'line')} of {service.log}"]
    if not service.metrics_path:
        return ErrorRate(unseen=unseen)
    reply = http.get(service.url_on(host.address, service.metrics_path), timeout=timeout)
    if not reply.ok:
        return ErrorRate(problem=f"metrics unavailable: {reply.describe()}", unseen=unseen)
    try:  # the parser SVC-10 uses: JSON on /metrics is said to be JSON here too, not taken for "no requests"
        samples = metrics.exposition(reply.body, reply.truncated).samples
    except ProbeError as exc:
        return ErrorRate(problem=f"no request lines in the log and {service.metrics_path} gives no error rate: {exc}",
                         unseen=unseen)
    errors, total = metrics.error_ratio(samples, REQUESTS_METRIC)
    return ErrorRate(errors, total, REQUESTS_METRIC,
                     unseen=[*unseen, f"no {REQUESTS_METRIC} requests in {service.metrics_path}"])
