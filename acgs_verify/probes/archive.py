"""Archive integrity: a gzip stream, a tar inside it, a pg_dump's formats, read to their end within a byte and a
time budget.

>>> scan = scan_archive(".../20250701_020000/logs.tar.gz")
>>> scan.problem
'truncated: the gzip stream stops at byte 18432 of 18432 (uncompressed 40960), inside tar member var/log/a.log'
>>> dump_tail_status(scan_archive(".../20250701_020000/database.sql.gz", keep_ends=True))
(True, '-- PostgreSQL database dump complete')
>>> custom_dump_status(Path(".../database.dump"), pg_tool("pg_restore"), timeout=600)
(True, 'table of contents with 42 entries (9 TABLE DATA), every block read')

Archives are read streaming in constant memory (zlib with large reads and a bounded output size; a tar walker
that keeps one 512-byte header at a time), so a 1 GiB dump costs its read time and a few MB. A file is read only
if it is a regular file, no further than the size it had when opened, and for no longer than the caller's time
budget. scan_stream() is the same reader over any source of chunks (a remote host's bytes,
probes/archive_remote.py); scan_archive() is it over a local file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import subprocess
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from acgs_verify import pgbin
from acgs_verify.errors import ProbeError
from acgs_verify.probes.bounded import open_regular
from acgs_verify.redact import last_line
from acgs_verify.words import plural

NO_MESSAGE = "(no message)"  # what a tool that failed without a word to stderr is quoted as
# compressed bytes per read and uncompressed bytes per zlib call: OUT_MAX bounds memory whatever the ratio (zip
# bombs). 512 KiB / 1 MiB cost the same CPU as 2 MiB / 8 MiB on a 1 GiB dump (9.6 s vs 9.3 s user) and 3 MB of
# peak RSS over the interpreter instead of 17 MB (BENCHMARKS.md, remote verification)
READ_CHUNK = 1 << 19
OUT_MAX = 1 << 20
TAIL_BYTES = 1 << 16  # the end of a dump kept for BK-04
HEAD_BYTES = 1 << 12
LOCATE_STEP = 256  # a corrupt stream's offset is located to within this many bytes
DUMP_COMPLETE = "-- PostgreSQL database dump complete"
BLOCK = 512


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
    how: str = ""  # where it was read, for a file on another host: 'verified on db-1 with gzip -t', 'streamed ...'

    @property
    def ok(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        where = f" ({self.how})" if self.how else ""
        if self.problem:
            return f"{self.path.name}: {self.problem}{where}"
        what = f"{self.members} tar members, " if self.kind in ("tar.gz", "tar") else ""
        read = f"{_mb(self.size)} read to the end"
        if self.uncompressed:  # a host's own tool tested it there: nothing was counted here
            read += f" ({_mb(self.uncompressed)} uncompressed)"
        return f"{self.path.name}: {what}{read}{where}"


class Broken(Exception):
    """Where a stream stops or breaks, or its budget ran out: becomes ArchiveScan.problem."""


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

    def in_time(self) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise Broken(f"not read to its end within {self.seconds:g} s (stopped at byte "
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
    with _Budgeted(path, timeout) as f:
        return scan_stream(f, path, keep_ends, feed)


def scan_stream(source, path: str | Path, keep_ends: bool = False, feed=None) -> ArchiveScan:
    """scan_archive() over any source of the file's bytes: `source.read(n)` (b"" at the end), `source.total` (the
    byte budget: the file's size) and `source.in_time()` (raises Broken past its deadline). A remote host's bytes
    arrive this way (probes/archive_remote.py), in chunks, in the same constant memory."""
    path = Path(path)
    kind = archive_kind(path)
    scan = ArchiveScan(path, kind, 0)
    walker = _TarWalker() if kind in ("tar.gz", "tar") else None
    ends = _Ends() if keep_ends else None
    extra = feed

    def sink(out) -> None:
        source.in_time()  # inflating is where the time goes: a small file may hold a bomb
        scan.uncompressed += len(out)
        if extra is not None and out:
            extra(out)
        if walker is not None:
            walker.feed(out)
        if ends is not None:
            ends.add(out)

    started = time.monotonic()
    try:
        if kind in ("tar.gz", "gzip"):
            _inflate(source, sink, scan)
        else:
            while chunk := source.read(READ_CHUNK):
                scan.size += len(chunk)
                sink(chunk)
        if walker is not None:
            walker.finish()
    except Broken as exc:
        scan.problem = str(exc)
        if walker is not None and walker.current and "member" not in scan.problem:
            scan.problem += f", inside tar member {walker.current}"
    except OSError as exc:
        if scan.size == 0:
            raise ProbeError(f"cannot read {path}: {exc.strerror or exc}") from None
        scan.problem = f"read error at byte {scan.size}: {exc.strerror or exc}"
    scan.seconds = time.monotonic() - started
    if walker is not None:
        scan.members = walker.members
        if scan.ok and not walker.members:  # an archive of nothing is no backup of anything
            scan.problem = "tar: no members (an empty archive: the folder it was made from was empty or unreadable)"
    if ends is not None:
        scan.head, scan.tail = bytes(ends.head), ends.tail
    return scan


def _inflate(f, sink, scan: ArchiveScan) -> None:
    """Every gzip member of f through zlib into sink; Broken names where the stream stops or breaks."""
    total = f.total
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
                raise Broken(f"{what} at byte {where} of {total} ({_zmsg(exc)}; uncompressed so far "
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
        raise Broken("empty file: no gzip stream at all")
    # a stream cut short: zlib waited for more input that never came
    sink(d.flush())
    raise Broken(f"truncated: the gzip stream stops at byte {scan.size} (the end of the file) before its "
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
            raise Broken(f"tar: a zero block inside the archive at uncompressed offset {at - BLOCK}")
        stored = h[148:156].replace(b"\0", b" ").strip()
        try:
            want = int(stored or b"0", 8)
        except ValueError:
            want = -1
        got = sum(h[:148]) + 8 * 32 + sum(h[156:])
        if want != got:
            after = f" (after member {self.current})" if self.current else ""
            raise Broken(f"tar: bad header checksum at uncompressed offset {at}{after}")
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
            raise Broken(f"tar: the archive ends at uncompressed offset {self.offset}, {self.skip} bytes short "
                          f"of the end of member {self.current}")
        if self.header:
            raise Broken(f"tar: the archive ends inside a header at uncompressed offset {self.offset}")
        if not self.ended:
            after = f" after member {self.current}" if self.current else ""
            raise Broken(f"tar: no end-of-archive marker; the archive stops at uncompressed offset "
                          f"{self.offset}{after}")


def _tar_size(field: bytes) -> int:
    if field[0] & 0x80:  # GNU base-256 for members over 8 GiB
        return int.from_bytes(field[1:], "big")
    text = field.replace(b"\0", b" ").strip()
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise Broken(f"tar: header with an unreadable size field {text[:12]!r}") from None


def _tar_name(h: bytes) -> str:
    name = h[0:100].split(b"\0", 1)[0]
    if h[257:262] == b"ustar":
        prefix = h[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "replace")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n} bytes"



# ------------------------------------------------------------------------------------------------ dumps




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


def custom_dump_status_of(open_source, name: str, pg_restore: str, timeout: float, how: str) -> tuple[bool, str]:
    """custom_dump_status for a pg_dump -Fc whose bytes come from `open_source()` (a context manager giving a
    budgeted source, as scan_stream reads): fed twice to the checker's pg_restore on stdin, once for --list and
    once for every block (--file /dev/null). pg_restore reads a custom dump from a pipe in order."""
    with open_source() as source:
        magic = source.read(5)
        if magic != b"PGDMP":
            return False, f"not a pg_dump custom-format file (starts {magic!r}, expected b'PGDMP') ({how})"
        toc = _run_fed([pg_restore, "--list"], magic, source, timeout)
    if toc.returncode != 0:
        return False, f"table of contents unreadable: {last_line(toc.stderr, default=NO_MESSAGE)} ({how})"
    entries = [ln for ln in toc.stdout.splitlines() if ln and not ln.startswith(";")]
    data = sum(" TABLE DATA " in ln for ln in entries)
    with open_source() as source:
        full = _run_fed([pg_restore, "--file", os.devnull], b"", source, timeout)
        whole = source.left == 0
    if full.returncode != 0 or not whole:
        why = last_line(full.stderr, default=NO_MESSAGE) if full.returncode else "the stream stopped short"
        return False, (f"{plural(len(entries), 'TOC entry', 'TOC entries')}, but the data does not read to the end: "
                       f"{why} ({how})")
    return True, (f"table of contents with {plural(len(entries), 'entry', 'entries')} ({data} TABLE DATA), "
                  f"every block read ({how}; {name})")


def _run_fed(argv: list[str], first: bytes, source, timeout: float) -> subprocess.CompletedProcess:
    """argv with `first` and then the rest of `source` on stdin; its stdout and stderr kept in temporary files
    (a thread-free way not to deadlock on a full pipe)."""
    import tempfile

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=err)
        except OSError as exc:
            raise ProbeError(f"cannot run {argv[0]}: {exc.strerror}") from None
        try:
            proc.stdin.write(first)
            while chunk := source.read(READ_CHUNK):
                proc.stdin.write(chunk)
        except (BrokenPipeError, Broken):
            pass  # it stopped reading (a TOC read needs only the start) or the budget ran out: its status says
        finally:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise ProbeError(f"{Path(argv[0]).name} took longer than {timeout:.0f} s") from None
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(argv, proc.returncode, out.read(1 << 24).decode("utf-8", "replace"),
                                           err.read(1 << 16).decode("utf-8", "replace"))


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
    """Scans cached by file identity, so BK-03 and BK-04 read a large dump once per run (per worker)."""

    def __init__(self) -> None:
        self._scans: dict[tuple, ArchiveScan] = {}

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

    def once(self, key: tuple, compute) -> ArchiveScan:
        """compute() once per key per run: a scan of a file on another host (archive_remote), keyed by its host,
        path, size and mtime."""
        if key not in self._scans:
            self._scans[key] = compute()
        return self._scans[key]

    def close(self) -> None:
        self._scans.clear()


def file_sha256(path: str | Path, timeout: float | None = None) -> str:
    """The SHA-256 of a regular file, read in chunks within the same byte and time budget as scan_archive
    (a manifest's checksums). ProbeError when it cannot be read or the budget runs out.

    >>> file_sha256(".../20250701_020000/database.sql.gz", timeout=600)
    '9f86d081884c7d65...'
    """
    path = Path(path)
    with _Budgeted(path, timeout) as f:
        return sha256_of(f, path)


def sha256_of(source, path: str | Path) -> str:
    """The SHA-256 of what `source` (as scan_stream reads it) yields to its end."""
    digest = hashlib.sha256()
    try:
        while chunk := source.read(READ_CHUNK):
            digest.update(chunk)
    except Broken as exc:
        raise ProbeError(f"{Path(path).name}: {exc}") from None
    except OSError as exc:
        raise ProbeError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()
