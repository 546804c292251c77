"""Security facts of a host: world-writable files, file modes and ages, accounts, and what the logs say.

Each is read once per host per run through the pool (`read_*(conn, ...)` is the measurement on a testinfra host):
>>> world_writable(pool, host, "/home/acgs/ACGS")            # find -type f -perm /o+w, bounded in time
WorldWritable(count=1, first=['/home/acgs/ACGS/config/policies/p.yaml'], timed_out=False, files=412, ...)
>>> file_stats(pool, host, ["/home/acgs/ACGS/config/production.env"])
{'/home/acgs/ACGS/config/production.env': FileStat(mode=0o600, owner='acgs', mtime=1736650000)}
>>> accounts(pool, host, "/etc/passwd")
['root', 'daemon', 'acgs', 'postgres']
>>> security_lines(pool, host, ["/var/log/acgs/*.log"], 5000)   # one grep over the tails of every log
[('/var/log/acgs/auth_service.log', '2025-01-12 ... - WARNING - Failed login for user admin from 10.0.0.9')]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from acgs_verify.errors import ProbeError
from acgs_verify.hosts.commands import command, glob_word, operand, refuse, refused
from acgs_verify.probes.logs import tail_command
from acgs_verify.redact import one_line
from acgs_verify.words import plural

if TYPE_CHECKING:
    from acgs_verify.hosts.pool import HostPool
    from acgs_verify.profile import Host

FIND_TIMEOUT_SECONDS = 30  # a runaway tree (millions of files, a hung NFS mount) must not stall the run
FIRST_PATHS = 20
# the runbook greps `failed login\|unauthorized` (Regular Security Tasks) and `breach` (Incident Response)
FAILED_LOGIN = re.compile(r"failed login|login failed|authentication failed|unauthori[sz]ed", re.IGNORECASE)
BREACH = re.compile(r"breach|intrusion", re.IGNORECASE)
_GREP = "failed login|login failed|authentication failed|unauthori[sz]ed|breach|intrusion"
MAX_MATCHES_PER_LOG = 1000


@dataclass(frozen=True)
class WorldWritable:
    count: int
    first: list[str]
    timed_out: bool
    files: int = 0  # regular files examined: "0 world-writable" means something only over files seen
    unreadable: tuple[str, ...] = ()  # directories find could not read (first FIRST_PATHS)


def world_writable(pool: HostPool, host: Host, root: str) -> WorldWritable:
    """read_world_writable under `root` on `host`, once per run."""
    return pool.measure(host, "world-writable", read_world_writable, root)


def read_world_writable(conn, root: str, timeout: int = FIND_TIMEOUT_SECONDS) -> WorldWritable:
    """find ROOT -type f -perm /o+w: the first FIRST_PATHS paths and how many there are, within `timeout`, with
    how many files were examined and which directories could not be read. ProbeError when ROOT is not a
    directory or cannot be read."""
    path = operand(root)  # find takes no `--`: a root of `-delete` must be a directory, not an action
    # find's errors go straight out on fd 3 (before awk's END, which waits for find to finish), its findings
    # through awk, which prints the first paths and the counts
    cmd = (f"{command('test', '-d', path)} || {refuse(f'no such directory: {root}')}; "
           f"{{ {command('test', '-r', path)} && {command('test', '-x', path)}; }} || "
           f"{refuse(f'cannot read directory {root}: permission denied')}; "
           f"{{ {{ timeout {int(timeout)} {command('find', path)} -type f "
           f"\\( -perm /o+w -printf 'W %p\\n' -o -printf 'F\\n' \\) 2>&3; echo \"@@rc $?\"; }} "
           f"| awk '/^@@rc /{{rc=$2; next}} {{files++}} /^W /{{n++; if (n <= {FIRST_PATHS}) print substr($0, 3)}} "
           f"END {{print \"@@count \" n+0; print \"@@files \" files+0; print \"@@rc \" rc}}'; }} 3>&1")
    result = conn.run(cmd)
    why = refused(result) or (f"find under {root} failed (exit {result.rc})" if result.rc else None)
    if why:
        raise ProbeError(why)
    first, count, files, rc, unreadable = [], 0, 0, 0, []
    for line in result.stdout.splitlines():
        if line.startswith("@@count "):
            count = int(line.split()[1])
        elif line.startswith("@@files "):
            files = int(line.split()[1])
        elif line.startswith("@@rc "):
            rc = int(line.split()[1] or 0)
        elif line.startswith("find: "):
            if len(unreadable) < FIRST_PATHS:
                unreadable.append(line[len("find: "):].strip())
        elif line:
            first.append(line)
    return WorldWritable(count, first, timed_out=rc == 124, files=files, unreadable=tuple(unreadable))


@dataclass(frozen=True)
class FileStat:
    """A file's mode, owner and mtime. A path the profile names that is a symlink is followed (its author named
    it): the values are of the file it reaches, `target` that file's real path; a link to nothing is `dangling`
    (`target` then what the link says, and no mode, owner or mtime)."""

    mode: int
    owner: str
    mtime: int
    target: str | None = None
    dangling: bool = False


def file_stats(pool: HostPool, host: Host, paths: list[str]) -> dict[str, FileStat | None]:
    """read_file_stats of `paths` on `host`, once per run for the same paths."""
    return pool.measure(host, "file stats", read_file_stats, list(paths))


# One line per path: `MODE OWNER MTIME`, `MODE OWNER MTIME -> REAL PATH` for a symlink (stat -L: the file it
# reaches, whose mode is what guards the secret; stat of the link itself always says 0777), `dangling TARGET` for a
# link to nothing, `missing` otherwise. A line break in a path read from the host is printed as a space, so that
# each path stays one line.
_STAT = ("for f in {loop}; do "
         "if [ -L \"$f\" ]; then "
         "if t=$(LC_ALL=C stat -L -c '%a %U %Y' -- \"$f\" 2>&1); then "
         "printf '%s -> ' \"$t\"; readlink -f -- \"$f\" | tr '\\n' ' '; echo; "
         "else case $t in *'No such file'*) printf 'dangling ';; *) printf 'missing ';; esac; "
         "readlink -- \"$f\" | tr '\\n' ' '; echo; fi; "
         "else stat -c '%a %U %Y' -- \"$f\" 2>/dev/null || echo missing; fi; done")


def read_file_stats(conn, paths: list[str]) -> dict[str, FileStat | None]:
    """The mode, owner and mtime of every path in one command (a symlink followed: FileStat); None for a path that
    does not exist or cannot be reached."""
    if not paths:
        return {}
    lines = conn.check_output(_STAT.format(loop=command(*(operand(p) for p in paths)))).splitlines()
    if len(lines) != len(paths):
        raise ProbeError(f"stat printed {plural(len(lines), 'line')} for {plural(len(paths), 'file')}")
    out: dict[str, FileStat | None] = {}
    for path, line in zip(paths, lines, strict=True):
        if line.startswith("dangling "):
            out[path] = FileStat(0, "", 0, target=line[len("dangling "):].rstrip(" "), dangling=True)
            continue
        head, link, target = line.partition(" -> ")
        cols = head.split()
        out[path] = (FileStat(int(cols[0], 8), cols[1], int(cols[2]), target=target.rstrip(" ") if link else None)
                     if len(cols) == 3 and not line.startswith("missing") else None)
    return out


def small_file(pool: HostPool, host: Host, path: str) -> str:
    """read_small_file of `path` on `host`, once per run (SEC-05's rotation record)."""
    return pool.measure(host, f"record {path}", read_small_file, path)


def read_small_file(conn, path: str, limit: int = 4096) -> str:
    """A small file (a rotation record), read as every file a check reads on a host is (probes/hostfiles.py): a
    regular file only, at most `limit` bytes, never waiting on a FIFO; NotReadable (a ProbeError) otherwise."""
    from acgs_verify.probes.hostfiles import read_bytes

    return read_bytes(conn.run, path, limit).decode("utf-8", "replace")


def rotation_time(text: str) -> datetime:
    """A rotation record holds an ISO 8601 timestamp (its first line), e.g. `2025-01-05T03:00:00Z`."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    try:
        return datetime.fromisoformat(first.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ProbeError(f"rotation record does not start with an ISO 8601 time: {first[:60]!r}") from None


def accounts(pool: HostPool, host: Host, passwd: str) -> list[str]:
    """read_accounts of the passwd file on `host`, once per run."""
    return pool.measure(host, "accounts", read_accounts, passwd)


def read_accounts(conn, passwd: str) -> list[str]:
    """cut -d: -f1 /etc/passwd; ProbeError when the file cannot be read or names no account (an empty list
    would otherwise pass as "no unknown accounts")."""
    text = _stdout(conn, f"cannot read {passwd}", command("cut", "-d:", "-f1", "--", operand(passwd)))
    names = [name for name in text.split() if name and not name.startswith("#")]
    if not names:
        raise ProbeError(f"{passwd} names no account (empty file?): nothing to compare with the allow-list")
    return names


def security_lines(pool: HostPool, host: Host, patterns: list[str], n: int) -> list[tuple[str, str]]:
    """read_security_lines on `host`, once per run: SEC-03 and SEC-06 share one grep."""
    return pool.measure(host, "security lines", read_security_lines, list(patterns), n)


def read_security_lines(conn, patterns: list[str], n: int) -> list[tuple[str, str]]:
    """(log, line) for every line naming a failed login, unauthorized access or a breach, in the last n lines
    of each log the glob patterns name: the runbook's `grep -i "failed login\\|unauthorized\\|breach"`.

    "Nothing found" counts only when something was read: ProbeError when no log matches the patterns, when a
    matching log cannot be read, or when the logs hold no line at all (0 indicators in 0 lines is no evidence).
    """
    globs = " ".join(glob_word(p) for p in patterns)
    # awk rather than grep: the same pass counts the lines read, which is the evidence a "0 found" rests on. A
    # file name is data too: awk takes it from the environment (-v would read its backslashes as escapes), and a
    # tab or line break in it becomes `?`, so that no file name can write a line of this output
    tail = tail_command('"$f"', n)  # by bytes, then lines: awk never holds a log of one endless line
    cmd = (f"for f in {globs}; do [ -f \"$f\" ] || continue; "
           f"if [ ! -r \"$f\" ]; then printf '@@unreadable\\t'; printf '%s' \"$f\" | tr '\\t\\n' '??'; echo; "
           f"continue; fi; "
           f"{tail} | ACGS_LOG=\"$f\" awk 'BEGIN {{ f = ENVIRON[\"ACGS_LOG\"]; "
           f"gsub(/[[:cntrl:]]/, \"?\", f) }} {{n++}} tolower($0) ~ /{_GREP}/ "
           f"{{ if (m++ < {MAX_MATCHES_PER_LOG}) print f \"\\t\" $0 }} "
           f"END {{ print \"@@read\\t\" f \"\\t\" n+0 }}'; done")
    out, read, unreadable = [], {}, []
    for line in _stdout(conn, f"cannot read the logs {' '.join(patterns)}", cmd).splitlines():
        log, sep, text = line.partition("\t")
        if log == "@@unreadable":
            unreadable.append(text)
        elif log == "@@read":
            path, _, count = text.rpartition("\t")
            read[path] = int(count or 0)
        elif sep:
            out.append((log, text))
    if unreadable:
        raise ProbeError(f"cannot read {', '.join(unreadable[:5])} (permission denied for this user): "
                         "its lines cannot be searched")
    if not read:
        raise ProbeError(f"no log file matches {' '.join(patterns)}: nothing to search")
    if not sum(read.values()):
        raise ProbeError(f"{len(read)} log(s) matching {' '.join(patterns)} hold no lines: nothing to search")
    return out


def _stdout(conn, cannot: str, cmd: str) -> str:
    """What `cmd` printed; ProbeError "CANNOT: <its stderr>" when it exits non-zero."""
    result = conn.run(cmd)
    if result.rc != 0:
        raise ProbeError(f"{cannot}: {one_line(result.stderr)}")
    return result.stdout
