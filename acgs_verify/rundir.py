"""A run's directory under --report-dir, for `acgs-verify run` and plain `pytest checks --report-dir` alike.

>>> report_dir = usable_report_dir(Path("reports"))      # bad: ReportDirError, one line naming --report-dir
>>> partial = start(report_dir, run_id)                  # REPORT_DIR/.partial-<run id>/, owned by this process
>>> run_dir = finish(result, partial, report_dir, secrets, snapshot=False)   # REPORT_DIR/<run id>/, latest

A run is written into `.partial-<run id>` and renamed when complete, so readers never see half a run. A run that
dies before that (SIGKILL, power) leaves its `.partial-*`; the next run removes those whose owner is gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import time
from pathlib import Path

from acgs_verify.redact import one_line

LATEST = "latest"  # REPORT_DIR/latest: a symlink to the last complete run, which the suite keeps
OWNER_FILE = ".owner"  # "pid@host" of the process writing a .partial-* directory
STARTING = ".starting-"  # REPORT_DIR/.starting-<run id>: a .partial-* being made, renamed at once
STALE_STARTING_SECONDS = 60
STALE_UNOWNED_SECONDS = 24 * 3600  # a .partial-* without an owner (an older version wrote it) is stale after this
PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")
FILE_TMPFS = (Path("/dev/shm"),)  # under /dev but a tmpfs made to hold files (CI scratch, RAM-backed report dirs)


class ReportDirError(Exception):
    """--report-dir cannot be used, or the reports could not be written; str() is the one line a user sees."""


def usable_report_dir(report_dir: Path, option: str = "--report-dir", create: bool = True) -> Path:
    """Create report_dir if needed and prove it takes a directory; else ReportDirError naming the option.

    create=False checks the same without creating anything (the nearest existing parent must be writable)."""
    shown = f"{option} {report_dir}"
    resolved = Path(report_dir).expanduser().absolute()
    normal = Path(os.path.normpath(resolved))
    under = [p for p in map(Path, PSEUDO_FILESYSTEMS) if normal == p or p in normal.parents]
    if under and not any(normal == t or t in normal.parents for t in FILE_TMPFS):
        raise ReportDirError(f"{shown}: is under {under[0]}, a kernel filesystem, not a place for reports")
    if resolved.exists() and not resolved.is_dir():
        raise ReportDirError(f"{shown}: not a directory")
    if not create:
        existing = next(p for p in (resolved, *resolved.parents) if p.exists())
        if not existing.is_dir():
            raise ReportDirError(f"{shown}: {existing} is not a directory")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ReportDirError(f"{shown}: {existing} is not writable by this user (or on a read-only filesystem)")
        return Path(report_dir)
    try:
        resolved.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportDirError(f"{shown}: cannot create it: {exc.strerror or exc}") from None
    if not os.access(resolved, os.W_OK | os.X_OK):
        raise ReportDirError(f"{shown}: not writable by this user")
    return Path(report_dir)


def new_run_id(profile_name: str, gate: str) -> str:
    """new_run_id("sandbox", "smoke") -> '20250601T020000Z-sandbox-smoke-1a2b' (UTC start, 4 random hex digits)."""
    import secrets
    from datetime import UTC, datetime

    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{profile_name}-{gate}-{secrets.token_hex(2)}"


def partial_of(report_dir: Path, run_id: str) -> Path:
    return report_dir / f".partial-{run_id}"


def start(report_dir: Path, run_id: str) -> Path:
    """Make REPORT_DIR/.partial-<run id>, owned by this process (after removing the partial runs of dead ones)."""
    clean_stale(report_dir)
    partial = partial_of(report_dir, run_id)
    staging = report_dir / f"{STARTING}{run_id}"
    try:
        # the partial appears with its owner already inside: a run killed between mkdir and the owner's write (seen
        # under load) would otherwise leave a partial that looks unowned, kept for STALE_UNOWNED_SECONDS
        staging.mkdir(parents=True, exist_ok=False)
        (staging / OWNER_FILE).write_text(f"{os.getpid()}@{socket.gethostname()}\n")
        os.rename(staging, partial)
    except OSError as exc:
        raise ReportDirError(f"--report-dir {report_dir}: cannot write a run directory: {exc.strerror or exc}") \
            from None
    return partial


def clean_stale(report_dir: Path) -> list[Path]:
    """Remove the .partial-* directories whose writer is gone (killed before it could clean up)."""
    removed = []
    host = socket.gethostname()
    for staging in Path(report_dir).glob(f"{STARTING}*"):
        # a run holds its staging directory for the moment between mkdir and rename: an old one's run was killed
        with contextlib.suppress(OSError):
            if staging.is_dir() and not staging.is_symlink() and \
                    time.time() - staging.stat().st_mtime > STALE_STARTING_SECONDS:
                shutil.rmtree(staging, ignore_errors=True)
                removed.append(staging)
    for partial in Path(report_dir).glob(".partial-*"):
        if not partial.is_dir() or partial.is_symlink():
            continue
        try:
            pid, _, owner_host = (partial / OWNER_FILE).read_text().strip().partition("@")
            alive = owner_host != host or _alive(int(pid))
        except (OSError, ValueError):
            try:
                alive = time.time() - partial.stat().st_mtime < STALE_UNOWNED_SECONDS
            except OSError:
                continue
        if not alive:
            shutil.rmtree(partial, ignore_errors=True)
            removed.append(partial)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def discard(partial: Path) -> None:
    shutil.rmtree(partial, ignore_errors=True)


def finish(result, partial: Path, report_dir: Path, secrets: list[str], snapshot: bool) -> Path:
    """Write every report into `partial`, rename it to REPORT_DIR/<run id>, point `latest` at it when the run is
    complete and append to history. Returns the run directory.

    If a writer fails, summary.json is still written (it is the run's record), the directory still renamed, and
    ReportDirError says what failed and where summary.json is.
    """
    from acgs_verify.report import mask_files, write_all

    run_dir = report_dir / result.run_id
    failure: str | None = None
    appends = result.complete and "shard" not in result.extra  # a shard is part of a run: its merge writes the line
    if appends:
        from acgs_verify.report.history import unsafe

        problem = unsafe(report_dir)  # said in the reports too, which are written before the line would be
        if problem and problem not in result.notes:
            result.notes.append(problem)
    try:
        mask_files([partial / "junit.xml"], secrets)  # written by pytest's junitxml plugin from raw reports
        write_all(result, partial)
        if snapshot:
            from acgs_verify.report.snapshot import SNAPSHOT_FILE, write_snapshot

            write_snapshot(result, partial / SNAPSHOT_FILE)
    except Exception as exc:  # a bug in one writer must not lose the run's verdict
        failure = f"{type(exc).__name__}: {one_line(exc)}"
        _save_summary(result, partial)
    (partial / OWNER_FILE).unlink(missing_ok=True)
    try:
        os.replace(partial, run_dir)
    except OSError as exc:
        raise ReportDirError(f"writing the reports failed ({failure or exc.strerror}); summary.json is in "
                             f"{partial}/") from None
    if failure is not None:
        raise ReportDirError(f"writing the reports failed ({failure}); summary.json is in {run_dir}/")
    if result.complete:  # an interrupted run keeps its report, but latest stays on the last complete run
        from acgs_verify.report.history import append_history

        try:
            _point_latest(report_dir, result.run_id)
        finally:  # a `latest` that cannot be repointed still leaves the run in the history
            if appends:
                append_history(result, report_dir)
    return run_dir


def _save_summary(result, partial: Path) -> None:
    import json

    from acgs_verify.report import atomic_write

    path = partial / "summary.json"
    try:
        from acgs_verify.report.summary import write_summary

        write_summary(result, path)
    except Exception:  # the summary writer itself failed: the plain dict, still masked by the collector
        atomic_write(path, json.dumps(result.as_dict(), indent=2, default=str) + "\n")


def _point_latest(report_dir: Path, run_id: str) -> None:
    """Repoint reports/latest in one rename, so it always names a complete run. The rename replaces the link
    itself, wherever it pointed (the suite keeps `latest`); a directory named latest is not ours to replace."""
    tmp = report_dir / f".latest-{run_id}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run_id)
    try:
        os.replace(tmp, report_dir / LATEST)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ReportDirError(f"{report_dir / LATEST}: not repointed to {run_id} ({exc.strerror}; it should be the "
                             "symlink this suite keeps: move it away)") from None


def run_dir_to_write(report_dir: Path, named: Path) -> Path:
    """The directory in which to (re)write a run's reports, `named` as REPORT_DIR/latest, REPORT_DIR/<run id>
    or any other path: resolved, and where it is named inside REPORT_DIR, shown to be a real run directory there.
    `latest` may be a symlink (the suite keeps it), to a run in REPORT_DIR only; a run directory may not be one.
    ReportDirError otherwise, one line: reports are never written through a link out of the report directory.

    >>> run_dir_to_write(Path("reports"), Path("reports/latest"))
    PosixPath('/srv/acgs/reports/20250601T020000Z-production-compliance-1a2b')
    """
    base, named = Path(os.path.abspath(report_dir)), Path(os.path.abspath(named))
    if named.parent != base:  # a directory the user named by its own path
        return named.resolve()
    if named.is_symlink() and named.name != LATEST:
        raise ReportDirError(f"{named}: a symlink (to {os.readlink(named)}): a run directory is never one, "
                             "and reports are not written through it")
    real = named.resolve()
    if real.parent != base.resolve() or not real.is_dir():
        raise ReportDirError(f"{named}: points to {real}, not to a run directory in {report_dir}: reports are not "
                             "written there")
    return real
