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
>>> scan = scan_archive(listing.latest.path / "logs.tar.gz")
>>> scan.problem
'truncated: the gzip stream stops at byte 18432 of 18432 (uncompressed 40960), inside tar member var/log/a.log'
>>> dump_tail_status(scan_archive(listing.latest.path / "database.sql.gz"))
(True, '-- PostgreSQL database dump complete')

Archives are read streaming in constant memory (zlib with large reads and a bounded output size; a tar walker
that keeps one 512-byte header at a time), so a 1 GiB dump costs its read time and a few MB.

The backups are read on the host the profile puts them on (`backups.host`, else role backup, then db), through
its backend: one `find` lists the root (probes/hostfiles.py), the manifest is a bounded read there, and an archive
on a remote host is copied here, up to REMOTE_COPY_MAX, to be read as a local one is (`BackupReader.local`):
>>> listing = list_backups("/var/backups/acgs", files=host_files(pool, db_1))
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from acgs_verify import pgbin
from acgs_verify.errors import ProbeError
from acgs_verify.probes.bounded import NotReadable, open_regular, size_text
from acgs_verify.probes.hostfiles import Files, Tree, local_files
from acgs_verify.redact import last_line, one_line
from acgs_verify.words import plural

NO_MESSAGE = "(no message)"  # what a tool that failed without a word to stderr is quoted as
READ_CHUNK = 1 << 21  # compressed bytes per read: large reads keep Python's share of the time small
OUT_MAX = 1 << 23  # uncompressed bytes per zlib call: the bound on memory, whatever the ratio (zip bombs)
TAIL_BYTES = 1 << 16  # the end of a dump kept for BK-04
HEAD_BYTES = 1 << 12
LOCATE_STEP = 256  # a corrupt stream's offset is located to within this many bytes
DUMP_COMPLETE = "-- PostgreSQL database dump complete"
BLOCK = 512


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
# an archive on a remote host copied here to be read (BK-03, BK-04, BK-07); larger ones are remote integrity's
# (run where the file is, or streamed: probes/archive.py), and until then could not be measured, saying so
REMOTE_COPY_MAX = 64 << 20


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


# ---------------------------------------------------------------------------------------------- reading


@dataclass
class ArchiveScan:
    """What reading one file to its end found (BK-03, BK-04)."""

    path: Path
    kind: str  # 'tar.gz', 'gzip', 'tar' or 'file'
    size: int  # bytes on disk read
    uncompressed: int = 0
    members: int = 0  # tar members (directories and links included)
    gzip_members: int = 0
    problem: str | None = None  # None: intact
    head: bytes = b""  # first bytes of the content (plain dumps)
    tail: bytes = b""  # last bytes of the content (plain dumps)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        if self.problem:
            return f"{self.path.name}: {self.problem}"
        what = f"{self.members} tar members, " if self.kind in ("tar.gz", "tar") else ""
        return f"{self.path.name}: {what}{_mb(self.size)} read to the end ({_mb(self.uncompressed)} uncompressed)"


class _Broken(Exception):
    pass


def archive_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        return "tar.gz"
    if name.endswith(".gz"):
        return "gzip"
    if name.endswith(".tar"):
        return "tar"
    return "file"


class _Budgeted:
    """A backup's file as scan_archive reads it: a regular file only (a FIFO would block the open, a link to
    /dev/zero never end), opened without blocking; read no further than the size it had when opened (a file
    written without end is read to that point) and for no longer than `seconds` (a gzip that inflates 1000-fold).
    """

    def __init__(self, path: Path, seconds: float | None):
        fd, st = open_regular(path)
        self.file = os.fdopen(fd, "rb", buffering=0)
        self.path, self.total, self.left, self.seconds = path, st.st_size, st.st_size, seconds
        self.deadline = None if seconds is None else time.monotonic() + seconds

    def __enter__(self) -> _Budgeted:
        return self

    def __exit__(self, *exc) -> None:
        self.file.close()

    def fileno(self) -> int:
        return self.file.fileno()

    def in_time(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise _Broken(f"not read to its end within {self.seconds:g} s (stopped at byte "
                          f"{self.total - self.left} of {self.total})")

    def read(self, n: int) -> bytes:
        self.in_time()
        chunk = self.file.read(min(n, self.left)) if self.left > 0 else b""
        self.left -= len(chunk)
        return chunk


def scan_archive(path: str | Path, keep_ends: bool = False, feed=None, timeout: float | None = None) -> ArchiveScan:
    """Read `path` to its end in constant memory: the gzip stream(s), the tar members inside.

    A truncated or corrupt stream sets `.problem` to one line naming the byte offset (in the file, and in the
    uncompressed content). keep_ends keeps the first and last bytes of the content (for dump checks); `feed`,
    when given, receives the content as it is read (the restore drill feeds psql with it). Only a regular file is
    read, up to the size it had when opened and, with `timeout`, for at most that many seconds (then `.problem`
    says where it stopped). ProbeError when the file cannot be opened or is not a regular file.
    """
    path = Path(path)
    kind = archive_kind(path)
    scan = ArchiveScan(path, kind, 0)
    walker = _TarWalker() if kind in ("tar.gz", "tar") else None
    ends = _Ends() if keep_ends else None
    extra = feed
    f: _Budgeted | None = None

    def sink(out) -> None:
        if f is not None:  # inflating is where the time goes: a small file may hold a bomb
            f.in_time()
        scan.uncompressed += len(out)
        if extra is not None and out:
            extra(out)
        if walker is not None:
            walker.feed(out)
        if ends is not None:
            ends.add(out)

    started = time.monotonic()
    try:
        with _Budgeted(path, timeout) as f:
            if kind in ("tar.gz", "gzip"):
                _inflate(f, sink, scan)
            else:
                while chunk := f.read(READ_CHUNK):
                    scan.size += len(chunk)
                    sink(chunk)
        if walker is not None:
            walker.finish()
    except _Broken as exc:
        scan.problem = str(exc)
        if walker is not None and walker.current and "member" not in scan.problem:
            scan.problem += f", inside tar member {walker.current}"
    except OSError as exc:
        if scan.size == 0:
            raise ProbeError(f"cannot read {path}: {exc.strerror}") from None
        scan.problem = f"read error at byte {scan.size}: {exc.strerror}"
    scan.seconds = time.monotonic() - started
    if walker is not None:
        scan.members = walker.members
        if scan.ok and not walker.members:  # an archive of nothing is no backup of anything
            scan.problem = "tar: no members (an empty archive: the folder it was made from was empty or unreadable)"
    if ends is not None:
        scan.head, scan.tail = bytes(ends.head), ends.tail
    return scan


def _inflate(f, sink, scan: ArchiveScan) -> None:
    """Every gzip member of f through zlib into sink; _Broken names where the stream stops or breaks."""
    total = os.fstat(f.fileno()).st_size
    d = zlib.decompressobj(31)
    scan.gzip_members = 1
    seg_start = 0  # file offset of `seg`, the bytes being fed to d
    need_member = False  # a member just ended: what follows must be another member (or nothing)
    while True:
        seg = f.read(READ_CHUNK)
        if not seg:
            break
        scan.size += len(seg)
        while seg:
            if need_member:
                d = zlib.decompressobj(31)
                scan.gzip_members += 1
                need_member = False
            snap, snap_at = d.copy(), seg_start
            try:
                data = seg
                while data:
                    sink(d.decompress(data, OUT_MAX))
                    if d.eof:
                        break
                    data = d.unconsumed_tail
            except zlib.error as exc:
                where = _locate(snap, seg, snap_at, sink)
                what = "not a gzip member" if scan.gzip_members > 1 and where == snap_at else "corrupt"
                raise _Broken(f"{what} at byte {where} of {total} ({_zmsg(exc)}; uncompressed so far "
                              f"{scan.uncompressed})") from None
            if d.eof:
                rest = d.unused_data
                seg_start += len(seg) - len(rest)
                seg = rest
                need_member = True
                if not seg:
                    break
            else:
                seg_start += len(seg)
                seg = b""
    if need_member:
        return
    if scan.size == 0:
        raise _Broken("empty file: no gzip stream at all")
    # a stream cut short: zlib waited for more input that never came
    sink(d.flush())
    raise _Broken(f"truncated: the gzip stream stops at byte {scan.size} (the end of the file) before its "
                  f"end-of-stream marker (uncompressed {scan.uncompressed})")


def _locate(snap, seg: bytes, start: int, sink) -> int:
    """The file offset (within LOCATE_STEP) where `snap` fails on `seg`, replaying it in small steps; what
    decompresses before that still goes to sink (so a tar member being read is named)."""
    for i in range(0, len(seg), LOCATE_STEP):
        try:
            data = seg[i:i + LOCATE_STEP]
            while data:
                sink(snap.decompress(data, OUT_MAX))
                if snap.eof:
                    return start + i  # the member ended here; what broke was what came after it
                data = snap.unconsumed_tail
        except zlib.error:
            return start + i
    return start


def _zmsg(exc: zlib.error) -> str:
    text = str(exc)
    return text.split(": ", 1)[-1] if "while decompressing" in text else text


class _Ends:
    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = b""

    def add(self, out: bytes) -> None:
        if len(self.head) < HEAD_BYTES:
            self.head += out[: HEAD_BYTES - len(self.head)]
        self.tail = out[-TAIL_BYTES:] if len(out) >= TAIL_BYTES else (self.tail + out)[-TAIL_BYTES:]


class _TarWalker:
    """Walks a tar stream fed in pieces: checks every header's checksum, skips member data, wants the end
    marker. Keeps one header (and at most one 64 KB long-name record) in memory."""

    def __init__(self) -> None:
        self.offset = 0
        self.skip = 0
        self.header = bytearray()
        self.members = 0
        self.current: str | None = None
        self.ended = False
        self.zeros = 0
        self.capture: bytearray | None = None
        self.capture_type = b""
        self.long_name: str | None = None

    def feed(self, data: bytes) -> None:
        mv, i, n = memoryview(data), 0, len(data)
        while i < n:
            if self.ended:
                self.offset += n - i  # padding to the record size after the end marker
                return
            if self.skip:
                take = min(self.skip, n - i)
                if self.capture is not None and len(self.capture) < 65536:
                    self.capture += mv[i:i + take]
                self.skip -= take
                i += take
                self.offset += take
                if not self.skip and self.capture is not None:
                    self._captured()
                continue
            take = min(BLOCK - len(self.header), n - i)
            self.header += mv[i:i + take]
            i += take
            self.offset += take
            if len(self.header) == BLOCK:
                block, self.header = bytes(self.header), bytearray()
                self._block(block)

    def _block(self, h: bytes) -> None:
        at = self.offset - BLOCK
        if h.count(0) == BLOCK:
            self.zeros += 1
            self.ended = self.zeros >= 2
            return
        if self.zeros:
            raise _Broken(f"tar: a zero block inside the archive at uncompressed offset {at - BLOCK}")
        stored = h[148:156].replace(b"\0", b" ").strip()
        try:
            want = int(stored or b"0", 8)
        except ValueError:
            want = -1
        got = sum(h[:148]) + 8 * 32 + sum(h[156:])
        if want != got:
            after = f" (after member {self.current})" if self.current else ""
            raise _Broken(f"tar: bad header checksum at uncompressed offset {at}{after}")
        size = _tar_size(h[124:136])
        kind = h[156:157]
        if kind in (b"L", b"K", b"x", b"g"):  # GNU long names and pax headers: data is the next name
            self.capture, self.capture_type = bytearray(), kind
        else:
            name = self.long_name or _tar_name(h)
            self.long_name = None
            self.current = name
            self.members += 1
            if kind in (b"1", b"2", b"3", b"4", b"5", b"6"):
                size = 0  # links, devices, directories, FIFOs carry no data
        self.skip = -(-size // BLOCK) * BLOCK
        if not self.skip and self.capture is not None:
            self._captured()

    def _captured(self) -> None:
        data, kind = bytes(self.capture or b""), self.capture_type
        self.capture = None
        if kind == b"L":
            self.long_name = data.split(b"\0", 1)[0].decode("utf-8", "replace")
        elif kind == b"x":
            m = re.search(rb"\d+ path=([^\n]*)\n", data)
            if m:
                self.long_name = m.group(1).decode("utf-8", "replace")

    def finish(self) -> None:
        if self.skip:
            raise _Broken(f"tar: the archive ends at uncompressed offset {self.offset}, {self.skip} bytes short "
                          f"of the end of member {self.current}")
        if self.header:
            raise _Broken(f"tar: the archive ends inside a header at uncompressed offset {self.offset}")
        if not self.ended:
            after = f" after member {self.current}" if self.current else ""
            raise _Broken(f"tar: no end-of-archive marker; the archive stops at uncompressed offset "
                          f"{self.offset}{after}")


def _tar_size(field: bytes) -> int:
    if field[0] & 0x80:  # GNU base-256 for members over 8 GiB
        return int.from_bytes(field[1:], "big")
    text = field.replace(b"\0", b" ").strip()
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise _Broken(f"tar: header with an unreadable size field {text[:12]!r}") from None


def _tar_name(h: bytes) -> str:
    name = h[0:100].split(b"\0", 1)[0]
    if h[257:262] == b"ustar":
        prefix = h[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "replace")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} bytes"


# -------------------------------------------------------------------------------------------------- dumps


def dump_tail_status(scan: ArchiveScan) -> tuple[bool, str]:
    """(complete, what was found) for a plain pg_dump read with keep_ends: pg_dump's closing comment must be
    among the last lines, and the content must start as a pg_dump does (BK-04)."""
    if not scan.head.lstrip().startswith(b"--") or b"PostgreSQL database dump" not in scan.head[:400]:
        first = scan.head[:60].decode("utf-8", "replace").splitlines()[:1]
        return False, f"does not start like a pg_dump plain dump (first line {first[0] if first else ''!r})"
    lines = [ln.strip() for ln in scan.tail.decode("utf-8", "replace").splitlines() if ln.strip()]
    # pg_dump ends "--\n-- PostgreSQL database dump complete\n--\n" (newer ones add a \unrestrict line): the
    # closing line must be in the comment block after the last statement
    trailing = []
    for ln in reversed(lines):
        if not (ln.startswith("--") or ln.startswith("\\unrestrict")):
            break
        trailing.append(ln)
    if DUMP_COMPLETE in trailing:
        return True, DUMP_COMPLETE
    last = lines[-1] if lines else ""
    return False, f"no '{DUMP_COMPLETE}' at the end; last line {last[:100]!r}"


def plain_dump_ends(path: str | Path) -> ArchiveScan:
    """The first HEAD_BYTES and last TAIL_BYTES of an uncompressed file, read by seeking (a plain `database.sql`
    of many GB costs two reads): what dump_tail_status needs. `.uncompressed` stays 0: nothing was inflated.

    >>> dump_tail_status(plain_dump_ends(".../20250701_020000/database.sql"))
    (True, '-- PostgreSQL database dump complete')
    """
    path = Path(path)
    started = time.monotonic()
    fd, _ = open_regular(path)  # a FIFO or a link to /dev/zero named database.sql: refused, not waited on
    try:
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(HEAD_BYTES)
            f.seek(max(size - TAIL_BYTES, 0))
            tail = f.read(TAIL_BYTES)
    except OSError as exc:
        raise ProbeError(f"cannot read {path}: {exc.strerror}") from None
    return ArchiveScan(path, "file", size, head=head, tail=tail, seconds=time.monotonic() - started)


def dump_status(path: Path, dump_format: str, reader: BackupReader, bindir: str | None,
                timeout: float, listing: Listing | None = None) -> tuple[bool, str]:
    """(complete, what was found) for the dump at path: pg_dump -Fc, gzipped SQL (read to its end), or plain
    SQL (its tail read) (BK-04); on the host `listing` was read on (a remote one's dump copied here first)."""
    state = file_state(path, listing)
    if state:
        return False, f"{path.name} {state}"
    if listing is not None:
        path = reader.local(listing, path)
    if dump_format == "custom":
        return custom_dump_status(path, pg_tool("pg_restore", bindir), timeout)
    if archive_kind(path) == "file":
        return dump_tail_status(plain_dump_ends(path))
    return dump_tail_status(reader.scan(path, timeout))


def custom_dump_status(path: Path, pg_restore: str, timeout: float) -> tuple[bool, str]:
    """(complete, what was found) for a pg_dump -Fc file: its table of contents lists (pg_restore --list),
    and every data block reads to its end (pg_restore into /dev/null) (BK-04)."""
    fd, _ = open_regular(path)  # pg_restore is given the path only once it is known to be a regular file
    try:
        with os.fdopen(fd, "rb") as f:
            magic = f.read(5)
    except OSError as exc:
        raise ProbeError(f"cannot read {path}: {exc.strerror}") from None
    if magic != b"PGDMP":
        return False, f"not a pg_dump custom-format file (starts {magic!r}, expected b'PGDMP')"
    arg = str(path.absolute())  # a relative root of `-f...` would be an option: pg_restore then read stdin
    toc = _run([pg_restore, "--list", arg], timeout)
    if toc.returncode != 0:
        return False, f"table of contents unreadable: {last_line(toc.stderr, default=NO_MESSAGE)}"
    entries = [ln for ln in toc.stdout.splitlines() if ln and not ln.startswith(";")]
    data = sum(" TABLE DATA " in ln for ln in entries)
    full = _run([pg_restore, "--file", os.devnull, arg], timeout)
    if full.returncode != 0:
        why = last_line(full.stderr, default=NO_MESSAGE)
        return False, (f"{plural(len(entries), 'TOC entry', 'TOC entries')}, but the data does not read to the end: "
                       f"{why}")
    return True, (f"table of contents with {plural(len(entries), 'entry', 'entries')} ({data} TABLE DATA), "
                  "every block read")


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"{Path(argv[0]).name} took longer than {timeout:.0f} s") from None
    except OSError as exc:
        raise ProbeError(f"cannot run {argv[0]}: {exc.strerror}") from None


def pg_tool(name: str, bindir: str | None = None) -> str:
    """The path of a PostgreSQL client tool (psql, pg_restore): bindir, PATH, then the newest Debian install."""
    try:
        return pgbin.tool(name, bindir)
    except LookupError as exc:
        raise ProbeError(str(exc)) from None


class BackupReader:
    """Scans cached by file identity, so BK-03 and BK-04 read a large dump once per run (per worker); and the
    copies of a remote host's archives they read, made once and removed by close()."""

    def __init__(self) -> None:
        self._scans: dict[tuple, ArchiveScan] = {}
        self._copies: dict[tuple, Path] = {}
        self._dir: Path | None = None

    def local(self, listing: Listing, path: Path) -> Path:
        """`path` itself when `listing` was read on this machine; else a private copy of the remote file (same
        name, same mtime), made once per file identity, at most REMOTE_COPY_MAX (ProbeError beyond: this
        archive is not copied here, nothing is judged on it)."""
        files = listing.files
        if files is None or files.is_local:
            return Path(path)
        e = listing.entry(path)
        key = (files.where, str(path), e.size if e else -1, e.mtime if e else 0.0)
        if key in self._copies:
            return self._copies[key]
        if e is not None and e.size > REMOTE_COPY_MAX:
            raise ProbeError(f"{path} on {files.where} is {size_text(e.size)}: copied here for reading only up to "
                             f"{size_text(REMOTE_COPY_MAX)}; not verified")
        data = files.fetch(str(path), REMOTE_COPY_MAX)
        if self._dir is None:
            import tempfile

            self._dir = Path(tempfile.mkdtemp(prefix="acgs-backups-"))  # 0700: the dumps hold the data
        folder = self._dir / str(len(self._copies))
        folder.mkdir(mode=0o700)
        dest = folder / Path(path).name
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if e is not None:
            os.utime(dest, (e.mtime, e.mtime))
        self._copies[key] = dest
        return dest

    def close(self) -> None:
        if self._dir is not None:
            import shutil

            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self._copies.clear()

    def scan(self, path: Path, timeout: float | None = None) -> ArchiveScan:
        """scan_archive(path, keep_ends=True, timeout=timeout), once per file identity."""
        try:
            st = path.stat()
        except OSError as exc:
            raise ProbeError(f"cannot read {path}: {exc.strerror}") from None
        key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        if key not in self._scans:
            self._scans[key] = scan_archive(path, keep_ends=True, timeout=timeout)
        return self._scans[key]
