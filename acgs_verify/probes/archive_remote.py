"""Archive integrity for a file on another host, without copying it: the host's own tools run where the file is
when it has them, else its bytes stream through the connection into archive.py's reader.

>>> scan = scan_on_host(pool, host, "/var/backups/acgs/latest/database.sql.gz", timeout=600)
>>> scan.ok, scan.how
(True, 'verified on db-1 with gzip -d')
>>> scan_on_host(pool, host_without_gzip, ".../logs.tar.gz", timeout=600).how
'streamed 18.4 MB from db-2 (no gzip there)'
>>> dump_status_on_host(pool, host, ".../database.dump", "custom", timeout=600)
(True, 'table of contents with 42 entries (9 TABLE DATA), every block read (verified on db-1 with pg_restore)')
>>> sha256_on_host(pool, host, ".../database.sql.gz", timeout=600)
'9f86d081884c7d65...'

On the host: `gzip -t` (or `gzip -dc | tail -c`, which tests the same stream and keeps the end a dump check
reads), `tar -tzf`, `pg_restore --list` and `--file /dev/null`, `sha256sum`, each under `timeout` and reading
through `head -c SIZE` (the size the file had when it was looked at: a file written without end is read to that
point). Streamed: `head -c SIZE` on the host, read by the checker in 512 KiB chunks within the same byte and time
budget, so a GiB costs a few MB here. The path is checked to be a regular readable file first; a refusal exits
host.CANNOT with its reason. What a host's tool says is data: shown escaped, cut to one line.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from acgs_verify.errors import ProbeError
from acgs_verify.hosts.commands import CANNOT, command, operand, refuse, refused
from acgs_verify.probes.archive import (
    HEAD_BYTES,
    NO_MESSAGE,
    TAIL_BYTES,
    ArchiveScan,
    Broken,
    archive_kind,
    custom_dump_status_of,
    dump_tail_status,
    pg_tool,
    scan_stream,
    sha256_of,
)
from acgs_verify.redact import last_line, printable
from acgs_verify.words import plural

if TYPE_CHECKING:
    from acgs_verify.hosts.pool import HostPool
    from acgs_verify.profile import Host

TOOLS = ("gzip", "tar", "pg_restore", "sha256sum")
NEEDED = ("timeout", "head", "tail", "wc")  # what every on-host command leans on besides its tool
NEEDS = {"gzip": ("gzip",), "tar.gz": ("gzip", "tar"), "tar": ("tar",)}  # by archive.archive_kind
STALL_SECONDS = 30  # a stream that brings no byte for this long is a host that stopped sending
KILL_AFTER = 2  # timeout's -k: a tool that ignores SIGTERM is killed this long after


# -------------------------------------------------------------------------------------------- what is there


def read_tools(conn) -> frozenset[str]:
    """The archive tools on the host's PATH (of TOOLS and NEEDED)."""
    names = " ".join(TOOLS + NEEDED)
    out = conn.run(f'for t in {names}; do command -v "$t" >/dev/null 2>&1 && printf "%s\\n" "$t"; done').stdout
    return frozenset(ln.strip() for ln in out.splitlines() if ln.strip() in TOOLS + NEEDED)


def tools(pool: HostPool, host: Host) -> frozenset[str]:
    """Which of gzip, tar, pg_restore, sha256sum (and timeout, head, tail, wc) the host has: once per run."""
    return pool.measure(host, "archive tools", read_tools)


def _prelude(path: str) -> str:
    """Shell that sets f (the file operand) and n (its size now), refusing what is not a regular readable file:
    a FIFO would block the read, a device never end."""
    f = operand(path)
    return (f"f={command(f)}; test -f \"$f\" || {refuse(f'{path}: missing or not a regular file')}; "
            f"test -r \"$f\" || {refuse(f'{path}: not readable')}; "
            f"n=$(wc -c < \"$f\") || {refuse(f'{path}: its size cannot be read')}; ")


def read_size(conn, path: str) -> int:
    """The size of the regular file `path` on the host; ProbeError with the host's reason otherwise."""
    res = conn.run(_prelude(path) + 'printf "%s\\n" "$n"')
    why = refused(res)
    if why or not res.stdout.strip().isdigit():
        raise ProbeError(why or f"{path}: no size read (exit {res.rc})")
    return int(res.stdout.strip())


# ------------------------------------------------------------------------------------------------ scans


def scan_on_host(pool: HostPool, host: Host, path: str, timeout: float, keep_ends: bool = True,
                 stream: bool | None = None) -> ArchiveScan:
    """What archive.scan_archive(path) finds, for `path` on `host`: with its own tools when it has them (and
    `timeout`), else streamed. keep_ends keeps the content's first and last bytes (a dump's closing line).
    `stream=True` streams even where the tools are (the restore drill needs the bytes); ProbeError when the file
    cannot be read at all."""
    kind = archive_kind(PurePosixPath(path))
    # without `timeout` a tool there could not be held to the budget: streamed, the checker holds it
    missing = sorted({*NEEDED, *NEEDS.get(kind, ())} - tools(pool, host))
    if stream is None:
        stream = bool(missing) and kind != "file"
    if kind == "file" and not stream:
        return pool.measure(host, f"ends of {path}", read_file_ends, path)
    if not stream:
        return pool.measure(host, f"archive {path}", read_scan, path, timeout, keep_ends, host.name)
    scan = stream_scan(pool, host, path, timeout, keep_ends)
    why = f" (no {', '.join(missing)} there)" if missing else ""
    scan.how = f"streamed {shown_size(scan.size)} from {host.name}{why}"
    return scan


def stream_scan(pool: HostPool, host: Host, path: str, timeout: float, keep_ends: bool = True,
                feed=None) -> ArchiveScan:
    """The bytes of `path` on `host` through the connection into archive.scan_stream, in READ_CHUNK pieces,
    never more than the size it had when looked at and for at most `timeout` s; `feed` receives the content
    (the restore drill's psql)."""
    with remote_bytes(pool, host, path, timeout) as source:
        scan = scan_stream(source, PurePosixPath(path), keep_ends, feed)
    s, total = source.stream, source.total
    # the host's side ended before the budget did, not failing: the stream's own end (the reader says
    # "truncated"); failing: why, from the host (a reader that stopped early closed the stream itself, and
    # the status of a command cut off by that says nothing)
    if s.rc == CANNOT or (source.short and s.rc != 0):
        why = printable(last_line(s.stderr, default=f"exit {s.rc}"))
        if source.got == 0:
            raise ProbeError(f"cannot read {path} on {host.name}: {why}")
        scan.problem = f"read error at byte {source.got} of {total} on {host.name}: {why}"
    return scan


def sha256_on_host(pool: HostPool, host: Host, path: str, timeout: float) -> str:
    """The SHA-256 of `path` on `host`: sha256sum there, else streamed through hashlib here."""
    if {"sha256sum", *NEEDED} <= tools(pool, host):
        return pool.measure(host, f"sha256 of {path}", read_sha256, path, timeout)
    with remote_bytes(pool, host, path, timeout) as source:
        digest = sha256_of(source, path)
    if source.got != source.total:
        raise ProbeError(f"cannot read {path} on {host.name}: {source.got} of {source.total} bytes arrived "
                         f"({printable(last_line(source.stream.stderr, default=NO_MESSAGE))})")
    return digest


def dump_status_on_host(pool: HostPool, host: Host, path: str, dump_format: str, timeout: float,
                        bindir: str | None = None, scan: ArchiveScan | None = None) -> tuple[bool, str]:
    """archive.dump_status for a dump on `host`: a pg_dump -Fc file through the host's pg_restore (streamed
    into the checker's pg_restore when the host has none), else the content's end (BK-04): from `scan` when
    the caller has scan_on_host's already (keep_ends=True), so a dump crosses once."""
    if dump_format == "custom":
        return _custom_on_host(pool, host, path, timeout, bindir)
    scan = scan or scan_on_host(pool, host, path, timeout, keep_ends=True)
    if not scan.ok:
        return False, scan.describe()
    ok, found = dump_tail_status(scan)
    return ok, f"{found} ({scan.how})" if scan.how else found


# ----------------------------------------------------------------------------------- on the host: readers
# conn.run() functions for pool.measure: one measurement per host, file and budget per run.


def read_scan(conn, path: str, timeout: float, keep_ends: bool, host_name: str) -> ArchiveScan:
    """The archive at `path` tested by the host's own gzip (and tar): the gzip stream to its end, the tar
    members counted, a dump's first and last bytes kept."""
    kind = archive_kind(PurePosixPath(path))
    t = command("timeout", "-k", KILL_AFTER, _secs(timeout))
    bounded = f'{t} head -c "$n" < "$f"'
    scan = ArchiveScan(PurePosixPath(path), kind, 0)
    started = time.monotonic()
    if kind == "gzip" and keep_ends:
        # one pass: gzip -d tests the stream as -t does (CRC, length, truncation); tail keeps the dump's end
        res = conn.run(_prelude(path) + f'exec 4>&1; rc=$( {{ {{ {bounded} | {t} gzip -dc; echo "$?" >&3; }} '
                       f'| tail -c {TAIL_BYTES} >&4; }} 3>&1 ); ' + _report("rc"))
        scan.tail = res.stdout_bytes
        used = "gzip -d"
    elif kind in ("gzip", "tar.gz"):
        res = conn.run(_prelude(path) + f'{bounded} | {t} gzip -t; rc=$?; ' + _report("rc"))
        used = "gzip -t"
    else:
        res = _tar_list(conn, path, bounded, t, "")
        used = "tar -tf"
    size, rc, err = _reported(res, path)
    scan.size = size
    if rc == 0 and kind == "tar.gz":  # the second pass gets what is left of the budget
        t = command("timeout", "-k", KILL_AFTER, _secs(timeout - (time.monotonic() - started)))
        res = _tar_list(conn, path, f'{t} head -c "$n" < "$f"', t, "z")
        _, rc, err = _reported(res, path)
        used += " and tar -tzf"
    if kind in ("tar.gz", "tar") and rc == 0:
        scan.members = int(res.stdout.strip() or 0)
        if scan.members == 0:
            scan.problem = "tar: no members (an empty archive: the folder it was made from was empty or unreadable)"
    scan.seconds = time.monotonic() - started
    if rc in (124, 137) or (rc != 0 and scan.seconds >= timeout):
        scan.problem = f"not read to its end within {timeout:g} s (on the host, {used})"
    elif rc not in (0, 2) or (rc == 2 and "trailing garbage" not in err):
        scan.problem = f"{used} failed (exit {rc}): {printable(last_line(err, default=NO_MESSAGE))}"
    elif rc == 2:  # gzip's warning: bytes after the last member, which the checker's reader refuses too
        scan.problem = f"not a gzip member after the end of the stream: {printable(last_line(err))}"
    if keep_ends and kind == "gzip" and scan.problem is None:
        head = conn.run(_prelude(path) + f'{bounded} | {t} gzip -dc 2>/dev/null | head -c {HEAD_BYTES}')
        scan.head = head.stdout_bytes
    scan.how = f"verified on {host_name} with {used}"
    return scan


def _tar_list(conn, path: str, bounded: str, t: str, z: str):
    return conn.run(_prelude(path) + f'exec 4>&1; rc=$( {{ {{ {bounded} | {t} tar -t{z}f - ; echo "$?" >&3; }} '
                    f'| wc -l >&4; }} 3>&1 ); ' + _report("rc"))


def _report(var: str) -> str:
    """The last line on stderr: the size read and the tool's exit status, after whatever the tool said."""
    return f'printf "acgs-archive %s %s\\n" "$n" "${var}" >&2'


def _reported(res, path: str) -> tuple[int, int, str]:
    """(size, the tool's exit status, what it said) from a command ending in _report(); ProbeError on a
    refusal (not a regular file, unreadable)."""
    err = res.stderr or ""
    if res.rc == CANNOT:
        raise ProbeError(printable(last_line(err, default=f"{path}: refused")))
    lines = err.rstrip("\n").splitlines()
    if not lines or not lines[-1].startswith("acgs-archive "):
        raise ProbeError(f"{path}: the host's check ended without a status (exit {res.rc}): "
                         f"{printable(last_line(err, default=NO_MESSAGE))}")
    _, size, rc = lines[-1].split()
    return int(size), int(rc), "\n".join(lines[:-1])


def read_file_ends(conn, path: str) -> ArchiveScan:
    """The first HEAD_BYTES and last TAIL_BYTES of a plain file on the host (archive.plain_dump_ends there)."""
    head = conn.run(_prelude(path) + f'printf "%s\\n" "$n" >&2; head -c {HEAD_BYTES} < "$f"')
    if head.rc == CANNOT:
        raise ProbeError(printable(last_line(head.stderr, default=f"{path}: refused")))
    tail = conn.run(_prelude(path) + f'tail -c {TAIL_BYTES} < "$f"')
    size = last_line(head.stderr, default="0")
    return ArchiveScan(PurePosixPath(path), "file", int(size) if size.isdigit() else 0, head=head.stdout_bytes,
                       tail=tail.stdout_bytes, how="read on the host with head and tail")


def read_sha256(conn, path: str, timeout: float) -> str:
    t = command("timeout", "-k", KILL_AFTER, _secs(timeout))
    res = conn.run(_prelude(path) + f'{t} head -c "$n" < "$f" | {t} sha256sum')
    why = refused(res)
    digest = res.stdout.split()[0] if res.stdout.split() else ""
    if why or res.rc != 0 or len(digest) != 64:
        raise ProbeError(why or f"sha256sum of {path} failed (exit {res.rc})")
    return digest


# --------------------------------------------------------------------------------------------- pg_dump -Fc


def _custom_on_host(pool: HostPool, host: Host, path: str, timeout: float,
                    bindir: str | None) -> tuple[bool, str]:
    if {"pg_restore", *NEEDED} <= tools(pool, host):
        return pool.measure(host, f"pg_restore of {path}", read_custom, path, timeout, host.name)
    return custom_dump_status_of(lambda: remote_bytes(pool, host, path, timeout), PurePosixPath(path).name,
                                 pg_tool("pg_restore", bindir), timeout,
                                 how=f"streamed from {host.name}, no pg_restore there")


@contextlib.contextmanager
def remote_bytes(pool: HostPool, host: Host, path: str, timeout: float) -> Iterator[_Budget]:
    """The bytes of `path` on `host` as a budgeted source (read(n), total, in_time; `.stream` its command):
    `head -c SIZE` there, read in chunks here."""
    total = pool.measure(host, f"size of {path}", read_size, path)
    with pool.stream(host, _prelude(path) + 'exec head -c "$n" < "$f"', min(timeout, STALL_SECONDS)) as s:
        yield _Budget(s, total, timeout)


def read_custom(conn, path: str, timeout: float, host_name: str) -> tuple[bool, str]:
    """A pg_dump -Fc file checked by the host's pg_restore: its magic, its table of contents, every block."""
    t = command("timeout", "-k", KILL_AFTER, _secs(timeout))
    magic = conn.run(_prelude(path) + 'head -c 5 < "$f"')
    why = refused(magic)
    if why:
        raise ProbeError(why)
    if magic.stdout_bytes != b"PGDMP":
        return False, f"not a pg_dump custom-format file (starts {magic.stdout_bytes!r}, expected b'PGDMP')"
    f = command(operand(path))
    toc = conn.run(f"{t} pg_restore --list {f}")
    if toc.rc != 0:
        return False, f"table of contents unreadable: {printable(last_line(toc.stderr, default=NO_MESSAGE))}"
    entries = [ln for ln in toc.stdout.splitlines() if ln and not ln.startswith(";")]
    data = sum(" TABLE DATA " in ln for ln in entries)
    full = conn.run(f"{t} pg_restore --file /dev/null {f}")
    how = f"verified on {host_name} with pg_restore"
    if full.rc != 0:
        why = printable(last_line(full.stderr, default=NO_MESSAGE))
        return False, (f"{plural(len(entries), 'TOC entry', 'TOC entries')}, but the data does not read to the end: "
                       f"{why} ({how})")
    return True, (f"table of contents with {plural(len(entries), 'entry', 'entries')} ({data} TABLE DATA), "
                  f"every block read ({how})")


# ------------------------------------------------------------------------------------------------- helpers


class _Budget:
    """A remote stream as archive.scan_stream reads it: no more than `total` bytes, for no longer than
    `seconds`."""

    def __init__(self, stream, total: int, seconds: float):
        self.stream, self.total, self.left, self.got, self.seconds = stream, total, total, 0, seconds
        self.short = False  # the stream ended before `total` bytes came
        self.deadline = time.monotonic() + seconds

    def in_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise Broken(f"not read to its end within {self.seconds:g} s (stopped at byte {self.got} of "
                         f"{self.total})")

    def read(self, n: int) -> bytes:
        self.in_time()
        if self.left <= 0:
            return b""
        want = min(n, self.left)
        buf = bytearray()
        while len(buf) < want:  # a pipe hands out what has arrived: fill the chunk, so zlib gets large reads
            try:
                chunk = self.stream.read(want - len(buf))
            except TimeoutError:
                self.in_time()  # the budget ran out while it waited: that is the reason
                raise Broken(f"the host sent nothing for {min(self.seconds, STALL_SECONDS):g} s (stopped at byte "
                             f"{self.got + len(buf)} of {self.total})") from None
            if not chunk:
                self.short = True
                break
            buf += chunk
            self.in_time()
        self.left -= len(buf)
        self.got += len(buf)
        return bytes(buf)


def _secs(timeout: float) -> str:
    return f"{max(timeout, 1):g}"


def shown_size(n: int) -> str:
    """1.5 GiB, 12.0 MiB, 512 bytes: what a finding says was streamed."""
    return f"{n / (1 << 30):.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 \
        else f"{n} bytes"


