"""The security-incident gate's copy of the logs its checks read (runbook, Security Incident Response: "Preserve
evidence", `cp -r /var/log/acgs/ /var/log/acgs_incident_<time>/`), made without writing on any target.

>>> preserve(profile, run_dir / "evidence", run_id)
{'dir': 'evidence', 'copied_at': '2025-06-01T02:00:00Z', 'files': 9, 'bytes': 48213, 'cut': [], 'refused': [], ...}

Which files: what the gate's checks read, from the profile, on every host (sources()):
    SEC-03, SEC-06   paths.security_log, or every paths.logs/*.log
    CC-01, CC-02     each service's `log`, on the hosts with the service's role
    SYS-05           paths.kernel_log, or the output of `dmesg` (saved as `dmesg`)
    (MON-01)         paths.alerts_log: the runbook's copy of /var/log/acgs/ carries it too
(SEC-01, SEC-02, SEC-04, SEC-05, CC-05 read no log: a file tree's modes, secrets' modes, /etc/passwd, key ages and
the audit table. Secret and key files are never copied.)

Each file is read through its host's backend, read-only: a local file directly (its last bytes, pread), a remote
host's with `tail -c` over the testinfra connection. A file longer than evidence.max_file_mb keeps its tail, and the
copy stops at evidence.max_total_mb; MANIFEST names the cap for every file it cut. EVIDENCE_DIR/<host>/<path> holds
the copies; SHA256SUMS (`sha256sum -c SHA256SUMS` in EVIDENCE_DIR) covers them and MANIFEST.

Evidence is copied, never followed. A log that is a symlink, or not a regular file, is refused (and listed, with
why), never opened through the link: locally it is lstat'ed, opened with O_NOFOLLOW|O_NONBLOCK, and the opened file
must be the one looked at; remotely `[ -L ]` first, then one descriptor is opened, its identity checked the same way,
and `tail -c` reads that descriptor. A file that is one of the profile's secrets (security.secret_files,
security.keys[].path, every password, passphrase and identity file it names, and /etc/shadow and its kin) is refused
by what it is on that host, its device and inode and its real path (symlinks and `..` resolved there), whatever
name reached it: a hard link, a symlinked directory. Copies are 0600 in 0700 folders whatever the umask; each is
created by name under evidence/, one folder at a time, with O_NOFOLLOW and the file with O_EXCL, after its resolved
path was shown to lie under evidence/. A host name that cannot be a folder (`.`, `..`, empty, `/`) is refused.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import math
import os
import posixpath
import shlex
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from acgs_verify.errors import ProbeError
from acgs_verify.hosts.commands import glob_word
from acgs_verify.profile.model import Host, Profile
from acgs_verify.redact import cut, last_line, one_line, printable

EVIDENCE_DIR = "evidence"
MANIFEST = "MANIFEST"
SUMS = "SHA256SUMS"
DMESG = "dmesg"  # the pseudo path of dmesg's output
MB = 1024 * 1024
COMMAND_TIMEOUT_SECONDS = 120  # one remote command (a listing, one file's tail): `timeout` ends it on the host
# never copied, whatever the profile says: no log is one of these, so a log that is one was made to be copied
SYSTEM_SECRETS = ("/etc/shadow", "/etc/shadow-", "/etc/gshadow", "/etc/gshadow-")
SHOWN_MAX = 200  # of a name a target chose (a symlink's target), in a message


@dataclass
class Source:
    pattern: str  # a path or a glob, as the profile gives it; DMESG for the kernel ring buffer
    read_by: list[str] = field(default_factory=list)


def sources(profile: Profile, host: Host) -> list[Source]:
    """The logs the security-incident gate's checks read on `host`, in the order they are copied."""
    out: dict[str, Source] = {}

    def add(pattern: str | None, ids: str) -> None:
        if pattern:
            out.setdefault(pattern, Source(pattern)).read_by.append(ids)

    p = profile.paths
    add(p.security_log or f"{p.logs.rstrip('/')}/*.log", "SEC-03, SEC-06")
    for s in profile.services:
        if s.role in host.roles:
            add(s.log, f"CC-01, CC-02 ({s.name})")
    add(p.kernel_log or DMESG, "SYS-05")
    add(p.alerts_log, "MON-01")
    return list(out.values())


def secret_paths(profile: Profile) -> list[tuple[str, str]]:
    """(path, the field naming it) of every file evidence refuses to copy, on every host:
    [('/home/acgs/ACGS/config/production.env', 'security.secret_files[0]'), ..., ('/etc/shadow', ...)]"""
    out = [(p, f"security.secret_files[{i}]") for i, p in enumerate(profile.security.secret_files)]
    out += [(k.path, f"security.keys[{i}].path") for i, k in enumerate(profile.security.keys)]
    for kind in ("databases", "redis"):
        for item in getattr(profile, kind):
            for attr in ("password_file", "admin_password_file"):
                if getattr(item, attr, None):
                    out.append((getattr(item, attr), f"{kind}.{item.name}.{attr}"))
    for h in profile.hosts:
        for attr in ("identity_file", "identity_passphrase_file"):
            if getattr(h, attr):
                out.append((getattr(h, attr), f"hosts.{h.name}.{attr}"))
    out += [(p, "the system's password hashes") for p in SYSTEM_SECRETS]
    return out


class Refused(Exception):
    """A file evidence will not copy; str() is why, on one line."""


@dataclass
class Secrets:
    """The secret files of one host as they are there: 'dev:ino' and real path -> which secret, as a message says
    it: '/home/acgs/ACGS/config/production.env (security.secret_files[0])'."""

    ids: dict[str, str] = field(default_factory=dict)
    reals: dict[str, str] = field(default_factory=dict)

    def check(self, ident: str, real: str) -> None:
        named = self.ids.get(ident) or self.reals.get(real)
        if named:
            raise Refused(f"it is the secret {_shown(named)}: secrets are never copied, by any name")


@dataclass
class Copied:
    host: str
    path: str
    size: int  # of the source
    mtime: float
    copied: int
    copied_at: str
    sha256: str
    read_by: str
    cut: str = ""  # why only the tail was copied, naming the cap


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shown(text: str) -> str:
    """A name a target chose, as a message may quote it: control characters escaped, cut to SHOWN_MAX."""
    out = printable(text)
    return out if len(out) <= SHOWN_MAX else cut(out, SHOWN_MAX) + "..."


def _link(target: str) -> str:
    return f"a symlink (to {_shown(target)}): evidence never follows one; name the file itself"


RACE = "it changed between the look and the open (another file or a symlink put in its place): not copied"
KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
         (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _not_regular(mode: int) -> str:
    kind = next((name for test, name in KINDS if test(mode)), "not a plain file")
    return f"not a regular file ({kind})"


def _sh(script: str, *args: str) -> str:
    """`timeout 120 sh -c SCRIPT acgs-evidence ARGS...`, every word quoted: values reach the script as "$1"...,
    never as code; a read that hangs on the host (a FIFO put in a file's place after the look, a stale NFS
    mount) ends there."""
    argv = ("timeout", str(COMMAND_TIMEOUT_SECONDS), "sh", "-c", script, "acgs-evidence", *args)
    return " ".join(shlex.quote(a) for a in argv)


def _failed(result) -> str:
    if result.rc == 124:
        return f"no answer within {COMMAND_TIMEOUT_SECONDS} s"
    return last_line(result.stderr, default=f"exit {result.rc}")


# ------------------------------------------------------------------------------------------------ this machine
def _local_files(pattern: str) -> list[str]:
    paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    return [p for p in paths if os.path.lexists(p)]  # a dangling symlink too: it is refused, saying so


def _local_secrets(named: list[tuple[str, str]]) -> Secrets:
    out = Secrets()
    for path, field_name in named:
        p = os.path.expanduser(path)
        by = f"{os.path.realpath(p)} ({field_name})"
        out.reals.setdefault(os.path.normpath(os.path.abspath(p)), by)
        out.reals.setdefault(os.path.realpath(p), by)
        try:
            st = os.stat(p)  # followed: the profile names the secret, and a link there names the file it is
        except OSError:
            continue
        out.ids.setdefault(f"{st.st_dev}:{st.st_ino}", by)
    return out


def _fd_path(fd: int, path: str) -> str:
    """The real path of what fd is open on, from the kernel where it says (/proc), else resolved by name."""
    with contextlib.suppress(OSError):
        real = os.readlink(f"/proc/self/fd/{fd}")
        if real.startswith("/"):
            return real
    return os.path.realpath(path)


def _local_read(path: str, n: int, secrets: Secrets) -> tuple[bytes, int, float]:
    """The last n bytes of path, its size and mtime; Refused for a symlink, a non-regular file or a secret."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise Refused(_link(os.readlink(path)))
    if not stat.S_ISREG(st.st_mode):
        raise Refused(_not_regular(st.st_mode))
    try:
        # O_NONBLOCK: a FIFO put in its place since the lstat never blocks the copy
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused(RACE) from None
        raise
    try:
        opened = os.fstat(fd)
        if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(opened.st_mode):
            raise Refused(RACE)
        secrets.check(f"{opened.st_dev}:{opened.st_ino}", _fd_path(fd, path))
        size = opened.st_size
        chunks, pos = [], max(0, size - n)
        while pos < size:
            chunk = os.pread(fd, min(MB, size - pos), pos)
            if not chunk:
                break
            chunks.append(chunk)
            pos += len(chunk)
        return b"".join(chunks), size, opened.st_mtime
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------------ a remote host
# every path the profile names, on the host: its identity and real path ("-" where it has none), NUL-separated
_REMOTE_SECRETS = """for p do
  i=$(stat -L -c %d:%i -- "$p" 2>/dev/null) || i=-
  r=$(readlink -f -- "$p" 2>/dev/null) || r=-
  printf '%s\\0%s\\0' "$i" "$r"
done"""

# one file: refuse a symlink or non-regular file without opening it; open it once, check that the descriptor holds
# what was looked at and is no secret, then read its tail from that descriptor. The first NUL-terminated word says
# which: LINK <target>, GONE, TYPE <kind>, RACE, SECRET <the secret's identity>, or OK <dev:ino:size:mtime:kind>
# <real path> and the bytes.
_REMOTE_READ = """f=$1; n=$2; shift 2
if [ -L "$f" ]; then printf 'LINK\\0'; readlink -- "$f"; exit 0; fi
if [ ! -e "$f" ]; then printf 'GONE\\0'; exit 0; fi
if [ ! -f "$f" ]; then printf 'TYPE\\0'; stat -c %F -- "$f"; exit 0; fi
exec 3<"$f"
seen=$(stat -c %d:%i -- "$f") && got=$(stat -L -c %d:%i:%s:%Y:%F /dev/fd/3) || exit 3
case $got in "$seen":*) ;; *) printf 'RACE\\0'; exit 0;; esac
case $got in *:regular\\ file|*:regular\\ empty\\ file) ;; *) printf 'RACE\\0'; exit 0;; esac
real=$(readlink -f /dev/fd/3 2>/dev/null) || real=$(readlink -f -- "$f")
for r do case $r in "$seen"|"$real") printf 'SECRET\\0%s' "$r"; exit 0;; esac; done
printf 'OK\\0%s\\0%s\\0' "$got" "$real"
exec tail -c "$n" <&3"""


def _remote_files(conn, pattern: str) -> list[str]:
    script = f'for f in {glob_word(pattern)}; do if [ -L "$f" ] || [ -e "$f" ]; then printf \'%s\\0\' "$f"; fi; done'
    result = conn.run(_sh(script))
    if result.rc != 0:
        raise ProbeError(_failed(result))
    out = []
    for name in result.stdout_bytes.split(b"\0")[:-1]:
        out.append(name.decode("utf-8", errors="surrogateescape"))
    return out


def _remote_secrets(conn, named: list[tuple[str, str]]) -> Secrets:
    out = Secrets()
    result = conn.run(_sh(_REMOTE_SECRETS, *(p for p, _ in named)))
    words = result.stdout_bytes.split(b"\0")
    if result.rc != 0 or len(words) < 2 * len(named):
        raise ProbeError(f"cannot resolve its secret files: {_failed(result)}")
    for k, (path, field_name) in enumerate(named):
        ident, real = (w.decode("utf-8", errors="surrogateescape") for w in words[2 * k:2 * k + 2])
        by = f"{real if real not in ('-', '') else path} ({field_name})"
        out.reals.setdefault(posixpath.normpath(path), by)
        if ident != "-":
            out.ids.setdefault(ident, by)
        if real not in ("-", ""):
            out.reals.setdefault(real, by)
    return out


def _remote_read(conn, path: str, n: int, secrets: Secrets) -> tuple[bytes, int, float]:
    result = conn.run(_sh(_REMOTE_READ, path, str(n), *secrets.ids, *secrets.reals))
    if result.rc != 0:
        raise ProbeError(f"cannot read it: {_failed(result)}")
    tag, _, rest = result.stdout_bytes.partition(b"\0")
    text = rest.decode("utf-8", errors="replace").rstrip("\n")
    if tag == b"LINK":
        raise Refused(_link(text))
    if tag == b"GONE":
        raise ProbeError("gone before it could be read")
    if tag == b"TYPE":
        raise Refused(f"not a regular file ({text or 'unknown kind'})")
    if tag == b"RACE":
        raise Refused(RACE)
    if tag == b"SECRET":
        secrets.check(text, text)
        raise Refused("it is one of the secrets the profile names: secrets are never copied, by any name")
    if tag != b"OK":
        raise ProbeError(f"unexpected answer from the host ({_shown(tag[:40].decode('utf-8', 'replace'))})")
    got, real, data = rest.split(b"\0", 2)
    _, _, size, mtime, _ = (got.decode("ascii", errors="replace") + "::::").split(":", 4)
    secrets.check("-", real.decode("utf-8", errors="surrogateescape"))  # the host's own check, once more here
    data = data[-n:] if n else b""
    return data, int(size) if size.isdigit() else len(data), float(mtime) if mtime.isdigit() else 0.0


def _dmesg(conn) -> bytes:
    result = conn.run("dmesg")
    if result.rc != 0:
        raise ProbeError(f"dmesg: {one_line(result.stderr) or f'exit {result.rc}'}")
    return result.stdout_bytes


# ------------------------------------------------------------------------------------------------ evidence/
def _host_folder_problem(name: str) -> str | None:
    if name in ("", ".", "..") or "/" in name or "\0" in name or not name.isprintable():
        return ("its name cannot be a folder under evidence/ (empty, . or .., or holding / or a control "
                "character): its logs were not copied")
    return None


def _relative(host: str, path: str) -> str | None:
    """<host>/<path without its leading />; None for a name SHA256SUMS and MANIFEST cannot list as it is."""
    norm = posixpath.normpath(path).lstrip("/")
    parts = ["__" if part == ".." else part for part in norm.split("/")]
    if _host_folder_problem(host) or any(p in ("", ".") for p in parts):
        return None
    rel = "/".join([host, *parts])
    return None if "\\" in rel or not rel.isprintable() else rel


class EvidenceFolder:
    """evidence/, opened once: every copy is created below it by name, one folder at a time, never through a link.

    >>> folder = EvidenceFolder(run_dir / "evidence")   # OSError if it cannot be made, or is a symlink
    >>> folder.write("app-1/var/log/acgs/auth.log", data)  # 0600, in 0700 folders; OSError if it exists
    """

    def __init__(self, path: Path):
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        os.fchmod(self.fd, 0o700)  # the umask took bits from mkdir's mode; a folder made earlier gets it too
        self.root = _fd_path(self.fd, str(path))

    def write(self, rel: str, data: bytes, replace: bool = False) -> None:
        parts = rel.split("/")
        if any(p in ("", ".", "..") or "\0" in p for p in parts):
            raise OSError(errno.EINVAL, f"{rel!r} is not a path below evidence/")
        # the proof asked for before any write: resolved, the path lies under evidence/ (the walk below, by name
        # with O_NOFOLLOW, keeps it there even if a link appeared in between)
        where = os.path.realpath(os.path.join(self.root, rel))
        if not where.startswith(self.root.rstrip("/") + "/"):
            raise OSError(errno.EXDEV, f"{rel!r} resolves outside evidence/")
        dfd = os.dup(self.fd)
        try:
            for name in parts[:-1]:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, 0o700, dir_fd=dfd)
                nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
                os.close(dfd)
                dfd = nfd
                os.fchmod(dfd, 0o700)
            if replace:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(parts[-1], dir_fd=dfd)
            fd = os.open(parts[-1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                         dir_fd=dfd)
            try:
                os.fchmod(fd, 0o600)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
        finally:
            os.close(dfd)

    def close(self) -> None:
        os.close(self.fd)


def preserve(profile: Profile, evidence_dir: Path, run_id: str, pool=None) -> dict:
    """Copy the logs of sources() from every host into evidence_dir; write MANIFEST and SHA256SUMS; return what
    was done (for result.extra["evidence"]). A host that cannot be reached, or a file that cannot be read, is
    listed under not_copied with the reason; a file refused (a symlink, not a regular file, a secret) is listed
    under refused and not_copied, one line each with why; nothing is ever written on a host."""
    from acgs_verify.hosts.pool import HostPool

    file_cap, total_cap = int(profile.evidence.max_file_mb * MB), int(profile.evidence.max_total_mb * MB)
    started = _now()
    try:
        folder = EvidenceFolder(evidence_dir)
    except OSError as exc:
        reason = f"{EVIDENCE_DIR}/: cannot be made here ({exc.strerror or exc}): nothing was copied"
        return {"dir": EVIDENCE_DIR, "copied_at": started, "files": 0, "bytes": 0, "hosts": [],
                "max_file_bytes": file_cap, "max_total_bytes": total_cap, "cut": [], "refused": [],
                "not_copied": [reason]}
    own_pool = pool is None
    if own_pool:
        passphrases = {h.name: profile.secret(f"hosts.{h.name}") for h in profile.hosts}
        pool = HostPool(connect_timeout=profile.thresholds.connect_timeout_seconds, inventory=profile.inventory,
                        passphrases=passphrases)
    named = secret_paths(profile)
    copied: list[Copied] = []
    seen: dict[tuple[str, str], Copied] = {}  # a service log that logs/*.log names too is copied once
    not_copied: list[str] = []
    refused: list[str] = []
    left = total_cap
    try:
        for host in profile.hosts:
            problem = _host_folder_problem(host.name)
            if problem:
                not_copied.append(f"host {_shown(host.name)!r}: {problem}")
                continue
            try:
                conn = pool.get(host)
            except ProbeError as exc:
                not_copied.append(f"{host.name}: every log: {exc}")
                continue
            local = host.backend == "local"
            try:
                secrets = _local_secrets(named) if local else _remote_secrets(conn, named)
            except Exception as exc:  # testinfra raises backend-specific errors; without this list, copy nothing
                not_copied.append(f"{host.name}: every log: {one_line(exc)}")
                continue
            for src in sources(profile, host):
                read_by = "; ".join(src.read_by)
                if src.pattern == DMESG:
                    files = [DMESG]
                else:
                    try:
                        files = _local_files(src.pattern) if local else _remote_files(conn, src.pattern)
                    except Exception as exc:  # testinfra raises backend-specific errors; all mean the same here
                        not_copied.append(f"{host.name}:{_shown(src.pattern)}: cannot list ({one_line(exc)})")
                        continue
                    if not files:
                        not_copied.append(f"{host.name}:{_shown(src.pattern)}: no readable file (read by {read_by})")
                for path in files:
                    if (host.name, path) in seen:
                        seen[(host.name, path)].read_by += f"; {read_by}"
                        continue
                    rel = _relative(host.name, path)
                    if rel is None:
                        not_copied.append(f"{host.name}:{_shown(path)}: a name SHA256SUMS cannot list (a control "
                                          "character, a backslash, or no file name)")
                        continue
                    if left <= 0:
                        not_copied.append(f"{host.name}:{path}: the total cap of {_mb(total_cap)} was reached")
                        continue
                    n = min(file_cap, left)
                    when = _now()
                    try:
                        if path == DMESG:
                            data = _dmesg(conn)
                            size, mtime = len(data), 0.0
                            data = data[-n:]
                        elif local:
                            data, size, mtime = _local_read(path, n, secrets)
                        else:
                            data, size, mtime = _remote_read(conn, path, n, secrets)
                    except Refused as exc:
                        line = f"{host.name}:{path}: refused: {exc}"
                        refused.append(line)
                        not_copied.append(line)
                        continue
                    except (OSError, ProbeError) as exc:
                        not_copied.append(f"{host.name}:{path}: {one_line(exc)}")
                        continue
                    except Exception as exc:  # an ssh connection lost half-way
                        not_copied.append(f"{host.name}:{path}: {type(exc).__name__}: {one_line(exc)}")
                        continue
                    size = max(size, len(data))  # a log that grew between stat and tail
                    cut = ""
                    if len(data) < size:
                        cap = (f"the cap per file, {_mb(file_cap)}" if n == file_cap
                               else f"the total cap, {_mb(total_cap)}")
                        cut = f"cut to its last {len(data)} of {size} bytes by {cap}"
                    try:
                        folder.write(rel, data)
                    except OSError as exc:
                        not_copied.append(f"{host.name}:{path}: its copy cannot be written as {EVIDENCE_DIR}/{rel} "
                                          f"({exc.strerror or exc})")
                        continue
                    left -= len(data)
                    copied.append(Copied(host.name, path, size, mtime, len(data), when,
                                         hashlib.sha256(data).hexdigest(), read_by, cut))
                    seen[(host.name, path)] = copied[-1]
        _write_manifest(folder, run_id, profile, started, file_cap, total_cap, copied, not_copied)
    finally:
        folder.close()
        if own_pool:
            pool.close()
    return {"dir": EVIDENCE_DIR, "copied_at": started, "files": len(copied), "bytes": sum(c.copied for c in copied),
            "hosts": sorted({c.host for c in copied}), "max_file_bytes": file_cap, "max_total_bytes": total_cap,
            "cut": [f"{c.host}:{c.path}: {c.cut}" for c in copied if c.cut], "refused": refused,
            "not_copied": not_copied}


def _mb(n: int) -> str:
    """A cap as the profile gave it (max_file_mb: 0.001 is 1048 bytes): '0.001 MB'."""
    return f"{math.ceil(n / MB * 1e6) / 1e6:g} MB"


def _write_manifest(folder: EvidenceFolder, run_id: str, profile: Profile, started: str, file_cap: int, total_cap: int,
                    copied: list[Copied], not_copied: list[str]) -> None:
    lines = [
        f"# acgs-verify security-incident evidence, run {run_id}, profile {profile.name}",
        f"copied_at: {started} (UTC; each file's own time below)",
        "read-only: the hosts' files were read, nothing was written on any host",
        f"caps: {_mb(file_cap)} per file (a longer file keeps its last {_mb(file_cap)}), {_mb(total_cap)} in all",
        "verify: cd evidence && sha256sum -c SHA256SUMS",
        "",
        "# host\tpath\tsource bytes\tsource mtime (UTC)\tbytes copied\tcopied at (UTC)\tsha256\tread by\tcut",
    ]
    for c in copied:
        mtime = datetime.fromtimestamp(c.mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if c.mtime else "-"
        lines.append("\t".join([c.host, c.path, str(c.size), mtime, str(c.copied), c.copied_at, c.sha256,
                                c.read_by, c.cut or "complete"]))
    if not_copied:
        lines += ["", "# not copied"] + [f"- {x}" for x in not_copied]
    manifest = "\n".join(lines) + "\n"
    folder.write(MANIFEST, manifest.encode(), replace=True)
    sums = [f"{hashlib.sha256(manifest.encode()).hexdigest()}  {MANIFEST}"]
    sums += [f"{c.sha256}  {_relative(c.host, c.path)}" for c in copied]
    folder.write(SUMS, ("\n".join(sums) + "\n").encode(), replace=True)
