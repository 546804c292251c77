"""acgs-verify run | merge | report | diff | sandbox | catalog | discover

Exit codes (docs/design.md, the same as Nagios): 0 every check passed, 1 only P2/P3 checks failed,
2 a P0/P1 check failed, 3 could not run (bad profile, bad option, nothing collected).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import signal
import sys
import time
from pathlib import Path

from acgs_verify import options
from acgs_verify.gates import GateError
from acgs_verify.redact import one_line, printable
from acgs_verify.results import EXIT_UNKNOWN
from acgs_verify.words import plural

PACKAGE_DIR = Path(__file__).resolve().parent


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit 3."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would exit 2, which a gate reads as "P0/P1 failed"
        command = self.prog.removeprefix("acgs-verify").strip()  # main() prints the one "acgs-verify: error:"
        raise UsageError(f"{command}: {message}" if command else message)


# the most a number on the command line may be: past these a value is a typo, and nan or inf never ends a wait
MAX_WAIT_SECONDS = 24 * 3600
MAX_WORKERS = 512


def number(option: str, low: float, high: float, kind: type = float):
    """An argparse type: a finite number in [low, high], else one line naming the option."""

    def parse(text: str):
        try:
            value = float(text) if kind is float else int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} {text!r}: not a number") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{option} {text!r}: must be a number from {low:g} to {high:g}")
        return value

    parse.__name__ = option  # argparse names the type in its own messages
    return parse


FORMATS = ("text", "nagios")

# options that name no help themselves (a subcommand's shared ones) get this
DEFAULT_HELP = {
    "--json": "print JSON instead of a table",
    "--markdown": "print Markdown instead of a table",
    "--report-dir": "where runs write their reports (default: reports)",
}




def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("acgs-verify")
    except PackageNotFoundError:
        return "unknown (not installed)"


class _VersionAction(argparse.Action):
    """--version, looked up when asked for: importlib.metadata reads every installed distribution's metadata to
    find it (~20 ms), which every other command would pay while its parser is built."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"acgs-verify {_version()}")
        parser.exit()


def checks_dir() -> Path:
    for candidate in (PACKAGE_DIR / "_checks", PACKAGE_DIR.parent / "checks"):
        if candidate.is_dir():
            return candidate
    raise UsageError("cannot find the checks directory (checks/ next to the acgs_verify package)")


def build_parser() -> _Parser:
    p = _Parser(prog="acgs-verify", description="The ACGS operational runbook as checks.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action=_VersionAction, help="print the version and exit")
    # --debug after the subcommand too (`acgs-verify run --debug`); SUPPRESS keeps a value given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND",
                           help="run | merge | report | diff | catalog | sandbox | discover")
    add_parser = sub.add_parser

    def add_with_common(name: str, **kw):
        return add_parser(name, parents=[common], **kw)

    sub.add_parser = add_with_common  # type: ignore[method-assign]

    run = sub.add_parser("run", help="run the checks against a profile")
    for option in options.SHARED:  # the same flags, defaults and help as `pytest checks` (plugin.py)
        run.add_argument(option.flag, **option.kwargs())
    _add_gate_options(run)
    run.add_argument("--workers", default="auto", metavar="N|auto",
                     help=f"parallel worker processes (default auto: none below {AUTO_WORKERS_MIN_HOSTS} hosts or "
                          f"{AUTO_WORKERS_MIN_CORES} cores, else one per core; `-- -n N` wins)")
    run.add_argument("--format", choices=FORMATS, default="text",
                     help="text (default): pytest's progress, findings, then the summary line last; nagios: a "
                          "Nagios/Icinga plugin's output on stdout (the status line first, one line per failed "
                          "check, no |), everything else on stderr")
    run.add_argument("--metrics-file", type=Path, default=None, metavar="PATH",
                     help="also write the run's Prometheus metrics to PATH (atomically), whatever its end: a run "
                          "that cannot run (exit 3) still sets acgs_verify_last_run_exit_code and its time; point it "
                          "into node_exporter's --collector.textfile.directory")
    run.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments (-n 4, -k ..., -m ...)")

    rep = sub.add_parser("report", help="regenerate a run's reports from its summary.json")
    rep.add_argument("run", nargs="?", default="latest", help="run id, run directory or summary.json (default: latest)")
    rep.add_argument("--report-dir", default="reports", type=Path)

    mrg = sub.add_parser("merge", help="join the shards of one run (run --shard K/N) into one run and its reports")
    mrg.add_argument("runs", nargs="+", metavar="RUN_DIR",
                     help="each shard's run directory (or its summary.json), e.g. shards/*/latest")
    mrg.add_argument("--report-dir", default="reports", type=Path,
                     help="where the merged run is written, with latest and history.jsonl (default: reports)")

    dif = sub.add_parser("diff", help="compare two runs as the post-maintenance gate does")
    dif.add_argument("run_a", help="the run before (run id, run directory, summary.json or snapshot.json)")
    dif.add_argument("run_b", help="the run after")
    dif.add_argument("--report-dir", default="reports", type=Path)

    cat = sub.add_parser("catalog", help="which runbook IDs are covered, and how many tests each expands to")
    cat.add_argument("--profile", **options.BY_NAME["profile"].kwargs())
    cat.add_argument("--json", action="store_true")
    cat.add_argument("--markdown", action="store_true",
                     help="print the catalog as docs/checks.md: every ID with its evidence rule and next step")

    sb = sub.add_parser("sandbox", help="a local ACGS-like stack to run against")
    sb.add_argument("action", choices=["up", "down", "status", "break", "heal", "faults"],
                    help="up: start it and print its profile; down; status; break/heal FAULT; faults: list them, "
                         "with what each does")
    sb.add_argument("fault", nargs="?", help="FAULT[:NAME] for break and heal; `heal all` heals every fault on")
    sb.add_argument("--dir", type=Path, default=Path(os.environ.get("ACGS_SANDBOX_DIR", ".sandbox")),
                    help="the sandbox's directory: its data, logs and state (default: $ACGS_SANDBOX_DIR or .sandbox)")
    sb.add_argument("--port-offset", type=number("--port-offset", 0, 65535 - 443, int),
                    default=os.environ.get("ACGS_SANDBOX_PORT_OFFSET", "10000"),
                    help="sandbox port = production port + offset (default 10000)")
    disc = sub.add_parser("discover", help="write a commented profile from what runs on a host")
    from acgs_verify.discover import add_arguments as _discover_arguments

    _discover_arguments(disc)
    for parser in [p, *sub.choices.values()]:
        for action in parser._actions:
            if action.help is None:
                action.help = next((DEFAULT_HELP[o] for o in action.option_strings if o in DEFAULT_HELP), None)
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line; argv None: the process's own (sys.argv), and the process ends when main returns."""
    program = argv is None
    if program:
        # Start-up (the profile model, pytest, the probes' libraries) makes ~100k objects that live until the
        # process ends; collecting while they are made walks them again and again (~15 % of the imports' CPU).
        # The collector is back on when the checks start (_run_pytest), or before any other command's handler.
        gc.disable()
    try:
        return _main(sys.argv[1:] if program else argv, program)
    finally:
        if program:
            # Exit without walking every object the run made once more: at interpreter exit Python runs full
            # collections over all of them (0.12-0.48 s after a run). Frozen, they are left to the OS with the memory.
            gc.freeze()


def _main(argv: list[str], program: bool) -> int:
    debug = "--debug" in argv[: argv.index("--")] if "--" in argv else "--debug" in argv
    nagios = _nagios_wanted(argv)  # known before argparse, which may be what fails
    args = None
    try:
        args = build_parser().parse_args(argv)
        args.program = program
        handler = {"run": cmd_run, "catalog": cmd_catalog, "sandbox": cmd_sandbox, "report": cmd_report,
                   "diff": cmd_diff, "discover": cmd_discover, "merge": cmd_merge}[args.command]
        if args.command != "run":
            gc.enable()
        if nagios and args.command == "run":
            with _stdout_to_stderr():
                code = handler(args)
            _write_stdout(_nagios_output(args))
        else:
            code = handler(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below, not at interpreter exit
        return code
    except BrokenPipeError:
        # `acgs-verify catalog --json | head`: the reader had enough; that is not an error
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (UsageError, GateError) as exc:
        if debug:
            raise
        return _could_not_run(f"acgs-verify: error: {exc}", argv, args, nagios)
    except Exception as exc:
        from acgs_verify.profile import ProfileError
        from acgs_verify.rundir import ReportDirError
        from acgs_verify.sandbox import SandboxError
        from acgs_verify.waivers import WaiverError

        if isinstance(exc, ProfileError | SandboxError | ReportDirError | WaiverError) and not debug:
            return _could_not_run(f"acgs-verify: error: {exc}", argv, args, nagios)
        if debug:
            raise
        return _could_not_run(f"acgs-verify: internal error: {type(exc).__name__}: {one_line(exc)} "
                              "(run with --debug for a traceback)", argv, args, nagios)
    except KeyboardInterrupt:
        return _could_not_run("acgs-verify: interrupted", argv, args, nagios)


def _could_not_run(line: str, argv: list[str], args, nagios: bool) -> int:
    """Exit 3 with one line on stderr; in nagios format an UNKNOWN status line on stdout too, and a run's
    --metrics-file says it could not run (the last run's metrics would otherwise look fresh)."""
    # the line quotes a profile's path, a --set value, a field of a profile, a report directory's name: any of
    # them may hold an escape sequence, which a terminal would act on (retitle, clear, write the clipboard)
    line = printable(line)
    print(line, file=sys.stderr)
    if nagios:
        from acgs_verify.report.nagios import unknown_output

        _write_stdout(unknown_output(line.removeprefix("acgs-verify: ").removeprefix("error: ")))
    _write_run_metrics(_run_args(argv, args), None)
    return EXIT_UNKNOWN


def _nagios_wanted(argv: list[str]) -> bool:
    """`run --format nagios` (or `--format=nagios`, or an abbreviation argparse would take) before any `--`."""
    head = argv[: argv.index("--")] if "--" in argv else argv
    for i, arg in enumerate(head):
        flag, eq, value = arg.partition("=")
        given = value if eq else (head[i + 1] if i + 1 < len(head) else "")
        if len(flag) > 3 and "--format".startswith(flag) and given == "nagios":
            return True
    return False


@contextlib.contextmanager
def _stdout_to_stderr():
    """Whatever the run prints (pytest's progress and findings, the reports line, the summary line) goes to stderr,
    at the file descriptor too (pytest's workers, children): in nagios format stdout holds the plugin output only."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _write_stdout(text: str) -> None:
    """UTF-8 whatever the locale (Nagios and Icinga read UTF-8; the nagios output shows `|` as `¦`)."""
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        sys.stdout.write(text)
    else:
        sys.stdout.flush()
        buffer.write(text.encode("utf-8", "backslashreplace"))
    sys.stdout.flush()


def _nagios_output(args) -> str:
    from acgs_verify.report.nagios import render_nagios, unknown_output

    result = getattr(args, "result", None)
    return render_nagios(result) if result is not None else unknown_output(getattr(args, "unknown", "could not run"))


def _run_args(argv: list[str], args):
    """The parsed arguments of a `run` (what argparse could make of them when it refused them), else None."""
    if args is not None:
        return args if args.command == "run" else None
    head = argv[: argv.index("--")] if "--" in argv else argv
    if "run" not in head:
        return None
    lenient = _Parser(prog="acgs-verify run", add_help=False, allow_abbrev=False)
    for flag in ("--profile", "--gate", "--metrics-file"):
        lenient.add_argument(flag)
    try:
        found, _ = lenient.parse_known_args(head[head.index("run") + 1:])
    except UsageError:
        return None
    found.command, found.gate = "run", found.gate or options.DEFAULT_GATE
    return found


def _profile_label(args) -> str:
    """The profile's name as a run's metrics label it: its own once loaded, else as the loader names a profile
    file (`profiles/production.yaml` and `production` -> 'production')."""
    import re

    if getattr(args, "profile_label", None):
        return args.profile_label
    stem = Path(str(args.profile or options.DEFAULT_PROFILE)).stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).lstrip(".-") or "profile"


def _write_run_metrics(args, result) -> None:
    """--metrics-file: the run's metrics (result None: it could not run, exit 3, now). One line on stderr if that
    fails; the run's exit code stays its verdict's."""
    path = getattr(args, "metrics_file", None) if args is not None else None
    if not path:
        return
    from acgs_verify.report.prometheus import write_metrics, write_run_status

    try:
        if result is not None:
            write_metrics(result, Path(path))
        else:
            write_run_status(Path(path), _profile_label(args), str(args.gate), EXIT_UNKNOWN)
    except OSError as exc:
        print(printable(f"acgs-verify: error: --metrics-file {path}: not written ({exc.strerror or one_line(exc)})"),
              file=sys.stderr)


def cmd_discover(args) -> int:
    from acgs_verify.discover import run

    return run(args)


# ----------------------------------------------------------------------------------------------- run


def _pytest_base_args(**shared) -> list[str]:
    """pytest over the checks with the plugin, handed the shared options (options.py) by name."""
    return [str(checks_dir()), "-c", str(PACKAGE_DIR / "pytest-run.ini"), "--rootdir", str(checks_dir().parent),
            "-p", "acgs_verify.plugin", "-p", "no:cacheprovider", *options.pytest_args(shared)]


class _Grab:
    """Hands the run's pytest config back to the CLI (the plugin's result collector lives on it)."""

    config = None

    def __init__(self, freeze: bool = False):
        self.freeze = freeze

    def pytest_configure(self, config):
        self.config = config

    def pytest_collection_finish(self, session):
        if self.freeze:
            gc.freeze()  # the checks' modules and pytest's items live until the end too (see _run_pytest)


def _run_pytest(args: list[str], plugins: list | None = None, freeze: bool = False):
    """pytest.main(args, plugins) in this process.

    freeze: when the process ends with this run. What was imported and collected lives until the end (~100k
    objects: modules, the profile model's schemas, pytest's items), and every full collection of the cyclic garbage
    collector walked it all again (up to 0.2 s while the reports were written; BENCHMARKS.md): gc.freeze() takes
    it out of the collector's sight. Garbage made during the run is collected as before."""
    import pytest

    # only the plugins a run needs: autoloading every installed pytest plugin costs ~0.3 s per run
    os.environ.setdefault("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    if any(a == "-n" or a.startswith(("-n", "--numprocesses")) for a in args):
        args = ["-p", "xdist.plugin", *args]
    grab = _Grab(freeze)
    if freeze:
        gc.freeze()
    gc.enable()  # off for start-up (main): what start-up made is frozen now, out of the collector's sight
    held = _HeldUntilConfigured(sys.stderr, grab)
    with contextlib.redirect_stderr(held):
        code = pytest.main(args, plugins=[grab, *(plugins or [])])
    if grab.config is None and code == 4:  # pytest's usage text, naming its ini file: one line of ours instead
        raise UsageError(f"run: pytest arguments after --: {held.usage_error()}")
    held.release()
    return code, grab.config


class _HeldUntilConfigured:
    """sys.stderr while pytest parses its arguments: what it writes before its configuration exists (a usage error
    is all it writes then) is held, and passed on when the run goes ahead; from then on every write passes."""

    def __init__(self, real, grab: _Grab):
        self.real, self.grab, self.held = real, grab, []

    def write(self, text: str) -> int:
        if self.grab.config is None:
            self.held.append(text)
            return len(text)
        return self.real.write(text)

    def release(self) -> None:
        if self.held:
            self.real.write("".join(self.held))
            self.held.clear()

    def usage_error(self) -> str:
        lines = [line.strip() for line in "".join(self.held).splitlines() if line.strip()]
        said = next((line.split("error: ", 1)[1] for line in lines if "error: " in line and "usage:" not in line),
                    None)
        return said or (lines[0].removeprefix("ERROR: ") if lines else "pytest refused them")

    def __getattr__(self, name: str):
        return getattr(self.real, name)


# What a run does without, each measured in BENCHMARKS.md: checks judge with check.that, never `assert`, so
# rewriting their asserts (compiling the check modules anew on every run when bytecode caching is off) buys
# nothing; and pytest's unraisable-exception plugin runs gc.collect() over and over at exit (~0.1 s). No check is a
# unittest.TestCase or a doctest: those plugins cost their imports and a hook call per object of every check module.
RUN_ONLY_ARGS = ("--assert=plain", "-p", "no:unraisableexception", "-p", "no:unittest", "-p", "no:doctest")
# From this many hosts up, on a machine with at least AUTO_WORKERS_MIN_CORES cores, `run` starts workers (-n,
# --dist loadgroup: a host's checks stay in one worker) when the user asked for none. Below either, starting and
# feeding workers costs more than it saves: on 2 cores 10 hosts took 6.7 s with 2 workers and 5.0 s without
# (BENCHMARKS.md, scaling), and one host always loses.
AUTO_WORKERS_MIN_HOSTS = 8
AUTO_WORKERS_MIN_CORES = 4


def workers_for(requested: str, hosts: int, cores: int | None = None) -> int:
    """--workers: a number, or auto (none below AUTO_WORKERS_MIN_HOSTS hosts or AUTO_WORKERS_MIN_CORES cores, else
    one per core and at most one per AUTO_WORKERS_MIN_HOSTS hosts)."""
    if requested != "auto":
        try:
            n = int(requested)
        except ValueError:
            raise UsageError(f"--workers {requested!r}: a number of workers or 'auto'") from None
        if not 0 <= n <= MAX_WORKERS:
            raise UsageError(f"--workers {n}: must be from 0 to {MAX_WORKERS}")
        return n
    cores = cores or os.cpu_count() or 1
    if hosts < AUTO_WORKERS_MIN_HOSTS or cores < AUTO_WORKERS_MIN_CORES:
        return 0
    return min(cores, hosts // AUTO_WORKERS_MIN_HOSTS)


def _worker_args(requested: str, pytest_args: list[str], hosts: int) -> list[str]:
    if any(a == "-n" or a.startswith(("-n", "--numprocesses", "--dist")) for a in pytest_args):
        return []  # the user's -n wins
    n = workers_for(requested, hosts)
    return ["-n", str(n), "--dist", "loadgroup"] if n > 1 else []


def cmd_run(args) -> int:
    from acgs_verify import rundir
    from acgs_verify.profile import load_profile

    problem = options.gate_problem(args.gate)
    if problem:
        raise UsageError(problem)
    shard = _shard(args)
    args.run_group = shard.group if shard is not None else None  # pytest is handed the group resolved here
    args.report_dir = Path(options.DEFAULT_REPORT_DIR if args.report_dir is None else args.report_dir)
    workers_for(args.workers, 0)  # a bad --workers stops here, before anything is written
    _check_options(args)
    if args.profile is None:
        args.profile = str(_running_sandbox_profile())
    profile = load_profile(args.profile, args.set)  # bad input stops here, before pytest starts
    args.profile_label = profile.name  # --metrics-file's label, should the run stop before pytest
    for text in profile.insecure_settings():
        print(printable(f"acgs-verify: WARNING: {text}"), file=sys.stderr)
    gate_plan = _plan_gate(args, profile)
    report_dir: Path = rundir.usable_report_dir(args.report_dir)
    started = time.time()
    run_id = rundir.new_run_id(profile.name, args.gate)
    # SIGTERM from here on is a Ctrl-C: whenever it comes, the partial directory is finished or removed
    with _sigterm_interrupts():
        partial = rundir.partial_of(report_dir, run_id)
        try:
            rundir.start(report_dir, run_id)
            return _run_into(args, profile, gate_plan, report_dir, partial, run_id, started)
        except BaseException:
            rundir.discard(partial)  # interrupted outside pytest, or a bug: never leave .partial-* behind
            raise


def _running_sandbox_profile() -> Path:
    """Without --profile, `run` checks the sandbox that is running (the one `sandbox up` would start, in
    $ACGS_SANDBOX_DIR or .sandbox), never the default ports of a stack that may not be the one up."""
    from acgs_verify.sandbox.manager import running_profile

    path, why = running_profile(Path(os.environ.get("ACGS_SANDBOX_DIR", ".sandbox")))
    if path is None:
        raise UsageError(f"no --profile, and no sandbox running ({why}): start one with `acgs-verify sandbox up`, "
                         "or name a profile: `acgs-verify run --profile NAME_OR_PATH`")
    print(f"acgs-verify: no --profile: using the running sandbox's profile {path}", file=sys.stderr)
    return path


def _shard(args):
    from acgs_verify.shards import ShardError, resolve

    try:
        return resolve(args.shard, args.run_group, args.gate)
    except ShardError as exc:
        raise UsageError(str(exc)) from None


def _check_options(args) -> None:
    """Options that need no profile, checked before it is loaded (its secrets may not be there yet)."""
    from acgs_verify import rundir
    from acgs_verify.options import parse_since

    if args.since and args.since != "snapshot":
        try:
            parse_since(args.since)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    if args.waivers is not None:
        from acgs_verify.waivers import load_waivers

        load_waivers(args.waivers)  # a bad file stops the run here: one line, exit 3
    rundir.usable_report_dir(args.report_dir, create=False)  # created once the profile is known to be good
    if args.metrics_file is not None:
        folder = args.metrics_file.absolute().parent
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"--metrics-file {args.metrics_file}: {folder} is not a directory this user can write to")


def _run_into(args, profile, gate_plan, report_dir: Path, partial: Path, run_id: str, started: float) -> int:
    from acgs_verify import rundir
    from acgs_verify.chunks import host_chunks

    workers = _worker_args(args.workers, args.pytest_args, len(profile.hosts))
    in_workers = bool(workers) or any(a.startswith(("-n", "--numprocesses", "--dist")) for a in args.pytest_args)
    # --wait re-runs the failing checks of one session; a shard is a run's part already; workers hold their own
    chunks = [] if args.wait or args.shard or in_workers else host_chunks(profile)
    # the shared options as given, but for the log window the gate resolved (--since snapshot: its start)
    shared = {o.name: getattr(args, o.name) for o in options.SHARED}
    if chunks:
        shared["waivers"] = None  # applied once to the whole run: a waiver matches no check of most chunks
    pytest_args = _pytest_base_args(**{**shared, "report_dir": report_dir, "since": gate_plan.since}) + [
        # no --junitxml: pytest's plugin would keep every test case's tree until the session ends (~10 KB a
        # check), for a file finish_run writes again from the result (report/junit.py)
        "--acgs-run-id", run_id,
        "-q", "--no-header", "--tb=short" if args.debug else "--tb=no", "-rN",
        *RUN_ONLY_ARGS,
        *workers,
        *args.pytest_args,
    ]
    from acgs_verify.plugin import Loaded

    # the profile loaded above goes to the plugin, which would read and validate it again
    loaded = Loaded(profile, args.profile, args.set)
    if chunks:
        code, config, result = _run_in_chunks(pytest_args, loaded, chunks, args.waivers, started)
    else:
        code, config = _run_pytest(pytest_args, [loaded], freeze=args.program)
        result = _result_of(config)
    if result is None or code in (3, 4):  # pytest could not start: its own message is already printed
        from acgs_verify.collector import close_handed_pool

        close_handed_pool(config)  # or stopped on an internal error after checks that used the hosts
        rundir.discard(partial)
        args.unknown = f"could not run the checks (pytest exit {code})"  # the nagios format's status line
        print(f"ACGS UNKNOWN - {args.unknown} | duration={time.time() - started:.1f}s")
        _write_run_metrics(args, None)
        return EXIT_UNKNOWN
    args.result = result  # what the nagios format renders
    if result.complete and (code == 5 or not result.checks):  # interrupted before the first check: not a filter
        shard = result.extra.get("shard")
        if not shard:  # an empty run would become `latest` (and the nightly unit would publish it): none is written
            rundir.discard(partial)
            filtered = any(a.startswith(("-k", "-m")) for a in args.pytest_args)
            why = "matches the -k and -m filters" if filtered else "has a target in the profile"
            args.result = None  # no verdict to render: the nagios format says why it has none
            args.unknown = f"nothing collected: no check of gate {args.gate} {why}; {report_dir}/latest left as it was"
            print(f"ACGS UNKNOWN - {args.unknown} | duration={time.time() - started:.1f}s")
            _write_run_metrics(args, None)  # exit 3, now: the nightly alert must not read the last run's series
            return EXIT_UNKNOWN
        # a shard that holds nothing is still one of the run's shards: merge needs its run directory
        result.notes.append("no checks were collected: check the gate, -k and -m filters; or no host or target of "
                            f"the profile hashes to shard {shard['index']} of {shard['count']}")
    if args.wait and result.checks and result.complete:
        _wait(args, result, pytest_args)
    from acgs_verify.collector import handed_pool
    from acgs_verify.finish import finish_run

    # the checks' connections copy the gate's evidence (a run that ended before this ran no check: it has none)
    finish_run(result, partial, report_dir, profile.secret_values(), gate=(gate_plan, profile), started=started,
               written=lambda r: _write_run_metrics(args, r), pool=handed_pool(config))
    return result.exit_code


def _run_in_chunks(pytest_args: list[str], loaded, chunks: list, waivers: Path | None, started: float):
    """One pytest session per chunk of hosts (chunks.py), their results joined as one session's: (pytest's exit
    code as one session would give it, the last session's config, the joined result or None)."""
    from acgs_verify.chunks import joined, shared_text
    from acgs_verify.collector import close_handed_pool

    parts, codes, config, seen = [], [], None, {}
    for chunk in chunks:
        # no gc.freeze(): what a chunk collected must go before the next chunk collects
        code, config = _run_pytest(pytest_args, [loaded, chunk])
        close_handed_pool(config)  # the gate stage opens a pool of its own over every host
        result = _result_of(config)
        if result is None or code in (3, 4):
            return code, config, None
        parts.append(shared_text(result, seen))
        codes.append(code)
        config = None  # the chunk's session (its items, reports, fixtures' objects) is garbage from here
        gc.collect()
        if not result.complete:  # interrupted: the chunks not run yet are not planned either
            break
    whole = joined(parts, started)
    if waivers is not None and whole.checks:
        from datetime import UTC, datetime

        from acgs_verify.waivers import apply_waivers, load_waivers

        whole.notes.extend(apply_waivers(whole.checks, load_waivers(waivers), datetime.now(UTC).date()))
    code = 5 if all(c == 5 for c in codes) else max(c for c in codes if c != 5)
    return code, config, whole


@contextlib.contextmanager
def _sigterm_interrupts():
    """SIGTERM (systemd stop, CI cancel) ends the run the way Ctrl-C does: workers stopped, report kept."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread (embedded use): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _result_of(config):
    from acgs_verify.collector import COLLECTOR_KEY

    collector = config.stash.get(COLLECTOR_KEY, None) if config is not None else None
    return collector.result if collector is not None else None


# ---------------------------------------------------------------------- run: gates, waivers, reports


def _add_gate_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("--snapshot", type=Path, default=None, metavar="PATH",
                     help="post-maintenance/rollback: the snapshot to compare with (snapshot.json or its run "
                          "directory; default: the latest pre-maintenance snapshot of the same profile)")
    run.add_argument("--wait", type=number("--wait", 0, MAX_WAIT_SECONDS), default=0, metavar="SECONDS",
                     help="re-run failing checks until they pass or SECONDS are up (services restarting)")


def _plan_gate(args, profile):
    from acgs_verify import gates

    return gates.plan(args.gate, profile.name, args.report_dir, args.snapshot, args.since)


def _wait(args, result, pytest_args: list[str]) -> None:
    from acgs_verify import gates

    root = checks_dir().parent
    first_path = pytest_args.index(str(checks_dir()))

    def rerun(nodeids: list[str], attempt: int):
        again = list(pytest_args)
        again[first_path:first_path + 1] = [str(root / n) for n in nodeids]
        code, config = _run_pytest(again)
        from acgs_verify.collector import close_handed_pool

        close_handed_pool(config)  # the first run's pool copies the evidence: this attempt's is not needed
        res = _result_of(config)
        # junit.xml comes from the merged result when the run finishes: no attempt writes one of its own
        return None if res is None or code in (3, 4) else res

    gc.unfreeze()  # the first run's pytest session is garbage now: let the collector see it again
    gates.wait_for_recovery(result, args.wait, rerun)


# ------------------------------------------------------------------------------------ report, diff


def _find_run(arg: str, report_dir: Path) -> Path:
    """A run id, a run directory, or a file in one (summary.json / snapshot.json)."""
    for candidate in (Path(arg), report_dir / arg):
        if candidate.exists():
            return candidate
    raise UsageError(f"no run {arg!r} (looked for {arg} and {report_dir / arg})")


def cmd_report(args) -> int:
    from acgs_verify import rundir
    from acgs_verify.report import write_all
    from acgs_verify.report.summary import read_summary

    path = _find_run(args.run, args.report_dir)
    summary = path / "summary.json" if path.is_dir() else path
    try:
        result = read_summary(summary)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"{summary}: not a readable summary.json ({one_line(exc)})") from None
    run_dir = rundir.run_dir_to_write(args.report_dir, summary.parent)  # never out of the report dir by a link
    written = write_all(result, run_dir)
    print(f"reports regenerated in {run_dir}/: {', '.join(p.name for p in written)}")
    print(result.summary_line())
    return 0


def cmd_merge(args) -> int:
    """The shards of one run as one run directory, its reports, one history line and the exit code of the whole.
    Shards of another profile, gate or run group are refused (exit 3); a missing shard closes the gate (exit 2)."""
    from acgs_verify import rundir
    from acgs_verify.report.summary import read_summary
    from acgs_verify.shards import SHARD_KEY, ShardError, merge_junit, merge_results

    found, seen = [], set()
    for arg in args.runs:
        summary = Path(arg) / "summary.json" if Path(arg).is_dir() else Path(arg)
        if not summary.is_file():
            raise UsageError(f"{arg}: no summary.json (give each shard's run directory, e.g. shards/*/latest)")
        if summary.resolve() in seen:  # shards/1/latest and the run it points at
            continue
        seen.add(summary.resolve())
        try:
            found.append((summary.parent, read_summary(summary)))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise UsageError(f"{summary}: not a readable summary.json ({one_line(exc)})") from None
    first = found[0][1]
    if "/" in first.profile or "/" in first.gate or first.profile.startswith("."):
        raise UsageError(f"{found[0][0]}: profile {first.profile!r} cannot name a run directory")
    try:
        merged = merge_results(found, rundir.new_run_id(first.profile, first.gate))
    except ShardError as exc:
        raise UsageError(str(exc)) from None
    report_dir: Path = rundir.usable_report_dir(args.report_dir)  # created once the shards are known to fit
    info = merged.extra["merged"]
    junits = [p / "junit.xml" for p, r in sorted(found, key=lambda f: f[1].extra[SHARD_KEY]["index"])]
    partial = rundir.start(report_dir, merged.run_id)
    try:
        merge_junit(junits, info["missing"], info["count"], partial / "junit.xml")
    except ShardError as exc:
        rundir.discard(partial)
        raise UsageError(str(exc)) from None
    except BaseException:
        rundir.discard(partial)
        raise
    here = ", ".join(str(s["index"]) for s in info["shards"])
    lines = [f"merged shards {here} of {info['count']} (run group {info['group']}): {len(merged.checks)} checks"]
    lines += [f"shard {k} of {info['count']} missing: its hosts and targets were not checked" for k in info["missing"]]
    from acgs_verify.finish import finish_run

    finish_run(merged, partial, report_dir, [], lines=lines)  # masked when each shard ran; each judged its gate
    return merged.exit_code


def cmd_diff(args) -> int:
    from acgs_verify.report.diff import compare
    from acgs_verify.report.snapshot import read_snapshot

    snaps = []
    for arg in (args.run_a, args.run_b):
        path = _find_run(arg, args.report_dir)
        try:
            snaps.append(read_snapshot(path))
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise UsageError(f"{path}: not a run, summary.json or snapshot.json "
                             f"({one_line(exc)})") from None
    d = compare(snaps[0], snaps[1])
    for line in d.lines():
        print(line)
    print(d.summary_line())
    return 2 if d.gate_failures() else 0


# ------------------------------------------------------------------------------------------- catalog


class _CountItems:
    def __init__(self):
        self.counts: dict[str, int] = {}

    def pytest_collection_finish(self, session):
        for item in session.items:
            mark = item.get_closest_marker("runbook")
            if mark is not None:
                self.counts[mark.args[0]] = self.counts.get(mark.args[0], 0) + 1


def cmd_catalog(args) -> int:
    import json

    import pytest

    from acgs_verify.catalog import CATALOG
    from acgs_verify.profile import load_profile

    if args.markdown:  # the catalog itself, not a profile's coverage: no profile is read
        from acgs_verify.catalog_doc import render_markdown

        sys.stdout.write(render_markdown(checks_dir()))
        return 0
    args.profile = options.profile_name(args.profile)
    load_profile(args.profile, resolve_secrets=False)
    os.environ.setdefault("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    counter = _CountItems()
    pytest_args = _pytest_base_args(profile=args.profile) + ["--collect-only", "-q", "--acgs-no-secrets"]
    with open(os.devnull, "w") as devnull:
        saved, sys.stdout = sys.stdout, devnull
        try:
            code = pytest.main(pytest_args, plugins=[counter])
        finally:
            sys.stdout = saved
    if code not in (0, 5):
        raise UsageError(f"collecting the checks failed (pytest exit {code})")
    rows = [{"id": e.id, "section": e.section, "severity": e.severity, "title": e.title,
             "covered": e.id in counter.counts, "tests": counter.counts.get(e.id, 0)} for e in CATALOG.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['id']:<7} {r['severity']} {r['section']:<13} {'covered' if r['covered'] else 'MISSING':<8}"
              f" {r['tests']:>3} tests  {r['title']}")
    covered = sum(r["covered"] for r in rows)
    print(f"{covered} of {len(rows)} catalog IDs covered, {sum(r['tests'] for r in rows)} tests for {args.profile}")
    return 0


# ------------------------------------------------------------------------------------------- sandbox


def cmd_sandbox(args) -> int:
    from acgs_verify.sandbox import Sandbox

    sb = Sandbox(args.dir, port_offset=args.port_offset)
    if args.action in ("break", "heal") and not args.fault:
        raise UsageError(f"sandbox {args.action} needs a FAULT, e.g. slow:auth (see `acgs-verify sandbox faults`)")
    if args.action == "up":
        path = sb.up()
        status = sb.status()
        _print_status(status)
        for note in sandbox_notes(status):  # on stderr: `make demo` keeps only stdout's last line, the profile
            print(f"acgs-verify: note: {note}", file=sys.stderr)
        print(path)
        return 0
    if args.action == "down":
        stopped = sb.down()
        print(f"sandbox down ({plural(len(stopped), 'process')} stopped)")
        return 0
    if args.action == "status":
        status = sb.status()
        _print_status(status)
        if not status.get("up"):
            return EXIT_UNKNOWN
        return 0 if all(p["state"] == "running" or p["state"].endswith("(fault)")
                        for c in status.get("components", {}).values() for p in c) else 1
    if args.action == "faults":
        specs = sb.valid_faults()  # what `break` accepts, e.g. slow:auth, db-lock, backup-missing:config.tar.gz
        width = max(map(len, specs))
        for spec in specs:
            print(f"{spec:<{width}}  {sb.fault_help(spec)}")
        return 0
    if args.action == "heal" and args.fault == "all":
        healed = sb.heal_all()
        print(f"faults healed: {', '.join(healed)}" if healed else "no fault was on")
        return 0
    if args.action == "break":
        sb.break_fault(args.fault)
        print(f"fault on: {args.fault}")
        shows = _FAULT_SHOWN_BY.get(args.fault.split(":", 1)[0])
        if shows:
            why, pytest_args = shows
            print(f"{why}: acgs-verify run --profile {sb.profile_path} {pytest_args}")
        return 0
    sb.heal_fault(args.fault)
    print(f"fault healed: {args.fault}")
    return 0


# faults that a plain run of the sandbox's profile does not show at once: why, and the run that shows it
_FAULT_SHOWN_BY = {
    "restore-broken": ("BK-07 restores the dump only in the pre-maintenance gate (elsewhere it is opt-in)",
                       "--gate pre-maintenance -- -k BK-07"),
    "db-long-query": ("DB-04 fails once the statement has run 2 s (the sandbox's thresholds.db_long_query_seconds)",
                      "-- -k DB-04"),
}


def sandbox_notes(status: dict) -> list[str]:
    """What a sandbox left out because this machine lacks it, and so which checks its runs will not have."""
    notes = []
    for component, procs in status.get("components", {}).items():
        for p in procs:
            if str(p.get("state", "")).startswith("not installed"):
                notes.append(f"{component} is not installed here: the sandbox runs without it ({p['state']}), so "
                             "every run of its profile has fewer checks than the README's "
                             + ("(no second host ops-1 over ssh, and none of its checks; apt-get install "
                                "openssh-server for the full set)" if component == "sshd" else "full set"))
    return notes


def _print_status(status: dict) -> None:
    if not status.get("up"):
        print(f"sandbox is not up ({status.get('dir', '')})")
        return
    for component, procs in status.get("components", {}).items():
        for p in procs:
            port = f":{p['port']}" if p.get("port") else ""
            print(f"{component:<10} {p['name']:<26} pid {p.get('pid') or '-':<8} {port:<7} {p['state']}")
    faults = status.get("faults") or []
    print(f"faults: {', '.join(faults) if faults else 'none'}")


if __name__ == "__main__":
    sys.exit(main())
