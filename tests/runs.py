"""The suite's one way to run acgs-verify: `run_cli(*argv)` -> Run (exit code, stdout, stderr, the summary it wrote).

    res = run_cli("run", "--profile", str(sandbox.profile_path), "--report-dir", str(reports), "--gate", "smoke")
    assert res.returncode == 0, res.output
    assert res.checks[("SVC-01", "auth@app-1")]["outcome"] == "passed"

In this process by default, through acgs_verify.cli.main (which runs pytest.main here too): a run costs what the
checks cost, not a Python start and the imports (about 2.5 s a run as a process, 0.5-1 s here).
`process=True` starts `python -m acgs_verify.cli` instead: for a test that proves something about the process
(the real entrypoint's exit code, signals, what reaches the file descriptors, another user, the environment it
inherits, a module patched before the CLI starts). `run_pytest(*argv)` is plain `pytest *argv` the same way
(`pytest checks --profile P`, the checks without the CLI): pytest.main here, `python -m pytest` with process=True.

Between in-process runs nothing carries over that a process would not have lost: os.environ, the working
directory, sys.path, sys.argv, sys.meta_path, the root logger's handlers and the SIGINT/SIGTERM handlers are put
back, and the checks' modules (any conftest, any test file of its own) imported by the run are dropped from
sys.modules, as pytester's runpytest_inprocess drops what a run imported. Library modules stay loaded (an extension
module such as pydantic_core cannot be imported twice); their per-run state lives in the run's session (reach, the
host pool), and tests/test_run_helper.py proves two runs in a row with different profiles give independent results.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    """What one `acgs-verify` invocation left: as a CompletedProcess (args, returncode, stdout, stderr), plus the
    summary.json it wrote (None when it wrote none, or more than one: a merge of runs into one directory)."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    report_dir: Path | None = None
    summary: dict[str, Any] | None = None
    written: list[Path] = field(default_factory=list)

    @property
    def output(self) -> str:
        """The tail of stdout and stderr, for an assertion's message."""
        return self.stdout[-3000:] + "\n--- stderr\n" + self.stderr[-3000:]

    @property
    def last_line(self) -> str:
        lines = self.stdout.strip().splitlines()
        return lines[-1] if lines else ""

    @property
    def checks(self) -> dict[tuple[str, str], dict[str, Any]]:
        """The summary's entries by (ID, target)."""
        assert self.summary is not None, "the run wrote no summary.json\n" + self.output
        return {(c["id"], c["target"]): c for c in self.summary["checks"]}

    def failed(self) -> set[tuple[str, str]]:
        """(ID, target) of every check that failed or could not measure."""
        return {key for key, c in self.checks.items() if c["outcome"] in ("failed", "error")}


class RunTimedOut(AssertionError):
    pass


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300,
            process: bool = False) -> Run:
    """`acgs-verify *args` with `env` added to the environment (a None value unsets that variable), in `cwd` (the
    checkout by default); fails the test when it takes longer than `timeout` seconds. Every summary.json it writes is
    checked against the shipped schema."""
    return _run("acgs_verify.cli", args, env, cwd, timeout, process)


def run_pytest(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300,
               process: bool = False) -> Run:
    """Plain `pytest *args` (`pytest checks --profile P ...`: the checks without the CLI), as run_cli runs
    acgs-verify: in this process through pytest.main by default, `python -m pytest` with `process=True`."""
    return _run("pytest", args, env, cwd, timeout, process)


def _run(module: str, args: tuple[str, ...], env: dict | None, cwd: Path | None, timeout: float,
         process: bool) -> Run:
    from tests.summary_schema import assert_written_summaries_valid, report_dir_of, summaries

    where = Path(cwd or REPO)
    report_dir = report_dir_of(args, where)
    before = summaries(report_dir) if report_dir else {}
    if process:
        res = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                             env=_with(dict(os.environ), env or {}), cwd=where, timeout=timeout)
        code, out, err = res.returncode, res.stdout, res.stderr
    else:
        code, out, err = _in_process(module, list(args), env or {}, where, timeout)
    assert_written_summaries_valid(report_dir, before)  # every summary.json a run writes meets the shipped schema
    written = [p for p, seen in summaries(report_dir).items() if before.get(p) != seen] if report_dir else []
    summary = json.loads(written[0].read_text()) if len(written) == 1 else None
    return Run(list(args), code, out, err, report_dir, summary, written)


def run_checks(profile, reports: Path, *extra: str, shared: bool = True, **kw) -> Run:
    """`acgs-verify run --profile PROFILE --report-dir REPORTS [SHARED_MACHINE] *extra`: the checks against a
    profile (a path, a name, or a sandbox), with the shared machine's load and latency limits lifted unless `shared`
    is False (tests/conftest.py says why)."""
    from tests.conftest import SHARED_MACHINE

    path = getattr(profile, "profile_path", profile)
    return run_cli("run", "--profile", str(path), "--report-dir", str(reports),
                   *(SHARED_MACHINE if shared else ()), *extra, **kw)


def _in_process(module: str, argv: list[str], env: dict, cwd: Path, timeout: float) -> tuple[int, str, str]:
    if module == "pytest":
        import pytest

        main = pytest.main
    else:
        from acgs_verify import cli

        main = cli.main
    out, err = io.StringIO(), io.StringIO()
    with _restored(), _deadline(timeout, argv) as expired:
        _with(os.environ, env)
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = int(main(argv))
            except SystemExit as exc:  # argparse's --help, --version and usage errors end the process
                code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    if expired():
        raise RunTimedOut(f"{module} {' '.join(argv)} took over {timeout} s\n{out.getvalue()[-3000:]}")
    return code, out.getvalue(), err.getvalue()


def _with(environ, changes: dict):
    for name, value in changes.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    return environ


@contextlib.contextmanager
def _restored():
    """What a process would have lost when it ended, put back (the module docstring lists it)."""
    environ, cwd, path, argv = dict(os.environ), os.getcwd(), list(sys.path), list(sys.argv)
    modules = set(sys.modules)
    # this session's assertion rewriter would rewrite every checks/test_*.py the run imports (its name is a test
    # file's), parsing each again for every run (~5 ms a module; no cached copy under PYTHONDONTWRITEBYTECODE);
    # the run itself asks for plain asserts (--assert=plain), as a process of its own has them
    finders = list(sys.meta_path)
    sys.meta_path[:] = [f for f in finders if type(f).__name__ != "AssertionRewritingHook"]
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    sigs = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(environ)  # PYTEST_CURRENT_TEST too: the outer pytest pops its own at teardown
        os.chdir(cwd)
        sys.path[:] = path
        sys.argv[:] = argv
        sys.meta_path[:] = finders
        for name in set(sys.modules) - modules:
            if _from_checks(sys.modules[name]):
                del sys.modules[name]
        root.handlers[:] = handlers
        root.setLevel(level)
        for s, handler in sigs.items():
            signal.signal(s, handler)


def _from_checks(module) -> bool:
    """A module the run collected (the checks, a conftest, a test file of its own), not a library it imported."""
    try:
        file = Path(getattr(module, "__file__", None) or "")
    except TypeError:
        return False
    return file.name == "conftest.py" or (REPO / "checks") in file.parents or \
        (REPO / "acgs_verify" / "_checks") in file.parents or \
        (file.name.startswith("test_") and REPO / "tests" not in file.parents and Path(sys.prefix) not in file.parents)


@contextlib.contextmanager
def _deadline(timeout: float, argv: list[str]):
    """Ctrl-C after `timeout` seconds: the run stops as an interrupted run does (reports kept), and the test fails."""
    fired = []

    def interrupt(signum, frame):
        fired.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        yield lambda: bool(fired)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
