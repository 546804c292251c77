"""pytest plugin: options, the profile, parametrization over its targets, gates, and the result model.

The one place where the profile becomes parameters: a check that takes `service` runs once per
service instance (`SVC-01[auth@app-1]`), one that takes `database` once per database (targets.py).
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from acgs_verify.catalog import CATALOG, GATES, SECTIONS, SEVERITIES
from acgs_verify.check import Check, ProbeError
from acgs_verify.profile import Profile, ProfileError, load_profile
from acgs_verify.redact import mask
from acgs_verify.results import CheckResult, RunResult
from acgs_verify.targets import TARGET_KINDS, host_of

PROFILE_KEY = pytest.StashKey[Profile]()
COLLECTOR_KEY = pytest.StashKey["ResultCollector"]()
# plain `pytest checks --report-dir DIR`: where this run is being written (acgs-verify run keeps its own)
PLAIN_RUN_KEY = pytest.StashKey[dict]()
DEFAULT_PROFILE = "sandbox"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("acgs-verify", "ACGS runbook checks")
    group.addoption("--profile", dest="acgs_profile", default=None,
                    help=f"environment profile, by name or path (default: {DEFAULT_PROFILE})")
    group.addoption("--set", dest="acgs_set", action="append", default=[], metavar="dotted.key=VALUE",
                    help="override one profile field for this run, e.g. thresholds.db_long_query_seconds=60")
    # checked in pytest_cmdline_main rather than by `choices`, so a bad gate is exit 3 as with acgs-verify run
    group.addoption("--gate", dest="acgs_gate", default=None,
                    help="run the checks of one gate: " + ", ".join(GATES))
    group.addoption("--acgs-run-id", dest="acgs_run_id", default=None, help="(set by acgs-verify run)")
    group.addoption("--acgs-no-secrets", dest="acgs_no_secrets", action="store_true",
                    help="do not resolve secrets (for listing checks without running them)")
    group.addoption("--since", dest="acgs_since", default=None, metavar="TIME",
                    help="log checks read only lines written since TIME: ISO time or a duration (30m, 2h, 1d)")
    group.addoption("--waivers", dest="acgs_waivers", default=None, metavar="FILE",
                    help="YAML file of waived failures (ID, target pattern, reason, owner, expires)")
    group.addoption("--report-dir", dest="acgs_report_dir", default=None, metavar="DIR",
                    help="write the reports acgs-verify run writes into DIR/<run id>/ (default: none)")


def _plain(config: pytest.Config) -> bool:
    """A run of plain pytest over the checks (acgs-verify run passes --acgs-run-id and finishes the run itself)."""
    return config.getoption("acgs_run_id") is None and not config.getoption("collectonly")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config):
    """Bad input stops here with one line and exit 3, as with acgs-verify run (pytest's own usage errors are 4)."""
    if hasattr(config, "workerinput") or config.getoption("help") or config.getoption("version"):
        return None
    from acgs_verify.rundir import ReportDirError

    try:
        gate = config.getoption("acgs_gate")
        if gate is not None and gate not in GATES:
            raise ProfileError(f"unknown gate {gate!r}; gates: {', '.join(GATES)}")
        report_dir = config.getoption("acgs_report_dir")
        if config.getoption("acgs_profile") is not None or config.getoption("acgs_set") or report_dir:
            _load(config)
        _run_options(config)
        if report_dir and _plain(config):
            _start_plain_run(config, Path(report_dir))
    except (ProfileError, ReportDirError, pytest.UsageError) as exc:
        print(f"acgs-verify: error: {exc}", file=sys.stderr)
        return 3
    return None


def _start_plain_run(config: pytest.Config, report_dir: Path) -> None:
    import secrets

    from acgs_verify import rundir

    rundir.usable_report_dir(report_dir)
    profile = config.stash[PROFILE_KEY]
    gate = config.getoption("acgs_gate") or "all"
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{profile.name}-{gate}-{secrets.token_hex(2)}"
    partial = rundir.start(report_dir, run_id)
    config.stash[PLAIN_RUN_KEY] = {"run_id": run_id, "partial": partial, "report_dir": report_dir}
    if not config.option.xmlpath:  # junit.xml, as acgs-verify run writes it
        config.option.xmlpath = str(partial / "junit.xml")


def pytest_configure(config: pytest.Config) -> None:
    for sev in SEVERITIES:
        config.addinivalue_line("markers", f"{sev.lower()}: runbook severity {sev}")
    for section, title in SECTIONS.items():
        config.addinivalue_line("markers", f"{section}: runbook section '{title}'")
    config.addinivalue_line("markers", "runbook(id, applies=None): the catalog ID this check implements")
    config.addinivalue_line("markers", "slow: takes seconds, left out of quick runs")
    # set on every check so `-n N --dist loadgroup` keeps a host's checks in one worker; registered here
    # too because `acgs-verify run` loads xdist only when workers are asked for
    config.addinivalue_line("markers", "xdist_group(name): run in the same xdist worker as its group")
    if config.getoption("acgs_profile") is not None or config.getoption("acgs_set"):
        _profile(config)  # fail fast on a bad profile, before collection
    _run_options(config)  # bad --since / --waivers stop here, before collection
    config.pluginmanager.register(AllureDetails(config), "acgs-verify-allure")
    if not hasattr(config, "workerinput"):  # the xdist controller (or a plain run) keeps the results
        collector = ResultCollector(config)
        config.stash[COLLECTOR_KEY] = collector
        config.pluginmanager.register(collector, "acgs-verify-results")


def _profile(config: pytest.Config) -> Profile:
    try:
        return _load(config)
    except ProfileError as exc:
        raise pytest.UsageError(str(exc)) from None


def _load(config: pytest.Config) -> Profile:
    if PROFILE_KEY not in config.stash:
        name = config.getoption("acgs_profile") or DEFAULT_PROFILE
        config.stash[PROFILE_KEY] = load_profile(
            name, config.getoption("acgs_set"), resolve_secrets=not config.getoption("acgs_no_secrets"))
    return config.stash[PROFILE_KEY]


def pytest_report_header(config: pytest.Config) -> list[str]:
    if PROFILE_KEY not in config.stash:
        return []
    return [f"acgs-verify: WARNING: {text}" for text in config.stash[PROFILE_KEY].insecure_settings()]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for name, kind in TARGET_KINDS.items():
        if name not in metafunc.fixturenames:
            continue
        targets = kind(_profile(metafunc.config))
        mark = metafunc.definition.get_closest_marker("runbook")
        applies = mark.kwargs.get("applies") if mark else None
        if applies is not None:
            targets = [t for t in targets if applies(t)]
        metafunc.parametrize(name, targets, ids=[t.id for t in targets])
        return


def pytest_itemcollected(item: pytest.Item) -> None:
    mark = item.get_closest_marker("runbook")
    if mark is not None:
        item.extra_keyword_matches.add(mark.args[0])  # `-k SVC-01`, `-k "DB and not DB-07"`


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """--dist loadgroup: the checks of one host run in one worker (scheduling.py says why xdist's own cannot)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from acgs_verify.scheduling import host_group_scheduler

    return host_group_scheduler(config, log, _profile(config))


@pytest.hookimpl(tryfirst=True)  # before xdist's, which reads the xdist_group marks set here
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]):
    gate = config.getoption("acgs_gate")
    wanted = GATES[gate]["ids"] if gate else None
    keep, drop = [], []
    for item in items:
        mark = item.get_closest_marker("runbook")
        if mark is None:
            keep.append(item)
            continue
        check_id = mark.args[0]
        target = _target_of(item)
        if (wanted is not None and check_id not in wanted) or target is _NO_TARGETS:
            drop.append(item)  # not in the gate, or the profile has nothing of its kind (no databases, no keys)
            continue
        e = CATALOG[check_id]
        item.user_properties.extend([
            ("runbook_id", check_id), ("severity", e.severity), ("section", e.section),
            ("target", target.id if target is not None else "-"),
        ])
        # checks of one host stay in one worker (pytest -n N --dist loadgroup), so its connection is reused
        host = host_of(target)
        if host is not None:
            item.user_properties.append(("host", host.name))
            if item.get_closest_marker("xdist_group") is None:
                item.add_marker(pytest.mark.xdist_group(host.name))
        keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    # a host's checks run together (in the profile's host order, each host's in module order; checks without a
    # host first): its log tails and facts are then used while fresh, and dropped before the next host's
    order = {h.name: i for i, h in enumerate(_profile(config).hosts)} if PROFILE_KEY in config.stash else {}
    keep.sort(key=lambda item: order.get(dict(item.user_properties).get("host"), -1))
    items[:] = keep


_NO_TARGETS = object()


def _target_of(item: pytest.Item):
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None
    for name in TARGET_KINDS:
        if name in callspec.params:
            value = callspec.params[name]
            return value if hasattr(value, "id") else _NO_TARGETS  # pytest's NOTSET for an empty parameter set
    return None


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="session")
def profile(pytestconfig: pytest.Config) -> Profile:
    return _profile(pytestconfig)


@pytest.fixture(scope="session")
def thresholds(profile: Profile):
    return profile.thresholds


@pytest.fixture(scope="session")
def http(profile: Profile):
    from acgs_verify.probes.http import HttpProbe

    verify = profile.tls.ca_file or True if profile.tls.verify else False
    probe = HttpProbe(verify=verify)
    yield probe
    probe.close()


@pytest.fixture(scope="session")
def hosts(profile: Profile):
    from acgs_verify.probes.host import HostPool

    passphrases = {h.name: profile.secret(f"hosts.{h.name}") for h in profile.hosts}
    pool = HostPool(connect_timeout=profile.thresholds.connect_timeout_seconds, inventory=profile.inventory,
                    passphrases=passphrases)
    yield pool
    pool.close()  # ends the ssh control masters; nothing outlives the run


@pytest.fixture(scope="session")
def logs(hosts, pytestconfig: pytest.Config):
    from acgs_verify.probes.logs import LogReader

    return LogReader(hosts, since=_run_options(pytestconfig)["since"])


@pytest.fixture(scope="session")
def pg(profile: Profile):
    """Read-only PostgreSQL sessions, one per database (and replica) per worker, closed at session end."""
    from acgs_verify.probes.postgres import PgPool

    pool = PgPool(profile)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def caches(profile: Profile):
    """Read-only Redis connections, one per Redis per worker, closed at session end."""
    from acgs_verify.probes.redis import RedisPool

    pool = RedisPool(profile)
    yield pool
    pool.close()


@pytest.fixture(scope="session", autouse=True)
def _prefetch(request: pytest.FixtureRequest) -> None:
    """Measurements that mostly wait (each host's CPU window), started for every target at once and waited for
    before the first check: N hosts cost one window, not N (the `prefetch` of @runbook)."""
    from concurrent.futures import wait

    wanted: dict = {}
    for item in request.session.items:
        mark = item.get_closest_marker("runbook")
        fn = mark.kwargs.get("prefetch") if mark is not None else None
        target = _target_of(item) if fn is not None else None
        host = host_of(target) if target is not None and target is not _NO_TARGETS else None
        if host is not None:
            wanted[(fn, host.name)] = (fn, host)
    if not wanted:
        return
    pool = request.getfixturevalue("hosts")
    # handshakes first, all at once, so that no ssh key exchange falls inside another host's window
    pool.connect(list({h.name: h for _, h in wanted.values()}.values()))
    futures = []
    for fn, host in wanted.values():
        future = fn(pool, host)  # a probe's prefetch function, e.g. system.prefetch_snapshot(hosts, host)
        if future is not None:
            futures.append(future)
    if futures:
        wait(futures)  # errors stay in their futures: the checks that read them fail with their own message


@pytest.fixture(scope="session")
def backup_reader():
    """Archive scans cached per file, so BK-03 and BK-04 read a large dump once per run (per worker)."""
    from acgs_verify.probes.backups import BackupReader

    return BackupReader()


@pytest.fixture(scope="session")
def run_history(pytestconfig: pytest.Config, profile: Profile) -> list[dict]:
    """Earlier complete runs of this profile, oldest first, from REPORT_DIR/history.jsonl (report/history.py's
    service_history): SVC-12's baseline and MON-02's availability. Read once per run."""
    from acgs_verify.report.history import service_history

    report_dir = pytestconfig.getoption("acgs_report_dir")
    # plain pytest without --report-dir keeps no history: SVC-12 and MON-02 then skip, saying they found no runs
    return service_history(Path(report_dir), profile.name) if report_dir else []


@pytest.fixture
def check(request: pytest.FixtureRequest) -> Check:
    target = _target_of(request.node)
    return Check(request.node, target.id if target is not None else "-")


# --------------------------------------------------------------------------------------- reporting


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    # a probe that could not measure is a finding about the target, not a crash of the suite
    if call.excinfo is not None and call.excinfo.errisinstance(ProbeError):
        mark = item.get_closest_marker("runbook")
        if mark is not None:
            target = _target_of(item)
            e = CATALOG[mark.args[0]]
            tid = target.id if target is not None else "-"
            report.longrepr = f"{e.id} {tid}: could not measure: {call.excinfo.value}. Next: {e.next_step}"
            report.outcome = "failed"
    return report


class ResultCollector:
    """Builds the RunResult from test reports (which xdist forwards from its workers)."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.start = time.time()
        self.by_nodeid: dict[str, CheckResult] = {}
        self.result: RunResult | None = None
        self.interrupted = False

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        props = dict((k, v) for k, v in report.user_properties if not k.startswith("evidence:"))
        if "runbook_id" not in props:
            return
        res = self.by_nodeid.get(report.nodeid)
        if res is None:
            e = CATALOG[props["runbook_id"]]
            res = CheckResult(nodeid=report.nodeid, id=e.id, section=e.section, severity=e.severity,
                              title=e.title, target=props.get("target", "-"), next_step=e.next_step,
                              host=props.get("host"))
            self.by_nodeid[report.nodeid] = res
        res.duration += report.duration
        for key in ("measured", "expected", "value", "warning"):
            if key in props:
                setattr(res, key, props[key])
        for k, v in report.user_properties:
            if k.startswith("evidence:"):
                res.evidence[k.split(":", 1)[1]] = v
        if report.when == "call" or report.outcome != "passed":
            outcome = report.outcome
            if report.when != "call" and outcome == "failed":
                outcome = "error"
            if res.outcome in ("failed", "error") and outcome in ("passed", "skipped"):
                return  # teardown passing does not undo a failure
            res.outcome = outcome
            if outcome != "passed":
                res.message = _message(report)

    def pytest_keyboard_interrupt(self, excinfo) -> None:
        self.interrupted = True

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        profile = self.config.stash.get(PROFILE_KEY, None)
        secrets = profile.secret_values() if profile else []
        for res in self.by_nodeid.values():
            res.message = mask(res.message, secrets)
            for name in ("measured", "expected", "warning"):  # a probe may quote a DSN or a command line
                if getattr(res, name):
                    setattr(res, name, mask(str(getattr(res, name)), secrets))
            res.evidence = {k: mask(v, secrets) for k, v in res.evidence.items()}
        plain_run = self.config.stash.get(PLAIN_RUN_KEY, {})
        self.result = RunResult(
            run_id=(self.config.getoption("acgs_run_id") or plain_run.get("run_id")
                    or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")),
            profile=profile.name if profile else "",
            gate=self.config.getoption("acgs_gate") or "all",
            started=datetime.fromtimestamp(self.start, UTC).isoformat(timespec="seconds"),
            duration=time.time() - self.start,
            constitutional_hash=profile.constitutional_hash if profile else "",
            checks=sorted(self.by_nodeid.values(), key=_order),
            complete=not self.interrupted and exitstatus not in (2, 3, 4),
            planned=getattr(session, "testscollected", None) or None,  # xdist's controller sets it from its workers
            notes=_profile_notes(profile) if profile else [],
        )
        _apply_run_options(self.config, self.result)
        if self._same_as_run():
            if exitstatus == 5 or not self.result.checks:
                self.result.notes.append("no checks were collected: check the gate, -k and -m filters")
            session.exitstatus = self.result.exit_code  # the contract of acgs-verify run: 0/1/2/3

    def _same_as_run(self) -> bool:
        """Plain pytest over the checks ends as acgs-verify run does; the suite's own tests are left alone."""
        return _plain(self.config) and (PROFILE_KEY in self.config.stash or bool(self.by_nodeid))

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """After pytest's own last line: the reports (with --report-dir) and the run's summary line."""
        plain_run = config.stash.get(PLAIN_RUN_KEY, None)
        from acgs_verify import rundir

        if self.result is None or not self._same_as_run():
            if plain_run:
                rundir.discard(plain_run["partial"])
            return
        if plain_run:
            from acgs_verify.gates import GatePlan, finish
            from acgs_verify.report.history import trend_of

            profile = config.stash[PROFILE_KEY]
            plan = GatePlan(config.getoption("acgs_gate") or "compliance")
            try:
                if config.getoption("acgs_gate"):
                    finish(self.result, plan, profile)
                self.result.extra["trend"] = trend_of(self.result, plain_run["report_dir"])
                run_dir = rundir.finish(self.result, plain_run["partial"], plain_run["report_dir"],
                                        profile.secret_values(), plan.writes_snapshot)
                print(f"reports: {run_dir}/ (report.html, report.md, summary.json, junit.xml, metrics.prom, "
                      "allure-results/)" + ("" if self.result.complete else " [incomplete]"))
            except rundir.ReportDirError as exc:
                print(f"acgs-verify: error: {exc}", file=sys.stderr)
            except BaseException:
                rundir.discard(plain_run["partial"])
                raise
        print(self.result.summary_line())

    def pytest_terminal_summary(self, terminalreporter, exitstatus, config) -> None:
        from acgs_verify.report.terminal import findings_lines

        lines = findings_lines(self.result) if self.result is not None else []
        if lines:
            terminalreporter.section("acgs-verify findings", sep="-")
            for line in lines:
                terminalreporter.write_line(line)


def _profile_notes(profile: Profile) -> list[str]:
    return [f"host {h.name}: host key checking is off (strict_host_key_checking: false)"
            for h in profile.hosts if not h.strict_host_key_checking and h.backend != "local"]


def _order(c: CheckResult) -> tuple:
    ids = list(CATALOG)
    return (ids.index(c.id) if c.id in ids else len(ids), c.target, c.nodeid)


def _message(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (file, line, reason)
        reason = str(longrepr[2])
        return reason.removeprefix("Skipped: ")
    if isinstance(longrepr, str):
        return longrepr.strip()
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:
        text = " ".join(str(crash.message).split())
        return text.removeprefix("Failed: ")[:500]
    text = str(longrepr).strip().splitlines()
    return text[-1][:500] if text else report.outcome


# ---------------------------------------------------------------------------- --since and --waivers

RUN_OPTIONS_KEY = pytest.StashKey[dict]()


def _run_options(config: pytest.Config) -> dict:
    """--since as a datetime and --waivers as Waiver objects, parsed once; bad input is a UsageError line."""
    if RUN_OPTIONS_KEY not in config.stash:
        from acgs_verify.probes.logs import parse_since
        from acgs_verify.waivers import WaiverError, load_waivers

        opts: dict = {"since": None, "waivers": []}
        since = config.getoption("acgs_since")
        if since:
            if since == "snapshot":
                raise pytest.UsageError("--since snapshot needs acgs-verify run (it finds the snapshot)")
            try:
                opts["since"] = parse_since(since)
            except ValueError as exc:
                raise pytest.UsageError(str(exc)) from None
        if config.getoption("acgs_waivers"):
            try:
                opts["waivers"] = load_waivers(config.getoption("acgs_waivers"))
            except WaiverError as exc:
                raise pytest.UsageError(str(exc)) from None
        config.stash[RUN_OPTIONS_KEY] = opts
    return config.stash[RUN_OPTIONS_KEY]


def _apply_run_options(config: pytest.Config, result: RunResult) -> None:
    from acgs_verify.waivers import apply_waivers

    opts = _run_options(config)
    if opts["since"] is not None:
        result.extra["log_window_since"] = opts["since"].isoformat(timespec="seconds")
    if opts["waivers"]:
        result.notes.extend(apply_waivers(result.checks, opts["waivers"], datetime.now(UTC).date()))


# ------------------------------------------------------------------------------------------ Allure

from acgs_verify.report.allure import SEVERITY as ALLURE_SEVERITY  # noqa: E402 -- one mapping for both writers


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
