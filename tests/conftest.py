"""Shared fixtures and helpers for the suite's own tests.

Running acgs-verify: one helper, tests/runs.py's `run_cli` (imported here too), and `run_checks` for the usual
`run --profile P --report-dir R` with the shared machine's limits lifted. Both return a Run: returncode, stdout,
stderr, `output` (their tails, for an assertion's message), `summary` (the summary.json this run wrote, parsed),
`checks` (its entries by (ID, target)), `failed()` and `last_line`:

    from tests.conftest import run_checks
    res = run_checks(healthy_sandbox, tmp_path / "reports", "--gate", "smoke")
    assert res.returncode == 0 and res.checks[("SVC-01", "auth@app-1")]["outcome"] == "passed", res.output

A run goes through acgs_verify.cli.main in the test's own process (0.5-1 s less than a process per run, and what
one run changes in the process is put back: tests/runs.py says what). Pass `process=True` only when the test
proves something about the process itself: the real entrypoint's exit code or file descriptors, signals, running
as another user, the inherited environment. Several tests reading one run of the same sandbox state share it
through a module-scoped fixture rather than each starting its own.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import pytest

from tests.runs import Run, run_checks, run_cli  # noqa: F401  (the suite's one run helper; see above)

REPO = Path(__file__).resolve().parent.parent

# A shell starts a background job (`make test &`, nohup) with SIGINT ignored, every child inherits that, and a
# Python that starts with SIGINT ignored never turns Ctrl-C into KeyboardInterrupt: the tests that interrupt a
# run with SIGINT would see it run on. Each test process takes SIGINT back, so the runs it starts can be interrupted.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# The machine running the suite is shared (other test runs, other sandboxes): its CPU and load are not the
# sandbox's to control, so end-to-end runs that are not about SYS-01/SYS-02 lift those two limits.
# tests/test_run_hosts.py checks SYS-01..04 with limits the machine certainly exceeds or stays under.
# SYS-06's loopback round trips are scheduling delays of that same shared machine (p99 of 7 ms seen under load):
# lifted too; tests/test_run_resources_and_baselines.py shows SYS-06 failing over its threshold.
# HTTP and Redis latency likewise (p99 of 137 ms seen at a load of 18), up to just under the delay of the sandbox's
# `slow` (150 ms a request) and `redis-slow` (DEBUG SLEEP 200 ms) faults, which still fail however idle the machine is.
# SVC-06 takes 5 samples a service, not 20: every sample of a `slow` service is slow, so it fails all the same, and
# the 90 requests fewer were 0.2 s of the 1.5 s of CPU a whole-catalog run cost (the services' and the checker's);
# a run with shared=False keeps the default of 20.
SHARED_MACHINE = ("--set", "thresholds.cpu_percent_max=100", "--set", "thresholds.load_1m_max=1000",
                  "--set", "thresholds.network_p99_fail_ms=1000", "--set", "thresholds.latency_p99_fail_ms=149",
                  "--set", "thresholds.redis_latency_p99_ms_max=40", "--set", "thresholds.latency_samples=5")


# Modules that xdist keeps together, one after another on one worker (pytest_xdist_make_scheduler below):
# - the host services': each starts an ACGS-like service outside a sandbox or discovers every service of the host,
#   under host_services_lock(); as modules of their own, three workers at once each waited up to 30 s for another's
#   lock;
# - the waiting ones: each spends its time waiting out a timeout, a silent server or a liveness bound, with a core
#   idle; two or three of them at once on different workers left a core idle for 30 s, one after another on one
#   worker they leave the other workers both cores.
HOST_SERVICES_MODULES = ("test_discover.py", "test_discover_untidy.py", "test_discover_hostile.py",
                         "test_discover_names.py", "test_control_characters.py")
WAITING_MODULES = ("test_reach.py", "test_ssh_liveness.py", "test_probes_data.py", "test_hostile_servers.py",
                   "test_no_pass_without_evidence.py", "test_latency_taken_again.py", "test_fleet_in_flight.py",
                   "test_interrupted_outcome.py")
SCOPES = {**dict.fromkeys(HOST_SERVICES_MODULES, "the host services' modules"),
          **dict.fromkeys(WAITING_MODULES, "the modules that mostly wait")}
# The order workers take scopes in, longest first (wall seconds summed per module, `make test` on 2 cores with a
# timing plugin): a long module started last runs on alone after the other workers have finished. The two kept
# together (about 50 and 65 s) come first. Modules not named here are short and follow in collection order.
LONGEST_FIRST = (*HOST_SERVICES_MODULES, *WAITING_MODULES,
                 "test_run_data_faults.py", "test_run_backup_faults.py", "test_remote_files.py", "test_run_sandbox.py",
                 "test_run_hosts.py", "test_interrupted_runs.py", "test_gates_sandbox.py", "test_sandbox.py",
                 "test_run_resources_and_baselines.py", "test_shards.py", "test_archive_remote.py",
                 "test_allure_structure.py", "test_make_demo.py", "test_profile_values_are_data.py",
                 "test_restore_drill_safety.py", "test_bounded_reads.py", "test_pytest_parity.py",
                 "test_profile_fuzz.py", "test_host_layer.py", "test_sandbox_data.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


def pytest_xdist_make_scheduler(config, log):
    """`--dist loadscope`, with SCOPES' modules kept together and the scopes in LONGEST_FIRST's order (xdist would
    reorder them by their number of tests)."""
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class Scheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return SCOPES.get(Path(nodeid.split("::", 1)[0]).name) or super()._split_scope(nodeid)

    config.option.loadscopereorder = False
    return Scheduling(config, log)


def profile_error(*args, **kw) -> str:
    """The ProfileError load_profile(*args, **kw) raises, as its text, after asserting it is one line without a
    traceback: profile_error("p.yaml") -> "p.yaml:1: hosts[0].port: ..."."""
    from acgs_verify.profile import ProfileError, load_profile

    with pytest.raises(ProfileError) as exc:
        load_profile(*args, **kw)
    text = str(exc.value)
    assert "\n" not in text and "Traceback" not in text
    return text


@pytest.fixture
def write_profile(tmp_path):
    def write(text: str, name: str = "p.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def ports_free(ports, address: str = "127.0.0.1") -> bool:
    import socket

    for port in ports:
        with socket.socket() as s:
            try:
                s.bind((address, port))
            except OSError:
                return False
    return True


PRODUCTION_PORTS = (8016, 8002, 8003, 8004, 8005, 8010, 5432, 6379, 443, 22)


# Offsets claimed by this process: the lock files stay locked until the process ends (every sandbox it started is
# down by then), so two test runs on one machine (two clones, or xdist workers) never pick the same offset.
OFFSET_LOCKS = Path("/tmp/acgs-verify-test-offsets")
_held_offsets: dict[int, object] = {}


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_offset(low: int = 11000, high: int | None = None) -> int:
    """A port offset at which every sandbox port is free (sandbox port = production port + offset), held by this
    process: `free_port_offset()` -> 21200, and no other process on the machine gets 21200 while this one runs.

    Every sandbox port stays below the kernel's ephemeral range: a port in it can be handed to any process's
    outgoing connection between our look and the server's bind."""
    import contextlib
    import fcntl
    import os
    import random

    if high is None:
        high = _ephemeral_low() - max(PRODUCTION_PORTS)
    OFFSET_LOCKS.mkdir(exist_ok=True)
    with contextlib.suppress(OSError):  # whoever made it first, every user's runs share it
        OFFSET_LOCKS.chmod(0o1777)
    for _ in range(200):
        offset = random.randrange(low, high, 100)
        if offset in _held_offsets:
            continue
        # claim first, then look: between a look and a claim another run could take the same ports
        fd = os.open(OFFSET_LOCKS / f"{offset}.lock", os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        # the sandbox's second host listens on 127.0.0.2 (sshd): a sandbox left behind by a killed run holds it there
        if ports_free([p + offset for p in PRODUCTION_PORTS] + [p + offset + 1 for p in (5432, 6379)]) and \
                ports_free([22 + offset], "127.0.0.2"):
            _held_offsets[offset] = fd
            return offset
        os.close(fd)  # closing the descriptor drops the lock
    raise RuntimeError("no free port offset found")


HOST_SERVICES_LOCK = Path("/tmp/acgs-verify-test-host-services.lock")


@contextlib.contextmanager
def host_services_lock():
    """Held while a test runs an ACGS-like service of its own outside a sandbox, or discovers every service of the
    host: `acgs-verify discover` asks every listener on the machine for /health, and a stray service that answers
    with the constitutional hash under a name of its own is one more service in another test's profile.
    Sandboxes' services are not at issue (discover keeps one per name, the runbook port's first), nor are plain
    PostgreSQL and Redis servers (a stack's own are chosen by its services' DSNs and connections): start those
    before taking it, so that another module waits for this one's services and discovers alone. A lock file, so
    that two clones' runs on one machine wait for each other too."""
    import fcntl
    import os

    module = os.environ.get("PYTEST_CURRENT_TEST", "").split("::", 1)[0]
    if module and Path(module).name not in HOST_SERVICES_MODULES:
        raise RuntimeError(f"{module} takes the host services' lock: add it to HOST_SERVICES_MODULES in "
                           "tests/conftest.py, so that it runs on the worker that runs the others")
    fd = os.open(HOST_SERVICES_LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


@pytest.fixture(scope="module")
def host_services_alone():
    """host_services_lock() for a whole module."""
    with host_services_lock():
        yield


def _others_may_enter(path: Path) -> bool:
    return all(p.stat().st_mode & 0o001 for p in (path, *path.parents))


@pytest.fixture(scope="session")
def importable_by_others():
    """PYTHONPATH entries from which another user (`nobody`, for the tests that run as one) imports this checkout
    and the venv's libraries: the checkout and the venv themselves where every folder above them lets others in,
    else copies in a world-readable folder of /tmp. A clone in `mktemp -d` or under /root sits in a 0700 folder,
    where `nobody` found no module named acgs_verify."""
    import shutil
    import sysconfig
    import tempfile

    purelib = Path(sysconfig.get_paths()["purelib"])
    if _others_may_enter(REPO) and _others_may_enter(purelib):
        yield [str(purelib), str(REPO)]
        return
    work = Path(tempfile.mkdtemp(prefix="acgs-verify-importable-", dir="/tmp"))
    try:
        skip = shutil.ignore_patterns("__pycache__", "*.pyc")
        repo = work / "repo"
        for name in ("acgs_verify", "checks", "profiles"):
            shutil.copytree(REPO / name, repo / name, ignore=skip)
        # the libraries only: the editable install's .pth files are not read from a PYTHONPATH entry
        shutil.copytree(purelib, work / "site-packages", symlinks=True, ignore=skip)
        for p in (work, *work.rglob("*")):
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | (0o005 if p.is_dir() else 0o004))
        yield [str(work / "site-packages"), str(repo)]
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def closed_port():
    """A loopback port of this test's own, bound but not listening: every connection to it is refused at once."""
    from tests import servers

    with servers.closed_port() as port:
        yield port


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory):
    """One sandbox for the session's end-to-end tests, on free ports, always taken down."""
    from acgs_verify.sandbox import Sandbox

    sb = Sandbox(tmp_path_factory.mktemp("sandbox"), port_offset=free_port_offset())
    try:
        sb.profile_path = sb.up()
        yield sb
    finally:
        sb.down()


@pytest.fixture(scope="session")
def healthy_run(sandbox, tmp_path_factory):
    """One whole-catalog run of the healthy session sandbox, shared by the tests that read only what it found
    (a Run: tests/runs.py). Its report directory is its own: a test that needs history or a snapshot starts its own."""
    for fault in sandbox.faults():
        sandbox.heal_fault(fault)
    return run_checks(sandbox, tmp_path_factory.mktemp("healthy-run") / "reports")


@pytest.fixture
def healthy_sandbox(sandbox):
    """The session sandbox, with every fault healed after the test."""
    yield sandbox
    for fault in sandbox.faults():
        sandbox.heal_fault(fault)


def sandbox_admin(sandbox, dbname: str = "acgs_production", replica: bool = False):
    """A superuser session on the sandbox's primary (or its replica), for tests that set up or inspect what checks
    may not touch."""
    import psycopg

    from acgs_verify.sandbox.components.postgres import primary_port, replica_port

    password = sandbox.secret("pg-admin")
    port = (replica_port if replica else primary_port)(sandbox.port_offset)
    return psycopg.connect(host="127.0.0.1", port=port, user="postgres",
                           password=password, dbname=dbname, autocommit=True, connect_timeout=5)


def keep_hosts(data: dict, keep) -> dict:
    """A profile's data with only the hosts `keep(host)` accepts, and without the certificates that lived on the
    others (a certificate naming a host the profile lacks is refused at load, as it should be)."""
    data["hosts"] = [h for h in data["hosts"] if keep(h)]
    names = {h["name"] for h in data["hosts"]}
    data["certificates"] = [c for c in data.get("certificates", [])
                            if isinstance(c, str) or c.get("host") in (None, *names)]
    return data
