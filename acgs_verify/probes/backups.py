"""Backups on disk: the dated directories, every archive read to its end, the dump's closing line.

>>> listing = list_backups("/var/backups/acgs")
>>> [b.name for b in listing.backups], listing.left_out
(['20250630_020000', '20250701_020000'], ['tmp-restore (not a date name (YYYYMMDD, ...))'])
>>> listing.link.describe(listing.latest)
'latest -> 20250701_020000 (the newest)'
>>> expected_files(listing.latest.path, None).describe()
"ACGS's backup script and rollback (manifest.json there, listing database.sql, nginx.production.conf)"
>>> listing.latest.age_hours()
7.5
>>> dump_status(listing.latest.path / "database.sql.gz", "plain", BackupReader(), None, timeout=600)
(True, '-- PostgreSQL database dump complete')

This module is the layout: which folders are backups, which is the newest, what each should hold. Whether an
archive reads to its end is probes/archive.py's (and archive_remote.py's for a file on another host).

The backups are read on the host the profile puts them on (`backups.host`, else role backup, then db), through
its backend: one `find` lists the root (probes/hostfiles.py), the manifest is a bounded read there. An archive on
a remote host is never copied here: it is verified there with the host's own gzip/tar/pg_restore, else streamed
through the connection in constant memory (archive_remote), and the finding says which:
>>> listing = list_backups("/var/backups/acgs", files=host_files(pool, db_1))
>>> archive_scan(listing, listing.latest.path / "database.sql.gz", BackupReader(), 600, pool, db_1).how
'verified on db-1 with gzip -d'
"""

from __future__ import annotations

import datetime as dt
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from acgs_verify.errors import ProbeError
from acgs_verify.probes.archive import (
    ArchiveScan,
    BackupReader,
    archive_kind,
    custom_dump_status,
    dump_tail_status,
    pg_tool,
    plain_dump_ends,
)
from acgs_verify.probes.bounded import NotReadable
from acgs_verify.probes.hostfiles import Files, Tree, local_files
from acgs_verify.redact import one_line
from acgs_verify.words import plural

if TYPE_CHECKING:
    from acgs_verify.hosts.pool import HostPool
    from acgs_verify.profile import Host

# ------------------------------------------------------------------------------------------ directories

# the dated folder names backup scripts write: the runbook's daily_backup.sh (YYYYMMDD), ACGS's own backup script
# (YYYYMMDD_HHMMSS), and the ISO forms other tools use
DATE_NAMES = (
    (re.compile(r"^\d{8}$"), "%Y%m%d"),
    (re.compile(r"^\d{8}_\d{6}$"), "%Y%m%d_%H%M%S"),
    (re.compile(r"^\d{4}-\d{2}-\d{2}$"), "%Y-%m-%d"),
    (re.compile(r"^\d{4}-\d{2}-\d{2}T\d{6}$"), "%Y-%m-%dT%H%M%S"),
)
NAME_FORMS = "YYYYMMDD, YYYYMMDD_HHMMSS, YYYY-MM-DD or YYYY-MM-DDTHHMMSS"
# a name this far ahead of the clock is wrong, not a time zone apart (zones span at most 26 h)
FUTURE_SLACK = dt.timedelta(hours=26)
LINK = "latest"
DAILY_SET = ["database.sql.gz", "config.tar.gz", "application.tar.gz", "logs.tar.gz"]  # daily_backup.sh
DUMP_NAMES = ("database.sql.gz", "database.sql")  # daily_backup.sh; ACGS's backup script and the rollback
MANIFEST = "manifest.json"
MANIFEST_MAX = 1 << 20  # a file list; a manifest larger than this is not one


@dataclass(frozen=True)
class Backup:
    """One dated backup folder."""

    name: str
    path: Path
    when: dt.datetime  # from its name (midnight for a date alone)
    mtime: float  # newest mtime among its files (when the backup was written)

    @property
    def date(self) -> dt.date:
        return self.when.date()

    def age_hours(self, now: float | None = None) -> float:
        return ((now or time.time()) - self.mtime) / 3600

    def age_days(self, now: float | None = None) -> float:
        """Age by the folder's date (the runbook's `find -mtime +30` counts days)."""
        today = dt.datetime.fromtimestamp(now or time.time()).date()
        return float((today - self.date).days)


@dataclass
class LatestLink:
    """The `latest` symlink (the runbook's rollback restores /var/backups/acgs/latest/database.sql): what it names.
    `backup` is the dated folder it resolves to inside the root; `problem` says why there is none."""

    target: str  # what readlink says
    resolved: Path
    backup: Backup | None = None
    problem: str | None = None

    def describe(self, newest: Backup | None) -> str:
        if self.problem:
            return self.problem
        assert self.backup is not None
        if newest is not None and self.backup.name == newest.name:
            return f"{LINK} -> {self.backup.name} (the newest)"
        return f"{LINK} -> {self.backup.name}, but the newest is {newest.name if newest else 'none'}"

    @property
    def agrees(self) -> bool:
        return self.problem is None


@dataclass
class Listing:
    root: Path
    backups: list[Backup]  # oldest first
    left_out: list[str] = field(default_factory=list)  # entries that are not a backup folder, each "NAME (why)"
    link: LatestLink | None = None
    tree: Tree | None = None  # what the listing was read from: names, kinds, sizes and mtimes to depth 2
    files: Files | None = None  # the host it was read on

    def entry(self, path: Path):
        """The tree's entry for a path under the root (None when there is none)."""
        if self.tree is None:
            return None
        try:
            return self.tree.entry(Path(path).relative_to(self.root).as_posix())
        except ValueError:
            return None

    @property
    def latest(self) -> Backup | None:
        return self.backups[-1] if self.backups else None

    @property
    def previous(self) -> Backup | None:
        return self.backups[-2] if len(self.backups) > 1 else None

    def considered(self) -> str:
        """'10 backup folders (20250622..20250701_020000)', and what was left out and why."""
        n = len(self.backups)
        text = plural(n, "backup folder")
        if n:
            text += f" ({self.backups[0].name}..{self.latest.name})" if n > 1 else f" ({self.latest.name})"
        if self.left_out:
            text += f"; left out: {', '.join(self.left_out)}"
        return text

    def nothing(self) -> str:
        """Why there is no backup folder, for a failure message."""
        if not self.left_out and self.link is None:
            return f"no backup folder under {self.root}: it is empty"
        return (f"no backup folder (named {NAME_FORMS}, not empty) under {self.root}; "
                f"left out: {', '.join(self.left_out) or 'nothing'}"
                + (f"; {self.link.describe(None)}" if self.link and self.link.problem else ""))


def list_backups(root: str | Path, now: float | None = None, files: Files | None = None) -> Listing:
    """The dated backup folders under root, oldest first, what else is there (each with why it was left out),
    and the `latest` symlink followed (inside the root only), from one listing of root on the host `files` reads
    (this machine when None).

    A folder is a backup when its name is a date in one of NAME_FORMS, not in the future, and it holds a file.
    ProbeError when root cannot be listed.
    """
    root = Path(root)
    files = files or local_files()
    try:
        tree = files.tree(str(root), 2)
    except ProbeError as exc:
        raise ProbeError(f"backup directory {exc}" if str(exc).startswith(str(root)) else
                         str(exc).replace("cannot list ", "cannot list backup directory ", 1)) from None
    limit = dt.datetime.fromtimestamp(now or time.time()) + FUTURE_SLACK
    backups, left_out, link_entry = [], [], None
    for e in tree.children():
        if e.kind == "l":
            if e.name == LINK:
                link_entry = e
            else:
                left_out.append(f"{e.name} (a symlink; only {LINK} is followed)")
            continue
        if e.kind != "d":
            if not e.name.startswith("."):
                left_out.append(f"{e.name} (a file, not a backup folder)")
            continue
        when, why = _when(e.name)
        if why:
            left_out.append(f"{e.name} ({why})")
        elif when > limit:
            left_out.append(f"{e.name} (in the future: the name or the clock is wrong)")
        elif (mtime := _newest_mtime(tree, e.name)) is None:
            left_out.append(f"{e.name} (empty)")
        else:
            backups.append(Backup(e.name, root / e.name, when, mtime))
    backups.sort(key=lambda b: (b.when, b.mtime))
    listing = Listing(root, backups, left_out, tree=tree, files=files)
    if link_entry is not None:
        listing.link = _follow(root, tree, link_entry, backups, left_out)
    return listing


def _when(name: str) -> tuple[dt.datetime | None, str | None]:
    for pattern, fmt in DATE_NAMES:
        if pattern.match(name):
            try:
                return dt.datetime.strptime(name, fmt), None
            except ValueError:  # 20251341
                return None, "not a valid date"
    return None, f"not a date name ({NAME_FORMS})"


def _follow(root: Path, tree: Tree, entry, backups: list[Backup], left_out: list[str]) -> LatestLink:
    """Where `latest` leads: a backup folder inside the root, or the reason it does not (from the listing: what
    the link says, its real path, and the kind of what it names)."""
    target = entry.link
    real_root = Path(tree.real_root)
    resolved = Path(tree.links.get(entry.name) or (target if target.startswith("/") else real_root / target))
    link = LatestLink(target, resolved)
    if resolved != real_root and real_root not in resolved.parents:
        link.problem = (f"{LINK} -> {target} points outside the backup root {root} (to {resolved}); not followed: "
                        "the rollback would restore a backup this run did not verify")
    elif entry.target_kind in ("N", "L") or not tree.links.get(entry.name):
        link.problem = f"{LINK} -> {target} names nothing (a dangling symlink): the rollback has no backup to restore"
    else:
        link.backup = next((b for b in backups if real_root / b.name == resolved), None)
        if link.backup is None:
            why = next((s for s in left_out if s.startswith(resolved.name + " (")), f"{resolved.name} (not a folder)")
            link.problem = f"{LINK} -> {target} names no backup folder: {why}"
    return link


def _newest_mtime(tree: Tree, folder: str) -> float | None:
    """The newest mtime among the files of a folder (not following links); None when it holds no file."""
    times = [e.mtime for e in tree.children(folder) if e.kind == "f" and not e.name.startswith(".")]
    return max(times) if times else None


def newest_backup(root: str | Path, files: Files | None = None) -> tuple[Listing, Backup]:
    """The listing and its newest backup folder; ProbeError (saying what was seen and left out) when none."""
    listing = list_backups(root, files=files)
    if listing.latest is None:
        raise ProbeError(listing.nothing())
    return listing, listing.latest


@dataclass
class Expected:
    """The files a backup folder should hold, which layout they come from and why (BK-02)."""

    files: list[str]
    dump: str  # the database dump among them (BK-04, BK-06, BK-07)
    layout: str
    why: str
    problem: str | None = None  # the manifest could not be read: what it should hold is unknown

    def describe(self) -> str:
        return f"{self.layout} ({self.why})"


def expected_files(folder: Path, configured: list[str] | None, dump_file: str | None = None,
                   earlier: list[Path] | None = None, listing: Listing | None = None) -> Expected:
    """What `folder` should hold: the profile's list when it gives one, else detected from what is there.

    >>> expected_files(Path(".../20250701_020000"), None).files
    ['database.sql', 'nginx.production.conf', 'manifest.json']

    Detected layouts: the runbook's daily_backup.sh (DAILY_SET) when one of its archives is there; ACGS's backup
    script and rollback (a `database.sql` or `database.sql.gz` dump, and what `manifest.json` lists) when a
    manifest or a plain `database.sql` is there; otherwise the daily set, so what is missing is named.
    """
    present = _names(folder, listing)
    dump = dump_file or next((n for n in DUMP_NAMES if n in present), None) or _earlier_dump(earlier or [], listing) \
        or (next((f for f in configured if f in DUMP_NAMES), None) if configured else None) or DUMP_NAMES[0]
    if configured:
        return Expected(list(configured), dump, "the profile's list", "backups.files")
    archives = [n for n in DAILY_SET[1:] if n in present]
    if archives:
        return Expected(list(DAILY_SET) if dump == DAILY_SET[0] else [dump, *DAILY_SET[1:]], dump,
                        "the runbook's daily backup (daily_backup.sh)", f"{', '.join(archives)} there")
    if MANIFEST in present or "database.sql" in present:
        files, problem, why = [dump], None, "database.sql there, no manifest.json"
        if MANIFEST in present:
            listed, problem = _manifest_files(folder / MANIFEST, listing.files if listing else None)
            files += [f for f in listed if f not in files and f != MANIFEST] + [MANIFEST]
            why = f"{MANIFEST} there, listing {', '.join(listed) or 'no file'}"
        return Expected(files, dump, "ACGS's backup script and rollback", why, problem)
    return Expected(list(DAILY_SET) if dump == DAILY_SET[0] else [dump, *DAILY_SET[1:]], dump,
                    "the runbook's daily backup (daily_backup.sh)",
                    "no file of either layout there, so the runbook's set is expected")


def _names(folder: Path, listing: Listing | None = None) -> set[str]:
    """The names in a backup folder: from the listing when there is one, else listed here."""
    if listing is not None and listing.tree is not None:
        try:
            relative = Path(folder).relative_to(listing.root).as_posix()
        except ValueError:
            relative = None
        if relative is not None:
            return {e.name for e in listing.tree.children(relative)}
    try:  # a folder outside the listing's root: listed on the same host, never here instead
        files = listing.files if listing is not None and listing.files is not None else local_files()
        return {e.name for e in files.tree(str(folder), 1).children()}
    except ProbeError:
        return set()


def _earlier_dump(earlier: list[Path], listing: Listing | None = None) -> str | None:
    """The dump name the earlier backups use (newest first), so a missing dump is named as the others have it."""
    for d in earlier:
        names = _names(d, listing)
        found = next((n for n in DUMP_NAMES if n in names), None)
        if found:
            return found
    return None


def _manifest_files(path: Path, files: Files | None = None) -> tuple[list[str], str | None]:
    """The file names a manifest.json lists ({"files": [name or {"name"|"file"|"path": name}, ...]} or
    {"files": {name: ...}}), and a problem when it cannot be read (on the host `files` reads)."""
    try:  # a FIFO would block, /dev/zero (through a link) never end: regular files only, capped
        data = json.loads((files or local_files()).read(str(path), MANIFEST_MAX).decode("utf-8"))
    except NotReadable as exc:
        return [], f"{MANIFEST} unreadable ({exc.reason})"
    except (ValueError, UnicodeDecodeError) as exc:
        return [], f"{MANIFEST} is not valid JSON ({one_line(exc)})"
    files = data.get("files") if isinstance(data, dict) else None
    if isinstance(files, dict):
        files = list(files)
    names = []
    for f in files if isinstance(files, list) else []:
        name = f if isinstance(f, str) else next((f[k] for k in ("name", "file", "path")
                                                  if isinstance(f, dict) and isinstance(f.get(k), str)), None)
        if name and "/" not in name.strip("/") and name not in (".", ".."):
            names.append(name.strip("/"))
    return names, None


def size_change(listing: Listing, name: str) -> tuple[Backup, int, Backup | None, int]:
    """(latest, size of its `name`, the newest earlier backup with a non-empty `name`, that size) (BK-06).
    A missing file counts as 0 bytes."""
    def size(b: Backup) -> int:
        e = listing.entry(b.path / name)
        return e.size if e is not None and e.kind == "f" else 0

    latest = listing.backups[-1]
    earlier = next(((b, size(b)) for b in reversed(listing.backups[:-1]) if size(b) > 0), (None, 0))
    return latest, size(latest), earlier[0], earlier[1]


def file_state(path: Path, listing: Listing | None = None) -> str | None:
    """None when path is a non-empty regular file, else what is wrong ('missing', 'empty', ...) (BK-02), from
    the listing of its backup root (or, without one, a listing of its folder here)."""
    if listing is None:
        try:
            listing = Listing(Path(path).parent, [], tree=local_files().tree(str(Path(path).parent), 1))
        except ProbeError as exc:
            return "missing" if "does not exist" in str(exc) else f"unreadable ({exc})"
    e = listing.entry(path)
    if e is None:
        return "missing"
    kind = e.target_kind if e.kind == "l" else e.kind
    if kind == "N":
        return "missing"
    if kind != "f":
        return "not a regular file"
    if e.kind == "l":  # a backup script writes files: a link here is followed by no check
        return "a symlink, not followed"
    if e.size == 0:
        return "empty (0 bytes)"
    if not e.readable:
        return "not readable"
    return None


def remote(listing: Listing | None) -> bool:
    """Whether the listing was read on another host: its archives are then read there (archive_remote), never
    copied here."""
    return listing is not None and listing.files is not None and not listing.files.is_local


def archive_scan(listing: Listing, path: Path, reader: BackupReader, timeout: float,
                 pool: HostPool | None = None, host: Host | None = None) -> ArchiveScan:
    """archive.scan_archive of `path` on the host `listing` was read on (BK-03): here, by the reader; on another
    host, with its own gzip/tar when it has them, else streamed through the connection (scan.how says which).
    Once per file identity per run, so BK-03 and BK-04 read a large dump once."""
    if not remote(listing):
        return reader.scan(Path(path), timeout)
    from acgs_verify.probes.archive_remote import scan_on_host

    if pool is None or host is None:
        raise ProbeError(f"{path} is on {listing.files.where}: reading it there needs its host connection")
    e = listing.entry(path)
    key = ("remote", host.name, str(path), e.size if e else -1, e.mtime if e else 0.0, timeout)
    return reader.once(key, lambda: scan_on_host(pool, host, str(path), timeout, keep_ends=True))


@dataclass
class DrillSource:
    """What the restore drill reads (BK-07): `path` on this machine (read None), or a plain dump on another host
    streamed through its connection (`read(feed)`, restore.restore_drill's read=); how() names the path taken."""

    path: Path
    read: Callable[[Callable[[bytes], None]], ArchiveScan] | None = None
    where: str = ""
    scan: ArchiveScan | None = None

    def how(self) -> str:
        if self.read is None:
            return ""
        from acgs_verify.probes.archive_remote import shown_size

        got = self.scan.size if self.scan is not None else 0
        return f" (streamed {shown_size(got)} from {self.where}, not copied)"


def remote_dump(listing: Listing, path: Path, dump_format: str, timeout: float, pool: HostPool | None = None,
                host: Host | None = None) -> DrillSource:
    """The dump the restore drill reads: `path` itself here; a plain dump (gzipped or not) on another host,
    streamed from it in constant memory as psql takes it. ProbeError for a custom-format dump on another host:
    pg_restore seeks in its file, and a dump is not copied to this machine."""
    if not remote(listing):
        return DrillSource(Path(path))
    where = host.name if host is not None else listing.files.where
    if dump_format == "custom":
        raise ProbeError(f"{path} is on {where}: a custom-format dump is restored from this machine's disk only "
                         "(pg_restore seeks in it), and a backup is not copied here; run the drill on "
                         f"{where} (acgs-verify there, backups.host local) or keep a plain dump")
    if pool is None or host is None:
        raise ProbeError(f"{path} is on {where}: reading it there needs its host connection")
    from acgs_verify.probes.archive_remote import stream_scan

    source = DrillSource(PurePosixPath(path), where=where)

    def read(feed):
        source.scan = stream_scan(pool, host, str(path), timeout, keep_ends=False, feed=feed)
        return source.scan

    source.read = read
    return source


def dump_status(path: Path, dump_format: str, reader: BackupReader, bindir: str | None,
                timeout: float, listing: Listing | None = None, pool: HostPool | None = None,
                host: Host | None = None) -> tuple[bool, str]:
    """(complete, what was found) for the dump at path: pg_dump -Fc, gzipped SQL (read to its end), or plain
    SQL (its tail read) (BK-04); on the host `listing` was read on (another host's dump is read there:
    archive_remote.dump_status_on_host, the finding naming how)."""
    state = file_state(path, listing)
    if state:
        return False, f"{path.name} {state}"
    if remote(listing):
        from acgs_verify.probes.archive_remote import dump_status_on_host

        scan = None if dump_format == "custom" else archive_scan(listing, path, reader, timeout, pool, host)
        return dump_status_on_host(pool, host, str(path), dump_format, timeout, bindir, scan=scan)
    if dump_format == "custom":
        return custom_dump_status(path, pg_tool("pg_restore", bindir), timeout)
    if archive_kind(path) == "file":
        return dump_tail_status(plain_dump_ends(path))
    return dump_tail_status(reader.scan(path, timeout))
