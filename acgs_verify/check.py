"""What a check uses to say what it measured and how that compares: the `runbook` mark and `Check`.

>>> @runbook("SVC-01")
... def test_health_endpoint_answers(service, http, thresholds, check):
...     reply = http.get(service.url("/health"), timeout=thresholds.health_timeout_seconds)
...     check.that(reply.ok, measured=reply.describe(), expected="2xx within 2 s")

A number against a limit is judged by `check.at_most` / `below` / `at_least` / `above` (and a value by
`check.equals`), which make `expected` (`p99 < 100 ms`) and `value` from the limit and the number:

>>> check.below(lat.p99, thresholds.latency_p99_fail_ms, "ms", what="p99", shown=f"p99 {lat.p99:.1f} ms")

A second condition the pass needs is `also=(holds, words)`, one that excuses the comparison `unless=(holds, words)`;
both are said in `expected` (`replay lag < 30 s, and every replica streaming`).

A failed `check.that` (or `check.fail`) is the outcome `failed`: measured, and wrong, with the runbook's next
step. A probe that cannot measure raises ProbeError, and a check that saw nothing to judge says
`check.cannot_measure(why)`: the outcome is `error`, whose next step is the reach step for the target
(`reach_step_for`: restore the connection), never the runbook's repair. The plugin's makereport hook is the one
place that turns exceptions into outcomes (`outcome_of`), so checks never catch a ProbeError themselves.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pytest

from acgs_verify.catalog import KINDS, CatalogEntry, entry
from acgs_verify.errors import ProbeError, Unreachable
from acgs_verify.redact import mask, printable

# ProbeError stays importable from here; probes take it from errors
__all__ = ["REACHABILITY_CHECKS", "Check", "ProbeError", "next_step_for", "outcome_of", "reach_step_for", "runbook",
           "said"]

# The checks whose purpose is that their own target answers when connected to: the health endpoint (SVC-01), the
# database accepting connections (DB-01), Redis answering PING (RD-01), the TLS endpoint's handshake (TLS-02). Their
# target refusing a connection on a host that answers is what they measure: `failed`, with the runbook's repair.
# When the host itself (or the address) does not answer, they could not measure, as any check. SVC-04 (the port
# listening) is not one: it reads the host's socket table, where "not listening" is its own measured failure
# (check.that) and a ProbeError is a table it could not read.
REACHABILITY_CHECKS = frozenset({"SVC-01", "DB-01", "RD-01", "TLS-02"})
HOST_UNREACHABLE = "host unreachable"
# a condition beside a comparison, as (holds, the words that say it): `also=(not trouble, "every replica streaming")`
Condition = tuple[bool, str] | None  # what hosts/pool.py says of a host it could not reach


def runbook(check_id: str, applies: Callable[[Any], bool] | None = None,
            prefetch: Callable[[Any, Any], Any] | None = None):
    """Tag a check with its catalog ID; severity and section markers come from the catalog.

    `applies` filters the targets the check is parametrized over (e.g. only services with a readiness path).
    `prefetch(hosts, host)` (a probe's, e.g. `system.prefetch_snapshot`) starts, before the first check of the run,
    a host measurement that mostly waits (a CPU sample's window), for the host of every target at once; it returns
    a Future, and the run waits for all of them before its first check, so nothing else of the run falls inside
    those windows. The check then asks the same probe function and gets that measurement.
    """
    e = entry(check_id)
    marks = [
        pytest.mark.runbook(check_id, applies=applies, prefetch=prefetch),
        getattr(pytest.mark, e.severity.lower()),
        getattr(pytest.mark, e.section),
    ]

    def decorate(fn):
        for m in reversed(marks):
            fn = m(fn)
        return fn

    return decorate


def _number(x: float) -> str:
    """A limit or a measurement as the runbook writes it: 80, 0.5, 1.5, 12.35, 0.000123 (never 12.345678, 80.0 or
    1e+06)."""
    if isinstance(x, int) or float(x).is_integer():
        return str(int(x))
    return f"{x:.3g}" if abs(x) < 1 else f"{x:.2f}".rstrip("0").rstrip(".")


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def said(config: pytest.Config, text: Any, multiline: bool = False) -> str:
    r"""What a check or a probe says (quoting a /health body, a log line, a file name, a database value), as a
    report may hold it: masked with the profile's secrets while still raw, then with every control character
    shown as an escape (redact.printable; newlines and tabs only where `multiline`).

    >>> said(config, "hash \x1b]0;x\x07 from Hunter\ttwo")     # a secret Hunter<TAB>two
    'hash \\x1b]0;x\\x07 from ***'
    """
    from acgs_verify.collector import PROFILE_KEY  # the plugin's stash; collector imports no check

    profile = config.stash.get(PROFILE_KEY, None)
    return printable(mask(str(text), profile.secret_values() if profile else []), multiline)


def next_step_for(e: CatalogEntry, target: Any = None, systemd: bool | None = None, profile: Any = None) -> str:
    """The catalog's next step with what the profile knows of the target: its unit, log, port, address and paths.

    >>> next_step_for(CATALOG["SVC-03"], auth_at_app_1, systemd=True)
    'Service Outage: `sudo systemctl restart acgs-auth-service`, then `tail -f /var/log/acgs/auth_service.log`'

    `systemd` is whether the target's host runs systemd (None: not known, the profile's unit is taken at its
    word); where it does not, or the profile names no unit, the step says what to restart instead. `profile`
    fills the paths (paths.logs, paths.app_root); a field nothing fills keeps its general words (`<paths.logs>`).
    """
    # printable once more over the whole step: the prose around the commands names hosts and services too
    return printable(e.next_step_with(_profile_fields(profile or getattr(target, "profile", None))
                                      | _target_fields(target, systemd)))


def _word(value: Any, path: bool = False) -> str:
    """A profile value as one word of a command the operator is told to paste: shell-quoted where the shell would
    read it as more (`'; touch M; '`, `$(...)`, a newline), control characters and backticks shown as escapes
    inside the quotes (a backtick would end the Markdown code span the command is shown in, a newline the
    line), so the pasted word runs nothing; a path that starts with `-` gets `./` so that no command reads it as
    an option.

    >>> _word("acgs-auth"), _word("/srv/$(id).log"), _word("-x", path=True)
    ('acgs-auth', "'/srv/$(id).log'", './-x')
    """
    text = str(value)
    if path and text.startswith("-"):
        text = "./" + text
    return printable(shlex.quote(text)).replace("`", "\\x60")


def _unit_args(unit: str) -> str:
    """A unit for `systemctl VERB ...`: after `--` when it would read as an option (`--version`)."""
    return ("-- " if unit.startswith("-") else "") + _word(unit)


def _profile_fields(profile: Any) -> dict[str, str]:
    if profile is None:
        return {}
    fields = {"logs": _word(profile.paths.logs, path=True),
              "scripts": _word(f"{profile.paths.app_root}/scripts", path=True)}
    urls = [f"`curl -f {_word(s.url_on(h.address, s.health_path))}`"
            for s in profile.services for h in profile.hosts_with_role(s.role)]
    if urls:  # CC-04: the services that make the decisions are the profile's, not the runbook's :8003 and :8005
        fields["health"] = ", ".join(urls[:3]) + (f" and {len(urls) - 3} more services" if len(urls) > 3 else "")
    return fields


def _target_fields(target: Any, systemd: bool | None) -> dict[str, str]:
    service, host = getattr(target, "service", None), getattr(target, "host", None)
    database, cache = getattr(target, "database", None), getattr(target, "redis", None)
    if database is not None:
        return _database_fields(database, host, systemd)
    if cache is not None:
        url = urlsplit(cache.url)
        tls = " --tls" if url.scheme == "rediss" else ""
        return {"redis_ping": f"`redis-cli{tls} -h {_word(url.hostname)} -p {url.port or 6379} ping`"}
    if service is None or host is None:
        return {}
    fields = {"tail": (f"`tail -f {_word(service.log, path=True)}`" if service.log
                       else "read the service's log (the profile names none)"),
              "owner": f"`ss -tlnp 'sport = :{service.port}'`"}
    if service.unit and systemd is not False:
        fields |= {"restart": f"`sudo systemctl restart {_unit_args(service.unit)}`",
                   "unit": _word(service.unit)}
    else:
        why = (f"{host.name} runs no systemd" if service.unit
               else f"the profile names no systemd unit for {service.name}")
        fields["restart"] = (f"restart the process that serves port {service.port} the way {host.name} starts it "
                             f"({why}; SVC-03's evidence in a passing run shows its command line)")
    return fields


def _database_fields(database: Any, host: Any, systemd: bool | None) -> dict[str, str]:
    url = urlsplit(database.dsn)
    where = host.name if host is not None else f"{url.hostname}"
    fields = {"db_reach": f"`pg_isready -h {_word(url.hostname)} -p {url.port or 5432}`"}
    if database.unit and systemd is not False and getattr(host, "systemd", None) is not False:
        fields |= {"db_status": f"`sudo systemctl status {_unit_args(database.unit)}` on {where}",
                   "db_start": f"`sudo systemctl start {_unit_args(database.unit)}` on {where}"}
    else:
        why = "the profile names no unit for it" if not database.unit else f"{where} runs no systemd"
        server = f"the PostgreSQL server that should listen on port {url.port or 5432} of {where}"
        fields |= {"db_status": f"check {server} ({why})", "db_start": f"start {server} ({why})"}
    return fields


def _refused(exc: BaseException) -> bool:
    """The target's host answered and refused the connection: something is up there, the port is not served."""
    seen: BaseException | None = exc
    for _ in range(8):  # the cause chain, bounded
        if seen is None:
            break
        if isinstance(seen, ConnectionRefusedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "refused" in str(exc).lower()


def _unreachable_in(exc: BaseException | None) -> Unreachable | None:
    """The Unreachable behind a ProbeError: a probe that says it in its own words (a log reader naming the log)
    raises another ProbeError, with the Unreachable as its cause or context."""
    for _ in range(8):  # the chain, bounded
        if exc is None or isinstance(exc, Unreachable):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _down(exc: BaseException, target: Any) -> str | None:
    """The host or address that did not answer at all, or None (the error is about something else)."""
    host = getattr(target, "host", None)
    found = _unreachable_in(exc)
    if found is not None:
        return found.target or (host.name if host is not None else None)
    if host is not None and str(exc).startswith((HOST_UNREACHABLE, f"{host.name} unreachable: ")):
        return host.name
    return None


def outcome_of(check_id: str, exc: BaseException, target: Any) -> tuple[str, str | None]:
    """(outcome, what did not answer) for a ProbeError a check raised: `error` (could not measure), except for a
    reachability check (REACHABILITY_CHECKS) whose own target refused, answered garbage or stalled on a host that
    answers: that is what the check measures (`failed`). Its host unreachable, or its address silent (an Unreachable
    that was not refused: the host or the service, nobody can tell), is `error` for it too.

    >>> outcome_of("DB-01", ProbeError("connection refused"), primary)
    ('failed', None)
    >>> outcome_of("DB-03", ProbeError("connection refused"), primary)
    ('error', None)
    >>> outcome_of("SVC-01", Unreachable("app-2", "10.0.0.5:22 did not answer"), auth_at_app_2)
    ('error', 'app-2')
    """
    down = _down(exc, target)
    if check_id in REACHABILITY_CHECKS:
        host = getattr(target, "host", None)
        host_down = down is not None and (host is None and not _refused(exc) or host is not None and (
            down == host.name or str(exc).startswith(HOST_UNREACHABLE)))
        # its own target refused, answered garbage or stalled: something answered there, and not as it should
        if not host_down and (down is None or _refused(exc)):
            return "failed", None
    return "error", down


def _quoted(value: Any) -> str:
    return shlex.quote(str(value))


def reach_step_for(target: Any, exc: BaseException | None = None) -> str:
    """How to restore the connection to what a check could not measure, from the profile's own values, shell-quoted:

    >>> reach_step_for(auth_at_app_2, Unreachable("app-2", "..."))
    'restore the connection to app-2, then run again: `ssh -v acgs@10.0.0.5`'

    an ssh host that did not answer: `ssh -v USER@ADDRESS`; an HTTP service: `curl -v URL`; a database:
    `pg_isready -h HOST -p PORT`; Redis: `redis-cli -h HOST -p PORT ping`; a TLS endpoint: `curl -v URL`. An
    Unreachable's own reach_step comes first. Never the runbook's repair: nothing was measured to repair.
    """
    found = _unreachable_in(exc)
    if found is not None and found.reach_step:
        return f"restore the connection to {found.target}, then run again: {found.reach_step}"
    host = getattr(target, "host", None)
    down = _down(exc, target) if exc is not None else None
    # a service's check that read through its host (its processes, its unit) and failed there: the host's step;
    # one that could not connect to the service's port: curl
    by_network = exc is not None and (_refused(exc) or "connect" in str(exc).lower() or "timed out" in str(exc))
    if host is not None and (down is not None or getattr(target, "database", None) is None
                             and (getattr(target, "service", None) is None or not by_network)):
        if host.backend == "local":
            return f"make what the error names readable to this run on {host.name} (or fix its path in the profile)"
        where = f"{host.user}@{host.address}" if host.user else host.address
        port = f" -p {host.port}" if host.port else ""
        return f"restore the connection to {host.name}, then run again: `ssh -v{port} {_quoted(where)}`"
    service, database, cache = (getattr(target, k, None) for k in ("service", "database", "redis"))
    if database is not None:
        url = urlsplit(database.dsn)
        return (f"restore the connection to {target.id}, then run again: "
                f"`pg_isready -h {_quoted(url.hostname)} -p {url.port or 5432}`")
    if cache is not None:
        url = urlsplit(cache.url)
        tls = " --tls" if url.scheme == "rediss" else ""
        return (f"restore the connection to {target.id}, then run again: "
                f"`redis-cli{tls} -h {_quoted(url.hostname)} -p {url.port or 6379} ping`")
    if service is not None and host is not None:
        url = service.url_on(host.address, service.health_path)
        return f"restore the connection to {target.id}, then run again: `curl -v {_quoted(url)}`"
    url = getattr(target, "url", None)
    if isinstance(url, str):
        return f"restore the connection to {target.id}, then run again: `curl -v {_quoted(url)}`"
    what = getattr(target, "id", None) or "the target"
    return f"make what the error names readable to this run for {what} (or fix its path in the profile)"


class Check:
    """Bound to one test item: records what was measured, and fails with the catalog's next step."""

    def __init__(self, item: pytest.Item, target_id: str, target: Any = None, profile: Any = None,
                 systemd: bool | None = None):
        mark = item.get_closest_marker("runbook")
        self.entry = entry(mark.args[0])
        self.target_id = target_id
        self._item = item
        self._target = target
        self._profile = profile
        # whether the target's host runs systemd, as the plugin found it (None: not known); a next step's words
        self.systemd = systemd

    def next_step(self) -> str:
        """The catalog's next step filled from this check's target and the run's profile (next_step_for)."""
        return next_step_for(self.entry, self._target, self.systemd, self._profile)

    def _said(self, text: Any, multiline: bool = False) -> str:
        return said(self._item.config, text, multiline)

    def _shown(self, value: Any, limit: int = 300, multiline: bool = False) -> str:
        # masked and escaped before it is cut: a secret cut in half would leave its first half behind
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        return _short(self._said(text, multiline), limit)

    def _said_value(self, value: Any) -> Any:
        # a value (CC-02's other hashes, a list of names) may carry what a target said inside a list or a map
        if isinstance(value, str):
            return self._said(value)
        if isinstance(value, list | tuple):
            return [self._said_value(v) for v in value]
        if isinstance(value, dict):
            return {self._said_value(k): self._said_value(v) for k, v in value.items()}
        return value

    def _record(self, name: str, value: Any) -> None:
        # every text a report, JUnit or Allure shows is recorded here or in message(): made safe once, here
        value = self._said_value(value)
        props = self._item.user_properties
        props[:] = [(k, v) for k, v in props if k != name]
        props.append((name, value))

    def measured(self, measured: Any, expected: str | None = None, value: Any = None) -> None:
        """Record the measurement (shown in reports) without judging it."""
        self._record("measured", self._shown(measured))
        if expected is not None:
            self._record("expected", expected)
        if value is not None:
            self._record("value", value)

    def evidence(self, name: str, content: Any) -> None:
        """Attach raw evidence (a response body, query rows, log lines) for the reports."""
        self._item.user_properties.append(("evidence:" + self._said(name), self._shown(content, 20_000, True)))

    def kind(self, kind: str) -> None:
        """This failure is of another kind than the catalog's for the ID (catalog.KINDS), e.g. SVC-02 finding the
        body healthy but naming another hash: `check.kind("hash")`."""
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
        self._record("kind", kind)

    STEP_STATUSES = ("passed", "failed", "broken", "skipped")

    def stage(self, name: str, status: str, detail: Any = "") -> None:
        """Record one stage of a staged check as it ended (Allure shows it as a step, summary.json keeps it):
        `check.stage("port owner", "passed", "pid 42 `uvicorn auth`")`. status: passed, failed, broken (could not
        measure), skipped."""
        if status not in self.STEP_STATUSES:
            raise ValueError(f"unknown step status {status!r}; known: {', '.join(self.STEP_STATUSES)}")
        steps = [*dict(self._item.user_properties).get("steps", []),
                 {"name": self._shown(name), "status": status, "detail": self._shown(detail, 2000) if detail else ""}]
        self._record("steps", steps)

    @contextmanager
    def step(self, name: str) -> Iterator[dict]:
        """A stage around the code that does it: passed when the block ends, broken when a probe could not
        measure, failed when the check failed in it, skipped when it skipped; the detail is what the block sets.

        >>> with check.step("restore into scratch") as s:
        ...     drill = restore_drill(...)
        ...     s["detail"] = f"{drill.database} in {drill.seconds:.1f} s"
        """
        said: dict = {"detail": ""}
        try:
            yield said
        except ProbeError as exc:
            self.stage(name, "broken", said["detail"] or exc)
            raise
        except pytest.skip.Exception as exc:
            self.stage(name, "skipped", said["detail"] or exc.msg)
            raise
        except BaseException as exc:
            self.stage(name, "failed", said["detail"] or str(exc).split("\n")[0])
            raise
        self.stage(name, said.get("status", "passed"), said["detail"])

    def warn(self, message: str) -> None:
        """Passes, but the reports show the warning (e.g. p99 above target, below the failure limit)."""
        self._record("warning", message)

    def that(self, ok: bool, measured: Any, expected: str, why: str | None = None, value: Any = None) -> None:
        self.measured(measured, expected, value)
        if not ok:
            self.fail(f"{why + ': ' if why else ''}measured {self._shown(measured)}; expected {expected}")

    # Structured expectations: the check gives the number, the limit and the unit; the comparison, the `expected`
    # words (`<= 80 %`) and the `value` the reports keep (summary.json, metrics.prom) are made here, once, so no
    # check formats a threshold by hand. `what` names the quantity (`p99`), `shown` the measurement in the check's
    # own words (`CPU 93.0 % busy over 0.5 s`; default: the number and its unit).

    def at_most(self, measured: float, limit: float, unit: str = "", *, what: str = "", shown: Any = None,
                value: Any = None, why: str | None = None, also: Condition = None, unless: Condition = None) -> None:
        """Passes when measured <= limit: `check.at_most(snap.cpu_percent, thresholds.cpu_percent_max, "%")`,
        expected `<= 80 %`."""
        self._compare(measured <= limit, "<=", measured, limit, unit, what, shown, value, why, also, unless)

    def below(self, measured: float, limit: float, unit: str = "", *, what: str = "", shown: Any = None,
              value: Any = None, why: str | None = None, also: Condition = None, unless: Condition = None) -> None:
        """Passes when measured < limit: `check.below(lat.p99, limit, "ms", what="p99")`, expected `p99 < 500 ms`."""
        self._compare(measured < limit, "<", measured, limit, unit, what, shown, value, why, also, unless)

    def at_least(self, measured: float, limit: float, unit: str = "", *, what: str = "", shown: Any = None,
                 value: Any = None, why: str | None = None, also: Condition = None, unless: Condition = None) -> None:
        """Passes when measured >= limit: `check.at_least(rate, thresholds.redis_hit_rate_percent_min, "%")`,
        expected `>= 80 %`."""
        self._compare(measured >= limit, ">=", measured, limit, unit, what, shown, value, why, also, unless)

    def above(self, measured: float, limit: float, unit: str = "", *, what: str = "", shown: Any = None,
              value: Any = None, why: str | None = None, also: Condition = None, unless: Condition = None) -> None:
        """Passes when measured > limit: `check.above(days, thresholds.cert_fail_days, "days left")`, expected
        `> 14 days left` (the unit is the words after the number)."""
        self._compare(measured > limit, ">", measured, limit, unit, what, shown, value, why, also, unless)

    def equals(self, measured: Any, wanted: Any, *, what: str = "", shown: Any = None, value: Any = None,
               why: str | None = None, also: Condition = None, unless: Condition = None) -> None:
        """Passes when measured == wanted: `check.equals(state, "active", shown=f"{unit} is {state}")`, expected
        `active`; with `what`, expected `what = wanted` (`acgs:constitutional_hash = cdd01ef066bc6cf2`)."""
        expected = f"{what} = {wanted}" if what else f"{wanted}"
        if shown is None:
            shown = f"{what} = {measured}" if what else measured
        self._judge(measured == wanted, expected, shown, measured if value is None else value, why, also, unless)

    def _compare(self, ok: bool, op: str, measured: float, limit: float, unit: str, what: str, shown: Any,
                 value: Any, why: str | None, also: Condition, unless: Condition) -> None:
        unit = f" {unit}" if unit else ""
        expected = f"{what + ' ' if what else ''}{op} {_number(limit)}{unit}"
        if shown is None:
            shown = f"{what + ' ' if what else ''}{_number(measured)}{unit}"
        if value is None:
            value = round(measured, 3) if isinstance(measured, float) else measured
        self._judge(ok, expected, shown, value, why, also, unless)

    def _judge(self, ok: bool, expected: str, shown: Any, value: Any, why: str | None, also: Condition,
               unless: Condition) -> None:
        # `also` is a second condition the pass needs (BK-01's latest link, DB-07's streaming), `unless` one that
        # excuses the comparison (SVC-12's noise floor); both are said in `expected`, so a reader sees the whole rule
        if also is not None:
            ok, expected = ok and also[0], f"{expected}, and {also[1]}"
        if unless is not None:
            ok, expected = ok or unless[0], f"{expected}, unless {unless[1]}"
        self.that(ok, measured=shown, expected=expected, why=why, value=value)

    def fail(self, message: str | None = None, *, measured: Any = None, expected: str | None = None) -> None:
        """Fail unconditionally: `check.fail("df /var: no answer")`, or, recording what was measured and expected
        as `that` does, `check.fail(measured="no backup folder", expected="a backup within 26 h")`."""
        if measured is not None:
            self.measured(measured, expected)
            message = message or f"measured {self._shown(measured)}; expected {expected}"
        if dict(self._item.user_properties).get("kind") == "unmeasured":
            # the check said it got no answer to judge (check.kind("unmeasured")): could not measure, an error
            # with the reach step, not a failure with the runbook's repair
            self.cannot_measure(message or "no answer to judge")
        pytest.fail(self.message(message), pytrace=False)

    def cannot_measure(self, reason: str) -> None:
        """Could not measure (`error`, not `failed`): nothing to judge, e.g. no rows visible to the role. The
        next step is the reach step for the target, not the runbook's repair (the plugin's makereport hook)."""
        raise ProbeError(reason)

    error = cannot_measure

    def skip(self, reason: str) -> None:
        pytest.skip(self._said(f"{self.entry.id} {self.target_id}: {reason}"))

    def message(self, text: str) -> str:
        step = self.next_step()
        self._record("next_step", step)  # the reports' next step (collector.py), as the message says it
        return self._said(f"{self.entry.id} {self.target_id}: {text}. Next: {step}")
