"""Files a check reads, on the host the profile puts them: backups, certificates, policies. Through the host's backend.

>>> files = host_files(pool, host)                      # app-1 (local), ops-1 (ssh), ... any backend
>>> files.read("/etc/ssl/acgs/cert.pem", 1 << 20)        # the bytes, at most the cap
b'-----BEGIN CERTIFICATE-----...'
>>> tree = files.tree("/var/backups/acgs", depth=2)      # one `find`: names, types, sizes, mtimes, links
>>> tree.entry("20250701/database.sql.gz").size
81920
>>> local_files().tree(tmp_path, 2)                      # the same, on this machine, without a pool

The same guarantees as the checker's own reads (probes/bounded.py) on every host: a file is read only when it is a
regular file, up to a cap, within a time limit; a symlink only when the profile named the path (`follow=True`); a
FIFO, a device, a socket or a directory is refused with one line, never waited on. On the local backend the read
is bounded.read_regular itself (an fstat of the descriptor it reads); elsewhere the file is tested, then read by
`head -c CAP+1` under `timeout`, so a file swapped for a FIFO between the two is still only waited on for
READ_TIMEOUT_SECONDS. Every value is quoted (hosts.commands: command/operand); a refusal exits CANNOT with its reason.
"""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from acgs_verify.errors import ProbeError
from acgs_verify.hosts.commands import CANNOT, command, operand, refuse
from acgs_verify.probes.bounded import NotReadable, read_regular, size_text
from acgs_verify.redact import one_line

if TYPE_CHECKING:
    from acgs_verify.hosts.pool import HostPool
    from acgs_verify.profile import Host

READ_TIMEOUT_SECONDS = 30  # one small file, or one listing, on a host whose disk or file system hangs
MAX_ENTRIES = 100_000  # a listing this long is no backup root or policy folder: cut, and said
# find's type letters (%y, %Y) as bounded.py names the kinds it refuses
KINDS = {"d": "a directory", "p": "a FIFO", "c": "a character device", "b": "a block device", "s": "a socket",
         "l": "a symlink", "f": "a regular file", "N": "nothing (a dangling symlink)", "L": "a symlink loop"}


@dataclass(frozen=True)
class Entry:
    """One name under a listed root: `kind` is find's %y (f, d, l, p, ...), `target_kind` its %Y (the kind a
    symlink leads to, N when it leads nowhere), `link` what a symlink says."""

    path: str  # relative to the root, `/`-separated
    kind: str
    target_kind: str
    size: int
    mtime: float
    readable: bool
    link: str = ""

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass
class Tree:
    """What one `find ROOT -maxdepth DEPTH` saw, and the real path of ROOT and of ROOT/latest where it exists."""

    root: str
    real_root: str
    entries: dict[str, Entry] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # depth-1 symlink name -> its real path ("" if none)
    cut: bool = False  # MAX_ENTRIES reached

    def entry(self, relative: str) -> Entry | None:
        return self.entries.get(relative.strip("/"))

    def children(self, relative: str = "") -> list[Entry]:
        """The entries directly under `relative` ("" for the root), by name."""
        prefix = relative.strip("/") + "/" if relative.strip("/") else ""
        depth = prefix.count("/")
        return sorted((e for p, e in self.entries.items() if p.startswith(prefix) and p.count("/") == depth),
                      key=lambda e: e.name)


class Files:
    """The files of one host, each command through `run` (a testinfra host's run, or this machine's sh)."""

    def __init__(self, where: str, run, read_local: bool = False, measure=None, runner=None):
        self.where, self._run, self._read_local = where, run, read_local
        # (label, function, *args) -> the function's result once per run (HostPool.measure), or called as is
        self._measure = measure or (lambda label, fn, *args: fn(self._run, *args))
        self._runner = runner or (lambda: self._run)  # the host's run, for reads that are not kept

    @property
    def is_local(self) -> bool:
        """True when this is the machine acgs-verify runs on (its files can be opened here)."""
        return self._read_local

    def fetch(self, path: str, limit: int) -> bytes:
        """read(), not kept for the run: a large file read once by one check (a backup's archive)."""
        if self._read_local:
            return read_regular(path, limit)
        return read_bytes(self._runner(), str(path), int(limit))

    def tree(self, root: str, depth: int) -> Tree:
        """read_tree of root on this host (once per run in a pool). ProbeError when root cannot be listed."""
        return self._measure(f"listing {root}", read_tree, str(root), int(depth))

    def read(self, path: str, limit: int, follow: bool = True) -> bytes:
        """The bytes of the regular file `path` (at most `limit`), read on this host; NotReadable otherwise."""
        if self._read_local:  # the local backend is this machine: the fstat-checked read of bounded.py
            return self._measure(f"file {path}", _read_here, str(path), int(limit), follow)
        return self._measure(f"file {path}", read_bytes, str(path), int(limit), follow)


def host_files(pool: HostPool, host: Host) -> Files:
    """The files of `host` through the pool: each listing and each read once per run, an unreachable host said
    once (ProbeError 'host unreachable: ...')."""
    def measure(label: str, fn, *args: Any):
        return pool.measure(host, label, _on_conn(fn), *args)

    return Files(host.name, None, read_local=host.backend == "local", measure=measure,
                 runner=lambda: pool.get(host).run)


def local_files() -> Files:
    """This machine's files, through `sh -c` (no pool, no testinfra): the same commands, the same parser."""
    return Files("this machine", _sh, read_local=True)


_ADAPTERS: dict[Any, Any] = {}


def _on_conn(fn):
    """fn(run, *args) as read(conn, *args) for HostPool.measure: one function object per fn, so its cache key
    (the function itself and its arguments) is the same for every check asking the same."""
    if fn not in _ADAPTERS:
        def read(conn, *args):
            return fn(conn.run, *args)
        read.__qualname__ = f"on_conn({fn.__name__})"
        _ADAPTERS[fn] = read
    return _ADAPTERS[fn]


@dataclass
class _Result:
    rc: int
    stdout_bytes: bytes
    stderr: str

    @property
    def stdout(self) -> str:
        return self.stdout_bytes.decode("utf-8", "replace")


def _sh(cmd: str) -> _Result:
    try:
        res = subprocess.run(["sh", "-c", cmd], capture_output=True, timeout=READ_TIMEOUT_SECONDS + 5,
                             stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ProbeError(f"a file read on this machine took longer than {READ_TIMEOUT_SECONDS + 5} s") from None
    return _Result(res.returncode, res.stdout, res.stderr.decode("utf-8", "replace"))


def _out(res) -> bytes:
    raw = getattr(res, "stdout_bytes", None)
    return raw if isinstance(raw, bytes) else (res.stdout or "").encode("utf-8", "surrogateescape")


def _read_here(run, path: str, limit: int, follow: bool) -> bytes:
    return read_regular(path, limit, follow)


def read_bytes(run, path: str, limit: int, follow: bool = True) -> bytes:
    """The bytes of the regular file `path`, at most `limit`, read by one command: tested (symlink, kind, read
    permission, size), then `head -c LIMIT+1` under `timeout`. NotReadable (a ProbeError) with the same reasons
    bounded.read_regular gives: 'a FIFO, not a regular file', 'a symlink, not followed', 'larger than 1 MiB (..)'.
    """
    p = operand(path)
    kinds = "".join(f"[ -{t} {command(p)} ] && {refuse(f'{kind}, not a regular file')}; "
                    for t, kind in (("d", "a directory"), ("p", "a FIFO"), ("c", "a character device"),
                                    ("b", "a block device"), ("S", "a socket")))
    cmd = ((f"[ -L {command(p)} ] && {refuse('a symlink, not followed')}; " if not follow else "")
           + f"[ -e {command(p)} ] || {refuse('No such file or directory')}; " + kinds
           + f"[ -f {command(p)} ] || {refuse('a special file, not a regular file')}; "
           + f"[ -r {command(p)} ] || {refuse('Permission denied')}; "
           + f"s=$(stat -L -c %s -- {command(p)}) || {refuse('cannot stat it')}; printf '%s\\n' \"$s\"; "
           + f"[ \"$s\" -gt {int(limit)} ] && exit 0; "
           + f"exec timeout {READ_TIMEOUT_SECONDS} {command('head', '-c', int(limit) + 1, '--', p)}")
    res = run(cmd)
    if res.rc == CANNOT:
        raise NotReadable(path, one_line(res.stderr) or "refused")
    raw = _out(res)
    size_line, _, data = raw.partition(b"\n")
    if res.rc == 124:
        raise NotReadable(path, f"not read within {READ_TIMEOUT_SECONDS} s")
    if res.rc != 0 or not size_line.strip().isdigit():
        raise NotReadable(path, one_line(res.stderr) or f"exit {res.rc}")
    size = int(size_line)
    if size > limit:
        raise NotReadable(path, f"larger than {size_text(limit)} ({size_text(size)})")
    if len(data) > limit:
        raise NotReadable(path, f"larger than {size_text(limit)} (it grew while it was read)")
    return data


def read_tree(run, root: str, depth: int) -> Tree:
    """Every name under `root` down to `depth` levels, in one command: `find ROOT -mindepth 1 -maxdepth DEPTH`
    printing type, type of a link's target, size, mtime, readability, the path and what a link says, NUL-separated
    (a file name may hold any byte but NUL and `/`); then the real path of ROOT and of every symlink directly in it.
    Nothing is followed but what readlink -f resolves, to compare with the root. ProbeError when root does not
    exist, is not a directory, or cannot be listed."""
    p = operand(root)
    q = command(p)
    cmd = (f"[ -e {q} ] || {refuse(f'{root} does not exist')}; "
           f"[ -d {q} ] || {refuse(f'{root} is not a directory')}; "
           f"{{ [ -r {q} ] && [ -x {q} ]; }} || {refuse(f'cannot list {root}: Permission denied')}; "
           f"printf 'R\\0'; readlink -f -z -- {q}; "
           # -L: a symlink directly in the root, with the real path it leads to (`latest`)
           f"for l in {command(p)}/* {command(p)}/.[!.]*; do [ -L \"$l\" ] || continue; "
           f"printf 'L\\0%s\\0' \"${{l##*/}}\"; readlink -f -z -- \"$l\" || printf '\\0'; done; "
           f"timeout {READ_TIMEOUT_SECONDS} find {q} -mindepth 1 -maxdepth {int(depth)} "
           f"\\( -readable -printf 'E\\0r ' -o -printf 'E\\0- ' \\) -printf '%y %Y %s %T@\\0%P\\0%l\\0' 2>/dev/null "
           f"| head -c {64 * MAX_ENTRIES * 8}; true")
    res = run(cmd)
    if res.rc == CANNOT:
        raise ProbeError(one_line(res.stderr))
    if res.rc != 0:
        raise ProbeError(f"cannot list {root}: {one_line(res.stderr) or f'exit {res.rc}'}")
    fields = _out(res).split(b"\0")
    tree, i, n = Tree(str(root), str(root)), 0, len(fields)
    text = [f.decode("utf-8", "surrogateescape") for f in fields]
    while i < n:
        tag = text[i]
        if tag == "R" and i + 1 < n:
            tree.real_root, i = text[i + 1] or str(root), i + 2
        elif tag == "L" and i + 2 < n:
            tree.links[text[i + 1]], i = text[i + 2], i + 3
        elif tag == "E" and i + 3 < n:
            if len(tree.entries) >= MAX_ENTRIES:
                tree.cut = True
                break
            cols = text[i + 1].split()
            if len(cols) == 5 and cols[3].isdigit():
                with contextlib.suppress(ValueError):  # a line cut by the output cap
                    tree.entries[text[i + 2]] = Entry(text[i + 2], cols[1], cols[2], int(cols[3]), float(cols[4]),
                                                      cols[0] == "r", text[i + 3])
            i += 4
        else:
            i += 1
    return tree
