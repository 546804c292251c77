"""acgs-verify run | report | diff | sandbox | catalog

Exit codes (docs/design.md, the same as Nagios): 0 every check passed, 1 only P2/P3 checks failed,
2 a P0/P1 check failed, 3 could not run (bad profile, bad option, nothing collected).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from acgs_verify.gates import GateError
from acgs_verify.results import EXIT_UNKNOWN
from acgs_verify.waivers import WaiverError

PACKAGE_DIR = Path(__file__).resolve().parent


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit 3."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would exit 2, which a gate reads as "P0/P1 failed"
        raise UsageError(f"{self.prog}: {message}")


def checks_dir() -> Path:
    for candidate in (PACKAGE_DIR / "_checks", PACKAGE_DIR.parent / "checks"):
        if candidate.is_dir():
            return candidate
    raise UsageError("cannot find the checks directory (checks/ next to the acgs_verify package)")


def build_parser() -> _Parser:
    from acgs_verify.catalog import GATES

    p = _Parser(prog="acgs-verify", description="The ACGS operational runbook as checks.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser("run", help="run the checks against a profile")
    run.add_argument("--profile", default="sandbox", help="profile name or path (default: sandbox)")
    run.add_argument("--gate", default="compliance",
                     help=f"one of {', '.join(GATES)} (default: compliance, every check)")
    run.add_argument("--set", action="append", default=[], metavar="dotted.key=VALUE",
                     help="override a profile field for this run (repeatable)")
    run.add_argument("--report-dir", default="reports", type=Path, help="where runs write reports")
    _add_gate_options(run)
    run.add_argument("--workers", default="auto", metavar="N|auto",
                     help=f"parallel worker processes (default auto: none below {AUTO_WORKERS_MIN_HOSTS} hosts or "
                          f"{AUTO_WORKERS_MIN_CORES} cores, else one per core; `-- -n N` wins)")
    run.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments (-n 4, -k ..., -m ...)")

    rep = sub.add_parser("report", help="regenerate a run's reports from its summary.json")
    rep.add_argument("run", nargs="?", default="latest", help="run id, run directory or summary.json (default: latest)")
    rep.add_argument("--report-dir", default="reports", type=Path)

    dif = sub.add_parser("diff", help="compare two runs as the post-maintenance gate does")
    dif.add_argument("run_a", help="the run before (run id, run directory, summary.json or snapshot.json)")
    dif.add_argument("run_b", help="the run after")
    dif.add_argument("--report-dir", default="reports", type=Path)

    cat = sub.add_parser("catalog", help="which runbook IDs are covered, and how many tests each expands to")
    cat.add_argument("--profile", default="sandbox")
    cat.add_argument("--json", action="store_true")
    cat.add_argument("--markdown", action="store_true",
                     help="print the catalog as docs/checks.md: every ID with its evidence rule and next step")

    sb = sub.add_parser("sandbox", help="a local ACGS-like stack to run against")
    sb.add_argument("action", choices=["up", "down", "status", "break", "heal", "faults"])
    sb.add_argument("fault", nargs="?", help="FAULT[:NAME] for break and heal")
    sb.add_argument("--dir", type=Path, default=Path(os.environ.get("ACGS_SANDBOX_DIR", ".sandbox")))
    sb.add_argument("--port-offset", type=int, default=int(os.environ.get("ACGS_SANDBOX_PORT_OFFSET", 10000)),
                    help="sandbox port = production port + offset (default 10000)")
    disc = sub.add_parser("discover", help="write a commented profile from what runs on a host")
    from acgs_verify.discover import add_arguments as _discover_arguments

    _discover_arguments(disc)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        handler = {"run": cmd_run, "catalog": cmd_catalog, "sandbox": cmd_sandbox, "report": cmd_report,
                   "diff": cmd_diff, "discover": cmd_discover}[args.command]
        return handler(args)
    except (UsageError, GateError, WaiverError) as exc:
        print(f"acgs-verify: error: {exc}", file=sys.stderr)
        return EXIT_UNKNOWN
    except Exception as exc:
        from acgs_verify.profile import ProfileError
        from acgs_verify.sandbox import SandboxError

        if isinstance(exc, ProfileError | SandboxError) and not debug:
            print(f"acgs-verify: error: {exc}", file=sys.stderr)
            return EXIT_UNKNOWN
        if debug:
            raise
        print(f"acgs-verify: internal error: {type(exc).__name__}: {exc} (run with --debug for a traceback)",
              file=sys.stderr)
        return EXIT_UNKNOWN
    except KeyboardInterrupt:
        print("acgs-verify: interrupted", file=sys.stderr)
        return EXIT_UNKNOWN


def cmd_discover(args) -> int:
    from acgs_verify.discover import run

    return run(args)


# ----------------------------------------------------------------------------------------------- run


def _pytest_base_args(profile_arg: str, sets: list[str]) -> list[str]:
    args = [str(checks_dir()), "-c", str(PACKAGE_DIR / "pytest-run.ini"), "--rootdir", str(checks_dir().parent),
            "-p", "acgs_verify.plugin", "-p", "no:cacheprovider", "--profile", profile_arg]
    for s in sets:
        args += ["--set", s]
    return args


class _Grab:
    """Hands the run's pytest config back to the CLI (the plugin's result collector lives on it)."""

    config = None

    def pytest_configure(self, config):
        self.config = config


def _run_pytest(args: list[str]):
    import pytest

    # only the plugins a run needs: autoloading every installed pytest plugin costs ~0.3 s per run
    os.environ.setdefault("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    if any(a == "-n" or a.startswith(("-n", "--numprocesses")) for a in args):
        args = ["-p", "xdist.plugin", *args]
    grab = _Grab()
    code = pytest.main(args, plugins=[grab])
    return code, grab.config


# What a run does without, each measured in BENCHMARKS.md: checks judge with check.that, never `assert`, so
# rewriting their asserts (compiling the check modules anew on every run when bytecode caching is off) buys
# nothing; and pytest's unraisable-exception plugin runs gc.collect() over and over at exit (~0.1 s).
RUN_ONLY_ARGS = ("--assert=plain", "-p", "no:unraisableexception")
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
        if n < 0:
            raise UsageError(f"--workers {n}: must be 0 or more")
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
    from acgs_verify.catalog import GATES
    from acgs_verify.profile import load_profile

    if args.gate not in GATES:
        raise UsageError(f"unknown gate {args.gate!r}; gates: {', '.join(GATES)}")
    workers_for(args.workers, 0)  # a bad --workers stops here, before anything is written
    profile = load_profile(args.profile, args.set)  # bad input stops here, before pytest starts
    for text in profile.insecure_settings():
        print(f"acgs-verify: WARNING: {text}", file=sys.stderr)
    gate_plan = _plan_gate(args, profile)
    started = time.time()
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{profile.name}-{args.gate}-{secrets.token_hex(2)}"
    report_dir: Path = args.report_dir
    partial = report_dir / f".partial-{run_id}"
    partial.mkdir(parents=True, exist_ok=False)

    pytest_args = _pytest_base_args(args.profile, args.set) + [
        "--gate", args.gate, "--acgs-run-id", run_id,
        "--junitxml", str(partial / "junit.xml"),
        "-q", "--no-header", "--tb=short" if args.debug else "--tb=no", "-rN",
        *RUN_ONLY_ARGS,
        *_gate_pytest_args(args, gate_plan, partial),
        *_worker_args(args.workers, args.pytest_args, len(profile.hosts)),
        *args.pytest_args,
    ]
    with _sigterm_interrupts():
        code, config = _run_pytest(pytest_args)
    result = _result_of(config)
    if result is None or code in (3, 4):  # pytest could not start: its own message is already printed
        _discard(partial)
        print(f"ACGS UNKNOWN - could not run the checks (pytest exit {code}) | duration={time.time() - started:.1f}s")
        return EXIT_UNKNOWN
    if code == 5 or not result.checks:
        result.notes.append("no checks were collected: check the gate, -k and -m filters")
    if args.wait and result.checks and result.complete:
        with _sigterm_interrupts():
            _wait(args, result, pytest_args, partial)
    gate_lines = _finish_gate(result, gate_plan, profile, report_dir)
    result.duration = time.time() - started
    _write_reports(result, partial, report_dir, profile.secret_values(), gate_plan.writes_snapshot)
    run_dir = report_dir / run_id
    os.replace(partial, run_dir)
    if result.complete:  # an interrupted run keeps its report, but latest stays on the last complete run
        _point_latest(report_dir, run_id)
        from acgs_verify.report.history import append_history

        append_history(result, report_dir)
    for line in gate_lines:
        print(line)
    print(f"reports: {run_dir}/ (report.html, report.md, summary.json, junit.xml, metrics.prom, allure-results/)"
          + ("" if result.complete else " [incomplete]"))
    print(result.summary_line())
    return result.exit_code


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
    from acgs_verify.plugin import COLLECTOR_KEY  # after pytest has imported (and assertion-rewritten) it

    collector = config.stash.get(COLLECTOR_KEY, None) if config is not None else None
    return collector.result if collector is not None else None


# ---------------------------------------------------------------------- run: gates, waivers, reports


def _add_gate_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("--snapshot", type=Path, default=None, metavar="PATH",
                     help="post-maintenance/rollback: the snapshot to compare with (snapshot.json or its run "
                          "directory; default: the latest pre-maintenance snapshot of the same profile)")
    run.add_argument("--waivers", type=Path, default=None, metavar="FILE",
                     help="YAML file of waived failures: id, target (pattern), reason, owner, expires")
    run.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                     help="re-run failing checks until they pass or SECONDS are up (services restarting)")
    run.add_argument("--since", default=None, metavar="TIME",
                     help="log checks read only lines since TIME: ISO time, a duration (30m, 2h, 1d) or "
                          "'snapshot' (the pre-maintenance snapshot's start)")


def _plan_gate(args, profile):
    from acgs_verify import gates
    from acgs_verify.waivers import load_waivers

    if args.wait < 0:
        raise UsageError(f"--wait {args.wait:g}: must be 0 or more seconds")
    if args.waivers is not None:
        load_waivers(args.waivers)  # a bad file stops the run here: one line, exit 3
    return gates.plan(args.gate, profile.name, args.report_dir, args.snapshot, args.since)


def _gate_pytest_args(args, gate_plan, partial: Path) -> list[str]:
    extra: list[str] = []  # Allure results are written from the result model after the run (report/allure.py)
    if gate_plan.since:
        extra += ["--since", gate_plan.since]
    if args.waivers is not None:
        extra += ["--waivers", str(args.waivers)]
    return extra


def _wait(args, result, pytest_args: list[str], partial: Path) -> None:
    from acgs_verify import gates

    root = checks_dir().parent
    first_path = pytest_args.index(str(checks_dir()))

    def rerun(nodeids: list[str], attempt: int):
        junit = partial / f".junit-attempt-{attempt}.xml"
        again = list(pytest_args)
        again[first_path:first_path + 1] = [str(root / n) for n in nodeids]
        again[again.index("--junitxml") + 1] = str(junit)
        code, config = _run_pytest(again)
        res = _result_of(config)
        if res is None or code in (3, 4):
            return None
        if junit.is_file():
            gates.merge_junit(partial / "junit.xml", junit)
            junit.unlink()
        return res

    gates.wait_for_recovery(result, args.wait, rerun)


def _finish_gate(result, gate_plan, profile, report_dir: Path) -> list[str]:
    from acgs_verify import gates
    from acgs_verify.report.history import trend_of

    lines = gates.finish(result, gate_plan, profile)
    result.extra["trend"] = trend_of(result, report_dir)
    return lines


def _write_reports(result, run_dir: Path, report_dir: Path, secrets: list[str], snapshot: bool) -> None:
    from acgs_verify.report import mask_files, write_all

    # junit.xml was written by pytest's junitxml plugin from raw test reports
    mask_files([run_dir / "junit.xml"], secrets)
    write_all(result, run_dir)
    if snapshot:
        from acgs_verify.report.snapshot import SNAPSHOT_FILE, write_snapshot

        write_snapshot(result, run_dir / SNAPSHOT_FILE)


# ------------------------------------------------------------------------------------ report, diff


def _find_run(arg: str, report_dir: Path) -> Path:
    """A run id, a run directory, or a file in one (summary.json / snapshot.json)."""
    for candidate in (Path(arg), report_dir / arg):
        if candidate.exists():
            return candidate
    raise UsageError(f"no run {arg!r} (looked for {arg} and {report_dir / arg})")


def cmd_report(args) -> int:
    from acgs_verify.report import write_all
    from acgs_verify.report.summary import read_summary

    path = _find_run(args.run, args.report_dir)
    summary = path / "summary.json" if path.is_dir() else path
    try:
        result = read_summary(summary)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise UsageError(f"{summary}: not a readable summary.json ({' '.join(str(exc).split())[:120]})") from None
    written = write_all(result, summary.parent.resolve())
    print(f"reports regenerated in {summary.parent.resolve()}/: {', '.join(p.name for p in written)}")
    print(result.summary_line())
    return 0


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
                             f"({' '.join(str(exc).split())[:120]})") from None
    d = compare(snaps[0], snaps[1])
    for line in d.lines():
        print(line)
    failures = d.gate_failures()
    word = "CRITICAL" if failures else "OK"
    text = "; ".join(failures) if failures else "no regressions, nothing vanished"
    print(f"ACGS DIFF {word} - {d.before_run} -> {d.after_run}: {text} | regressions={len(d.regressions)} "
          f"fixed={len(d.fixed)} versions_changed={len(d.versions_changed)}")
    return 2 if failures else 0


def _discard(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _point_latest(report_dir: Path, run_id: str) -> None:
    """Repoint reports/latest in one rename, so it always names a complete run."""
    tmp = report_dir / f".latest-{run_id}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_id)
    os.replace(tmp, report_dir / "latest")


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
    load_profile(args.profile, resolve_secrets=False)
    os.environ.setdefault("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    counter = _CountItems()
    pytest_args = _pytest_base_args(args.profile, []) + ["--collect-only", "-q", "--acgs-no-secrets"]
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
        _print_status(sb.status())
        print(path)
        return 0
    if args.action == "down":
        stopped = sb.down()
        print(f"sandbox down ({len(stopped)} processes stopped)")
        return 0
    if args.action == "status":
        status = sb.status()
        _print_status(status)
        if not status.get("up"):
            return EXIT_UNKNOWN
        return 0 if all(p["state"] == "running" or p["state"].endswith("(fault)")
                        for c in status.get("components", {}).values() for p in c) else 1
    if args.action == "faults":
        for spec in sb.valid_faults():  # what `break` accepts, e.g. slow:auth, db-lock, backup-missing:config.tar.gz
            print(spec)
        return 0
    if args.action == "break":
        sb.break_fault(args.fault)
        print(f"fault on: {args.fault}")
        return 0
    sb.heal_fault(args.fault)
    print(f"fault healed: {args.fault}")
    return 0


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
