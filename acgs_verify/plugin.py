"""pytest plugin: options, fixtures, parametrization over the profile's targets, markers, and hooks.

The one place where the profile becomes parameters: a check that takes `service` runs once per
service instance (`SVC-01[auth@app-1]`), one that takes `database` once per database (targets.py).
What the run's reports turn into the result model is collector.py; the options shared with
`acgs-verify run` are declared in options.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from acgs_verify import options
from acgs_verify.catalog import CATALOG, GATES, SECTIONS, SEVERITIES
from acgs_verify.check import Check, ProbeError, next_step_for, outcome_of, reach_step_for, said
from acgs_verify.collector import (
    CHUNK_KEY,
    HANDED_POOL_KEY,
    PROFILE_KEY,
    is_plain,
    register_collectors,
    run_options,
    start_plain_run,
)
from acgs_verify.hosts import reach
from acgs_verify.profile import Profile, ProfileError, load_profile
from acgs_verify.shards import key_of
from acgs_verify.targets import TARGET_KINDS, host_of


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("acgs-verify", "ACGS runbook checks")
    for option in options.SHARED:  # the same flags, defaults and help as `acgs-verify run`
        group.addoption(option.flag, dest=f"acgs_{option.name}", **option.kwargs())
    group.addoption("--acgs-run-id", dest="acgs_run_id", default=None, help="(set by acgs-verify run)")
    group.addoption("--acgs-no-secrets", dest="acgs_no_secrets", action="store_true",
                    help="do not resolve secrets (for listing checks without running them)")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config):
    """Bad input stops here with one line and exit 3, as with acgs-verify run (pytest's own usage errors are 4)."""
    if hasattr(config, "workerinput") or config.getoption("help") or config.getoption("version"):
        return None
    from acgs_verify.rundir import ReportDirError

    try:
        problem = options.gate_problem(config.getoption("acgs_gate"))
        if problem:
            raise ProfileError(problem)
        report_dir = config.getoption("acgs_report_dir")
        if config.getoption("acgs_profile") is not None or config.getoption("acgs_set") or report_dir:
            _load(config)
        run_options(config)
        if report_dir and is_plain(config):
            start_plain_run(config, Path(report_dir))
    except (ProfileError, ReportDirError, pytest.UsageError) as exc:
        print(f"acgs-verify: error: {exc}", file=sys.stderr)
        return 3
    return None


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
    run_options(config)  # bad --since / --waivers stop here, before collection
    register_collectors(config)
    config.pluginmanager.register(CompactReports(config), "acgs-compact-reports")


def _profile(config: pytest.Config) -> Profile:
    try:
        return _load(config)
    except ProfileError as exc:
        raise pytest.UsageError(str(exc)) from None


def _load(config: pytest.Config) -> Profile:
    if PROFILE_KEY not in config.stash:
        name = options.profile_name(config.getoption("acgs_profile"))
        config.stash[PROFILE_KEY] = load_profile(
            name, config.getoption("acgs_set"), resolve_secrets=not config.getoption("acgs_no_secrets"))
    return config.stash[PROFILE_KEY]


class Loaded:
    """The profile `acgs-verify run` loaded, handed to its pytest run (`pytest.main(args, plugins=[Loaded(...)])`):
    the plugin then does not read, validate and resolve it a second time. Taken only when the run's --profile and
    --set are the ones it was loaded with, secrets resolved."""

    def __init__(self, profile: Profile, name: str, overrides: list[str]):
        self.profile, self.name, self.overrides = profile, options.profile_name(name), list(overrides or [])

    @pytest.hookimpl(wrapper=True)
    def pytest_cmdline_parse(self, pluginmanager: pytest.PytestPluginManager, args: list[str]):
        config = yield
        if (hasattr(config.option, "acgs_profile") and not config.getoption("acgs_no_secrets")
                and options.profile_name(config.getoption("acgs_profile")) == self.name
                and list(config.getoption("acgs_set") or []) == self.overrides):
            config.stash[PROFILE_KEY] = self.profile
        return config


def pytest_report_header(config: pytest.Config) -> list[str]:
    if PROFILE_KEY not in config.stash:
        return []
    return [f"acgs-verify: WARNING: {text}" for text in config.stash[PROFILE_KEY].insecure_settings()]


# where the checks live: a wheel's copy, or the checkout's; each module is one section's (checks/test_<section>.py)
CHECK_DIRS = (Path(__file__).resolve().parent / "_checks", Path(__file__).resolve().parent.parent / "checks")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """A section none of whose checks is in the gate is not imported: its probes, its parametrization over every
    target and the deselection of all of it cost the smoke gate more than its own 38 checks' framework time."""
    wanted = GATES.get(config.getoption("acgs_gate"), {}).get("ids")
    if wanted is None or collection_path.suffix != ".py" or collection_path.parent not in CHECK_DIRS:
        return None
    section = collection_path.stem.removeprefix("test_")
    if section not in SECTIONS or any(CATALOG[i].section == section for i in wanted if i in CATALOG):
        return None
    return True


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for name, kind in TARGET_KINDS.items():
        if name not in metafunc.fixturenames:
            continue
        targets = kind(_profile(metafunc.config))
        mark = metafunc.definition.get_closest_marker("runbook")
        applies = mark.kwargs.get("applies") if mark else None
        if applies is not None:
            targets = [t for t in targets if applies(t)]
        chunk = metafunc.config.stash.get(CHUNK_KEY, None)
        if chunk is not None:  # one of a run's host chunks (chunks.py): the other hosts' items are never made
            targets = [t for t in targets if chunk.holds(t)]
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
    wanted = GATES[config.getoption("acgs_gate")]["ids"]  # None: every check
    shard = run_options(config).shard  # --shard K/N: a host's checks all in one shard (shards.py)
    chunk = config.stash.get(CHUNK_KEY, None)
    keep, drop = [], []
    # a mark per check costs ~0.5 KB (10 MB over 200 hosts): only where xdist is there to read it
    grouped = config.pluginmanager.hasplugin("xdist") or config.pluginmanager.hasplugin("xdist.plugin")
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
        if shard is not None and not shard.owns(key_of(target, check_id)):
            drop.append(item)  # another shard's host or target
            continue
        if chunk is not None and not chunk.holds(target):
            drop.append(item)  # a check of no target: the first chunk's
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
            if grouped and item.get_closest_marker("xdist_group") is None:
                item.add_marker(pytest.mark.xdist_group(host.name))
        keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
    # a host's checks run together (in the profile's host order, each host's in module order; checks without a
    # host first): its log tails and facts are then used while fresh, and dropped before the next host's
    order = {h.name: i for i, h in enumerate(_profile(config).hosts)} if PROFILE_KEY in config.stash else {}
    keep.sort(key=lambda item: order.get(dict(item.user_properties).get("host"), -1))
    items[:] = keep



class CompactReports:
    """A passed report, once every plugin has recorded it (the collector its CheckResult, junitxml its testcase),
    keeps only what pytest's summary counts it by: its captured output, keywords and properties go. pytest keeps
    every report (the terminal's stats) until the run ends, three per check: with them whole, a run over 200 hosts
    held its whole output in memory (issue 24 item 7). A failure keeps everything, for --tb and -r."""

    def __init__(self, config: pytest.Config):
        chars = getattr(config.option, "reportchars", "") or ""
        self.shown = "P" in chars or "A" in chars  # -rP / -rA print the passed checks' captured output

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.passed and not self.shown:
            compact(report)


def compact(report: pytest.TestReport) -> None:
    report.sections = []
    report.user_properties = []
    report.keywords = _NO_KEYWORDS


_NO_TARGETS = object()
_NO_KEYWORDS: dict = {}  # one empty mapping every compacted report shares
POOL_KEY = pytest.StashKey()  # the run's HostPool, once a check asked for it
_AHEAD_KEY = pytest.StashKey()  # (the host whose checks run now, the hosts in item order)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem) -> None:
    """When the test loop reaches a host's first check, tell the pool (HostPool.moved_to: its read-ahead policy)
    which host that is and which come after it. In an xdist worker only the hosts it was given are known: no
    read-ahead."""
    mark = item.get_closest_marker("runbook")
    reach.asking(mark.args[0] if mark is not None and mark.args else item.name)  # credited with a first try
    host = dict(item.user_properties).get("host")
    current, order = item.config.stash.get(_AHEAD_KEY, (None, None))
    if host == current:
        return None
    if order is None:
        order = list(dict.fromkeys(h for it in item.session.items if (h := dict(it.user_properties).get("host"))))
    item.config.stash[_AHEAD_KEY] = (host, order)
    pool = item.config.stash.get(POOL_KEY, None)
    if pool is None or PROFILE_KEY not in item.config.stash:
        return None
    by_name = {h.name: h for h in item.config.stash[PROFILE_KEY].hosts}
    upcoming = None if hasattr(item.config, "workerinput") or host not in by_name else \
        [by_name[n] for n in order[order.index(host) + 1:] if n in by_name]
    pool.moved_to(by_name.get(host), upcoming)
    return None


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
def profile(pytestconfig: pytest.Config):
    from acgs_verify.hosts import reach

    loaded = _profile(pytestconfig)
    # every probe of the run shares one reachability cache: a target that does not answer is waited for once
    with reach.session(loaded.hosts, loaded.thresholds.connect_timeout_seconds):
        yield loaded


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
def hosts(profile: Profile, pytestconfig: pytest.Config):
    from acgs_verify.hosts.pool import HostPool

    passphrases = {h.name: profile.secret(f"hosts.{h.name}") for h in profile.hosts}
    pool = HostPool(connect_timeout=profile.thresholds.connect_timeout_seconds, inventory=profile.inventory,
                    passphrases=passphrases)
    pytestconfig.stash[POOL_KEY] = pool  # for the read-ahead in pytest_runtest_protocol
    yield pool
    del pytestconfig.stash[POOL_KEY]
    gate = GATES.get(pytestconfig.getoption("acgs_gate"), {})
    if gate.get("evidence") and not hasattr(pytestconfig, "workerinput"):
        # the gate copies evidence once the checks are done: through this pool, which whoever finishes the run
        # takes (handed_pool) and closes, so the hosts are not connected to again
        pytestconfig.stash[HANDED_POOL_KEY] = pool
    else:
        pool.close()  # ends the ssh control masters; nothing outlives the run



@pytest.fixture(scope="session")
def logs(hosts, pytestconfig: pytest.Config):
    from acgs_verify.probes.logs import LogReader

    return LogReader(hosts, since=run_options(pytestconfig).since)


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
    from concurrent.futures import ThreadPoolExecutor, wait

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
    # handshakes first, all at once, so that no ssh key exchange falls inside another host's window; meanwhile
    # this thread imports what the run's first checks would otherwise import after the windows
    with ThreadPoolExecutor(1, thread_name_prefix="acgs-connect") as one:
        connecting = one.submit(pool.connect, list({h.name: h for _, h in wanted.values()}.values()))
        _import_ahead(request.session.items)
        connecting.result()
    futures = []
    for fn, host in wanted.values():
        future = fn(pool, host)  # a probe's prefetch function, e.g. system.prefetch_snapshot(hosts, host)
        if future is not None:
            futures.append(future)
    if futures:
        wait(futures)  # errors stay in their futures: the checks that read them fail with their own message


# What the session fixtures' probes import on first use (lazily, so that a run without such checks does not pay):
# ~0.2 s in all, which _prefetch spends while the ssh handshakes run instead of in the first checks after the windows.
AHEAD_IMPORTS = {"http": ("httpx",), "pg": ("psycopg",), "caches": ("redis",)}


def _import_ahead(items: list[pytest.Item]) -> None:
    import contextlib
    import importlib

    used = set().union(*(item.fixturenames for item in items)) if items else set()
    for name in (m for fixture, modules in AHEAD_IMPORTS.items() if fixture in used for m in modules):
        with contextlib.suppress(Exception):  # a module that fails to import fails again in its probe, as before
            importlib.import_module(name)


@pytest.fixture(scope="session")
def backup_reader():
    """Archive scans cached per file, so BK-03 and BK-04 read a large dump once per run (per worker)."""
    from acgs_verify.probes.archive import BackupReader

    reader = BackupReader()
    yield reader
    reader.close()


@pytest.fixture(scope="session")
def run_history(pytestconfig: pytest.Config, profile: Profile) -> list[dict]:
    """Earlier complete runs of this profile, oldest first, from REPORT_DIR/history.jsonl (report/history.py's
    service_history): SVC-12's baseline and MON-02's availability. Read once per run."""
    from acgs_verify.report.history import service_history

    report_dir = pytestconfig.getoption("acgs_report_dir")
    # plain pytest without --report-dir keeps no history: SVC-12 and MON-02 then skip, saying they found no runs
    return service_history(Path(report_dir), profile.name) if report_dir else []


@pytest.fixture
def check(request: pytest.FixtureRequest, profile: Profile) -> Check:
    target = _target_of(request.node)
    return Check(request.node, target.id if target is not None else "-", target=target, profile=profile,
                 systemd=_systemd_of(request, target))


def _systemd_of(request: pytest.FixtureRequest, target) -> bool | None:
    """Whether a service target's host runs systemd, which its next step's words depend on: the profile's
    `systemd:`, else the run's reading of the host (one per host, the one SVC-05 makes); None when it does not
    matter (no unit to name) or cannot be read (an unreachable host: its checks cite it anyway)."""
    service, host = getattr(target, "service", None), getattr(target, "host", None)
    if service is None or host is None or not service.unit or host.systemd is not None:
        return getattr(host, "systemd", None)
    from acgs_verify.probes.units import uses_systemd

    try:
        return uses_systemd(request.getfixturevalue("hosts"), host)
    except Exception:  # noqa: BLE001 - a next step is advice: unknown leaves it in the profile's words
        return None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    """After DB-01 and RD-01 in a run whose gate keeps a snapshot: the state it compares, over the check's own
    session (run_state.py), so the gate stage connects to nothing after the run."""
    try:
        return (yield)
    finally:
        from acgs_verify import run_state

        if run_state.wanted(item.config):
            target = _target_of(item)
            run_state.record(item, target if target is not _NO_TARGETS else None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """The one place where an exception becomes an outcome. pytest's own: a failed assertion or `check.fail` is
    `failed`, `check.skip` is `skipped`. A ProbeError (a probe, or `check.cannot_measure`) is `error`, could not
    measure, with the reach step for its target as next step (check.outcome_of: a reachability check's own target
    refusing is `failed`). pytest knows no `error` from a test body: the report stays failed for pytest, and the
    outcome travels in its user_properties (xdist forwards them) to collector.py."""
    report = yield
    # a probe that could not measure is a finding about the target, not a crash of the suite
    if call.excinfo is not None and call.excinfo.errisinstance(ProbeError):
        mark = item.get_closest_marker("runbook")
        if mark is not None:
            target = _target_of(item)
            target = target if target is not _NO_TARGETS else None
            e = CATALOG[mark.args[0]]
            tid = target.id if target is not None else "-"
            exc = call.excinfo.value
            outcome, down = outcome_of(e.id, exc, target)
            if outcome == "failed":  # measured: the target refused, which is what this check is for
                bound = item.funcargs.get("check")
                step = bound.next_step() if isinstance(bound, Check) else next_step_for(e, target)
                text = f"{e.id} {tid}: measured {exc}; expected {e.title}"
            else:
                step = reach_step_for(target, exc)
                text = f"{e.id} {tid}: could not measure: {exc}"
            step = said(item.config, step)
            report.user_properties.append(("next_step", step))
            report.user_properties.append(("outcome", outcome))
            if down:
                report.user_properties.append(("unreachable", down))
            # a probe's reason may quote what the target said: masked and escaped like a check's own message
            report.longrepr = said(item.config, f"{text}. Next: {step}")
            report.outcome = "failed"
    return report
