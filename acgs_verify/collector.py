"""From pytest's test reports to the result model (results.py), and the run's state kept on pytest's config.

    >>> collector = config.stash[COLLECTOR_KEY]      # registered by plugin.py in pytest_configure
    >>> collector.result                             # RunResult once the session has finished, else None
    RunResult(run_id='20250601T020000Z-sandbox-smoke-1a2b', ...)

ResultCollector builds the RunResult on the process that sees every report (the xdist controller, or the one
process of a plain run), and finishes a plain `pytest checks` run as `acgs-verify run` does: its exit code, its
reports with --report-dir, its last line. AllureDetails adds labels and evidence when allure-pytest writes results.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from acgs_verify.catalog import CATALOG
from acgs_verify.profile import Profile
from acgs_verify.redact import last_line, mask, one_line
from acgs_verify.report.allure import SEVERITY as ALLURE_SEVERITY  # one mapping for both Allure writers
from acgs_verify.results import INTERRUPTED, CheckResult, RunResult, in_catalog_order, shortened
from acgs_verify.run_state import STATE_PROPERTY, empty, gather
from acgs_verify.shards import SHARD_KEY, Shard, ShardError
from acgs_verify.shards import resolve as resolve_shard

PROFILE_KEY = pytest.StashKey[Profile]()
CHUNK_KEY = pytest.StashKey()  # the chunk of hosts this session checks (chunks.py), when the run is chunked
COLLECTOR_KEY = pytest.StashKey["ResultCollector"]()
RUN_OPTIONS_KEY = pytest.StashKey["RunOptions"]()
# plain `pytest checks --report-dir DIR`: where this run is being written (acgs-verify run keeps its own)
PLAIN_RUN_KEY = pytest.StashKey["PlainRun"]()
# the run's HostPool after the checks, kept open when the gate stage reads the hosts again (the evidence gate)
HANDED_POOL_KEY = pytest.StashKey()
# the longest message a result keeps: a check's own message lists what it found, so it may run past the error
# it quotes (ONE_LINE_MAX); a port owner's command line and a deep log path in its next step take 600 together
MESSAGE_MAX = 1000
# the `when` of the report xdist makes for the test a worker was running when it died (Ctrl-C reaches the workers
# too); it carries none of the test's properties
WORKER_CRASH = "???"


def is_plain(config: pytest.Config) -> bool:
    """A run of plain pytest over the checks (acgs-verify run passes --acgs-run-id and finishes the run itself)."""
    return config.getoption("acgs_run_id") is None and not config.getoption("collectonly")


@dataclass
class RunOptions:
    since: datetime | None = None
    waivers: list = field(default_factory=list)
    shard: Shard | None = None  # --shard K/N: this run checks only the hosts and targets of shard K


def run_options(config: pytest.Config) -> RunOptions:
    """--since as a datetime, --waivers as Waiver objects and --shard as a Shard, parsed once; bad input is a
    UsageError line."""
    if RUN_OPTIONS_KEY not in config.stash:
        from acgs_verify.options import parse_since

        opts = RunOptions()
        since = config.getoption("acgs_since")
        if since:
            if since == "snapshot":
                raise pytest.UsageError("--since snapshot needs acgs-verify run (it finds the snapshot)")
            try:
                opts.since = parse_since(since)
            except ValueError as exc:
                raise pytest.UsageError(str(exc)) from None
        if config.getoption("acgs_waivers"):
            from acgs_verify.waivers import WaiverError, load_waivers

            try:
                opts.waivers = load_waivers(config.getoption("acgs_waivers"))
            except WaiverError as exc:
                raise pytest.UsageError(str(exc)) from None
        try:
            opts.shard = resolve_shard(config.getoption("acgs_shard"), config.getoption("acgs_run_group"),
                                       config.getoption("acgs_gate"))
        except ShardError as exc:
            raise pytest.UsageError(str(exc)) from None
        config.stash[RUN_OPTIONS_KEY] = opts
    return config.stash[RUN_OPTIONS_KEY]


@dataclass
class PlainRun:
    run_id: str
    partial: Path
    report_dir: Path


def start_plain_run(config: pytest.Config, report_dir: Path) -> None:
    """`pytest checks --report-dir DIR`: the run's .partial-* directory, and junit.xml into it."""
    from acgs_verify import rundir

    rundir.usable_report_dir(report_dir)
    run_id = rundir.new_run_id(config.stash[PROFILE_KEY].name, config.getoption("acgs_gate"))
    config.stash[PLAIN_RUN_KEY] = PlainRun(run_id, rundir.start(report_dir, run_id), report_dir)
    if not config.option.xmlpath:  # junit.xml, as acgs-verify run writes it
        config.option.xmlpath = str(config.stash[PLAIN_RUN_KEY].partial / "junit.xml")


def handed_pool(config: pytest.Config | None):
    """The run's HostPool, kept open for the gate stage, now the caller's to close; or None (no evidence gate, or
    the checks ran in xdist workers, whose pools are gone)."""
    if config is None or HANDED_POOL_KEY not in config.stash:
        return None
    pool = config.stash[HANDED_POOL_KEY]
    del config.stash[HANDED_POOL_KEY]
    return pool


def close_handed_pool(config: pytest.Config | None) -> None:
    """A run that ends without its gate stage (pytest failed, a --wait attempt): the kept pool is closed now."""
    pool = handed_pool(config)
    if pool is not None:
        pool.close()


def register_collectors(config: pytest.Config) -> None:
    """AllureDetails on every process; the ResultCollector on the one that sees every report (xdist's controller,
    or the single process of a run without workers), at config.stash[COLLECTOR_KEY]."""
    config.pluginmanager.register(AllureDetails(config), "acgs-verify-allure")
    if not hasattr(config, "workerinput"):
        config.stash[COLLECTOR_KEY] = ResultCollector(config)
        config.pluginmanager.register(config.stash[COLLECTOR_KEY], "acgs-verify-results")


class ResultCollector:
    """Builds the RunResult from test reports (which xdist forwards from its workers)."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.start = time.time()
        self.by_nodeid: dict[str, CheckResult] = {}
        self.result: RunResult | None = None
        self.interrupted = False
        self._crashed: dict[str, str] = {}  # nodeid -> xdist's "worker ... crashed while running ..."
        self._secret_values: list[str] | None = None
        self._ending = None  # finish.Ending once a run of the checks has been closed
        self.state: dict | None = None  # the snapshot's state, when the gate keeps one (run_state.py)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == WORKER_CRASH:
            self._crashed[report.nodeid] = _message(report, self._secrets())
        props = dict((k, v) for k, v in report.user_properties if not k.startswith("evidence:"))
        if "runbook_id" not in props:
            return
        res = self.by_nodeid.get(report.nodeid)
        if res is None:
            e = CATALOG[props["runbook_id"]]
            # interrupted until its test body's report (or a setup that did not pass) says otherwise: a check whose
            # body the run stopped sends no report for it, and must not read as passed
            res = CheckResult(nodeid=report.nodeid, id=e.id, section=e.section, severity=e.severity,
                              title=e.title, target=props.get("target", "-"), next_step=e.next_step,
                              host=props.get("host"), outcome=INTERRUPTED, kind=e.kind)
            self.by_nodeid[report.nodeid] = res
        res.duration += report.duration
        # next_step: filled from the target; kind: the check's own for this failure (Check.kind), steps: Check.step
        for key in ("measured", "expected", "value", "warning", "next_step", "kind", "steps"):
            if key in props:
                setattr(res, key, props[key])
        for k, v in report.user_properties:
            if k.startswith("evidence:"):
                res.evidence[k.split(":", 1)[1]] = v
        if "unreachable" in props:
            res.unreachable = props["unreachable"]
        if STATE_PROPERTY in props:  # the snapshot's tables and keys, recorded by DB-01/RD-01 (run_state.py)
            self.state = self.state or empty()
            gather(self.state, report.user_properties)
        if report.when == "call" or report.outcome != "passed":
            outcome = report.outcome
            if outcome == "failed" and props.get("outcome") in ("failed", "error"):
                outcome = props["outcome"]  # the makereport hook's verdict on a ProbeError (plugin.py)
            elif report.when != "call" and outcome == "failed":
                outcome = "error"
            if res.outcome in ("failed", "error") and outcome in ("passed", "skipped"):
                return  # teardown passing does not undo a failure
            res.outcome = outcome
            if outcome != "passed":
                res.message = _message(report, self._secrets())

    def _secrets(self) -> list[str]:
        # masked before a message is cut, so a secret cut in half cannot show its first half
        if self._secret_values is None:
            profile = self.config.stash.get(PROFILE_KEY, None)
            self._secret_values = profile.secret_values() if profile else []
        return self._secret_values

    def pytest_keyboard_interrupt(self, excinfo) -> None:
        self.interrupted = True

    @pytest.hookimpl(trylast=True)  # after junitxml has written junit.xml, which _write_junit replaces
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        profile = self.config.stash.get(PROFILE_KEY, None)
        secrets = self._secrets()
        self._settle_interrupted()
        for res in self.by_nodeid.values():
            res.message = mask(res.message, secrets)
            for name in ("measured", "expected", "warning"):  # a probe may quote a DSN or a command line
                if getattr(res, name):
                    setattr(res, name, mask(str(getattr(res, name)), secrets))
            res.evidence = {k: mask(v, secrets) for k, v in res.evidence.items()}
        plain_run = self.config.stash.get(PLAIN_RUN_KEY, None)
        self.result = RunResult(
            run_id=(self.config.getoption("acgs_run_id") or (plain_run.run_id if plain_run else None)
                    or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")),
            profile=profile.name if profile else "",
            gate=self.config.getoption("acgs_gate"),
            started=datetime.fromtimestamp(self.start, UTC).isoformat(timespec="seconds"),
            duration=time.time() - self.start,
            constitutional_hash=profile.constitutional_hash if profile else "",
            checks=in_catalog_order(self.by_nodeid.values()),
            complete=not self.interrupted and exitstatus not in (2, 3, 4) and not self._cut_off(),
            planned=getattr(session, "testscollected", None) or None,  # xdist's controller sets it from its workers
            notes=_profile_notes(profile) if profile else [],
        )
        if self.state is not None:
            self.result.extra["state"] = self.state
        _apply_run_options(run_options(self.config), self.result)
        self._write_junit()
        if self._same_as_run():
            if exitstatus == 5 or not self.result.checks:
                self.result.notes.append("no checks were collected: check the gate, -k and -m filters")
            self._ending = _close_plain_run(self.result, self.config)  # the gate's verdict is in the exit code
            session.exitstatus = self.result.exit_code  # the contract of acgs-verify run: 0/1/2/3

    def _cut_off(self) -> list[CheckResult]:
        return [res for res in self.by_nodeid.values() if res.outcome == INTERRUPTED]

    def _settle_interrupted(self) -> None:
        """The checks the run stopped mid-way: interrupted, with a message saying so (and no measurement)."""
        for res in self._cut_off():
            crash = self._crashed.get(res.nodeid)
            # a worker killed alone (OOM, a timeout) cut its check off too; under Ctrl-C every worker "crashes"
            why = f"its worker died ({crash})" if crash and not self.interrupted else \
                "the run was stopped (SIGINT/SIGTERM)"
            res.message = f"{res.id} {res.target}: interrupted: {why} before this check finished; it has no " \
                          "outcome. Next: run it again"
            res.measured = res.expected = res.value = None

    def _write_junit(self) -> None:
        """junit.xml where pytest's junitxml plugin wrote it (--junitxml): ours, from the result, as `run` writes it
        (a run directory's copy is written again with the gate's verdict when the run finishes)."""
        xmlpath = self.config.getoption("xmlpath", None)
        if xmlpath and self._same_as_run():
            from acgs_verify.report.junit import write_junit

            path = Path(os.path.expanduser(os.path.expandvars(xmlpath))).absolute()  # as junitxml resolves it
            try:
                write_junit(self.result, path)
            except OSError as exc:  # the run's verdict stands
                self.result.notes.append(f"{path}: junit.xml could not be written: {one_line(exc)}")

    def _same_as_run(self) -> bool:
        """Plain pytest over the checks ends as acgs-verify run does; the suite's own tests are left alone."""
        return is_plain(self.config) and (PROFILE_KEY in self.config.stash or bool(self.by_nodeid))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """After pytest's own last line: where the reports are (with --report-dir) and the run's summary line."""
        from acgs_verify import rundir
        from acgs_verify.finish import say_ending

        plain_run = config.stash.get(PLAIN_RUN_KEY, None)
        if self.result is None or self._ending is None:
            if plain_run:
                rundir.discard(plain_run.partial)
            return
        say_ending(self.result, self._ending)

    def pytest_terminal_summary(self, terminalreporter, exitstatus, config) -> None:
        from acgs_verify.report.terminal import findings_lines

        lines = findings_lines(self.result) if self.result is not None else []
        if lines:
            terminalreporter.section("acgs-verify findings", sep="-")
            for line in lines:
                terminalreporter.write_line(line)


def _close_plain_run(result: RunResult, config: pytest.Config):
    """The gate's rules, the trend and the reports (with --report-dir), as acgs-verify run closes a run."""
    from acgs_verify.finish import close_run
    from acgs_verify.gates import GatePlan

    profile = config.stash.get(PROFILE_KEY, None)
    plain_run = config.stash.get(PLAIN_RUN_KEY, None)
    gate = (GatePlan(config.getoption("acgs_gate")), profile) if profile is not None else None
    return close_run(result, plain_run.partial if plain_run else None, plain_run.report_dir if plain_run else None,
                     profile.secret_values() if profile is not None else [], gate=gate, pool=handed_pool(config))


def _apply_run_options(opts: RunOptions, result: RunResult) -> None:
    if opts.shard is not None:  # merge reads it: which shard of which run this is
        result.extra[SHARD_KEY] = opts.shard.as_dict()
    if opts.since is not None:
        result.extra["log_window_since"] = opts.since.isoformat(timespec="seconds")
    if opts.waivers:
        from acgs_verify.waivers import apply_waivers

        result.notes.extend(apply_waivers(result.checks, opts.waivers, datetime.now(UTC).date()))


def _profile_notes(profile: Profile) -> list[str]:
    return [f"host {h.name}: host key checking is off (strict_host_key_checking: false)"
            for h in profile.hosts if not h.strict_host_key_checking and h.backend != "local"]


def _message(report: pytest.TestReport, secrets: list[str]) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (file, line, reason)
        reason = str(longrepr[2])
        return reason.removeprefix("Skipped: ")
    if isinstance(longrepr, str):
        return longrepr.strip()
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        text = one_line(str(crash.message).removeprefix("Failed: "), secrets, limit=4 * MESSAGE_MAX)
    else:
        text = last_line(str(longrepr), secrets, default=report.outcome, limit=4 * MESSAGE_MAX)
    return shortened(text, MESSAGE_MAX)


class AllureDetails:
    """When allure-pytest writes results (--alluredir): severity, epic and feature labels, evidence attached."""

    def __init__(self, config: pytest.Config):
        self.config = config

    def _active(self) -> bool:
        return self.config.pluginmanager.has_plugin("allure_listener")

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        if not self._active():
            return
        for item in items:
            mark = item.get_closest_marker("runbook")
            if mark is None:
                continue
            e = CATALOG[mark.args[0]]
            item.add_marker(pytest.mark.allure_label(ALLURE_SEVERITY[e.severity], label_type="severity"))
            item.add_marker(pytest.mark.allure_label(e.section_title, label_type="epic"))
            item.add_marker(pytest.mark.allure_label(f"{e.id} {e.title}", label_type="feature"))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        try:
            return (yield)
        finally:
            if self._active():
                self._attach_evidence(item)

    def _attach_evidence(self, item: pytest.Item) -> None:
        import allure

        profile = self.config.stash.get(PROFILE_KEY, None)
        secrets = profile.secret_values() if profile else []
        props = dict(item.user_properties)
        if "measured" in props:
            text = f"measured: {props['measured']}\nexpected: {props.get('expected', '-')}"
            allure.attach(mask(text, secrets), name="measurement", attachment_type=allure.attachment_type.TEXT)
        for key, value in item.user_properties:
            if key.startswith("evidence:"):
                allure.attach(mask(str(value), secrets), name=key.split(":", 1)[1],
                              attachment_type=allure.attachment_type.TEXT)
