"""Security facts of a host: world-writable files, file modes and ages, accounts, and what the logs say.

>>> world_writable(node, "/home/acgs/ACGS")            # find -type f -perm /o+w, bounded in time
WorldWritable(count=1, first=['/home/acgs/ACGS/config/policies/p.yaml'], timed_out=False)
>>> file_stats(node, ["/home/acgs/ACGS/config/production.env"])
{'/home/acgs/ACGS/config/production.env': FileStat(mode=0o600, owner='acgs', mtime=1736650000)}
>>> accounts(node, "/etc/passwd")
['root', 'daemon', 'acgs', 'postgres']
>>> security_lines(node, ["/var/log/acgs/*.log"], 5000)   # one grep over the tails of every log
[('/var/log/acgs/auth_service.log', '2025-01-12 ... - WARNING - Failed login for user admin from 10.0.0.9')]
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from datetime import datetime

from acgs_verify.check import ProbeError

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


def world_writable(node, root: str, timeout: int = FIND_TIMEOUT_SECONDS) -> WorldWritable:
    """find ROOT -type f -perm /o+w: the first FIRST_PATHS paths and how many there are, within `timeout`."""
    q = shlex.quote(root)
    cmd = (f"test -d {q} || {{ echo 'no such directory: {root}' >&2; exit 3; }}; "
           f"{{ timeout {int(timeout)} find {q} -type f -perm /o+w -print 2>/dev/null; echo \"@@rc $?\"; }} "
           f"| awk '/^@@rc /{{rc=$2; next}} {{n++; if (n <= {FIRST_PATHS}) print}} END {{print \"@@count \" n+0; "
           f"print \"@@rc \" rc}}'")
    result = node.run(cmd)
    if result.rc != 0:
        raise ProbeError(result.stderr.strip()[:200] or f"find under {root} failed (exit {result.rc})")
    first, count, rc = [], 0, 0
    for line in result.stdout.splitlines():
        if line.startswith("@@count "):
            count = int(line.split()[1])
        elif line.startswith("@@rc "):
            rc = int(line.split()[1] or 0)
        elif line:
            first.append(line)
    return WorldWritable(count, first, timed_out=rc == 124)


@dataclass(frozen=True)
class FileStat:
    mode: int
    owner: str
    mtime: int


def file_stats(node, paths: list[str]) -> dict[str, FileStat | None]:
    """`stat -c '%a %U %Y'` of every path in one command; None for a path that does not exist."""
    if not paths:
        return {}
    loop = " ".join(shlex.quote(p) for p in paths)
    cmd = f"for f in {loop}; do stat -c '%a %U %Y' -- \"$f\" 2>/dev/null || echo missing; done"
    lines = node.check_output(cmd).splitlines()
    if len(lines) != len(paths):
        raise ProbeError(f"stat printed {len(lines)} lines for {len(paths)} files")
    out: dict[str, FileStat | None] = {}
    for path, line in zip(paths, lines, strict=True):
        cols = line.split()
        out[path] = FileStat(int(cols[0], 8), cols[1], int(cols[2])) if len(cols) == 3 else None
    return out


def read_small_file(node, path: str, limit: int = 4096) -> str:
    """The start of a small file (a rotation record): head -c LIMIT."""
    result = node.run("head -c %s -- %s", str(limit), path)
    if result.rc != 0:
        raise ProbeError(f"cannot read {path}: {result.stderr.strip()[:150]}")
    return result.stdout


def rotation_time(text: str) -> datetime:
    """A rotation record holds an ISO 8601 timestamp (its first line), e.g. `2025-01-05T03:00:00Z`."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    try:
        return datetime.fromisoformat(first.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ProbeError(f"rotation record does not start with an ISO 8601 time: {first[:60]!r}") from None


def accounts(node, passwd: str) -> list[str]:
    """cut -d: -f1 /etc/passwd"""
    result = node.run("cut -d: -f1 -- %s", passwd)
    if result.rc != 0:
        raise ProbeError(f"cannot read {passwd}: {result.stderr.strip()[:150]}")
    return [name for name in result.stdout.split() if name and not name.startswith("#")]


def security_lines(node, patterns: list[str], n: int) -> list[tuple[str, str]]:
    """(log, line) for every line naming a failed login, unauthorized access or a breach, in the last n lines
    of each log the glob patterns name: the runbook's `grep -i "failed login\\|unauthorized\\|breach"`."""
    globs = " ".join(_glob_quote(p) for p in patterns)
    cmd = (f"for f in {globs}; do [ -f \"$f\" ] || continue; tail -n {int(n)} -- \"$f\" | "
           f"grep -i -E '{_GREP}' | head -n {MAX_MATCHES_PER_LOG} | awk -v f=\"$f\" '{{print f \"\\t\" $0}}'; done")
    result = node.run(cmd)
    if result.rc != 0:
        raise ProbeError(f"cannot read the logs {' '.join(patterns)}: {result.stderr.strip()[:150]}")
    out = []
    for line in result.stdout.splitlines():
        log, sep, text = line.partition("\t")
        if sep:
            out.append((log, text))
    return out


def _glob_quote(pattern: str) -> str:
    """Quote a path for the shell but leave its glob characters live: /var/log/acgs/*.log."""
    return "".join(c if c in "*?[]" else shlex.quote(c) if not c.isalnum() and c not in "/._-" else c
                   for c in pattern)
