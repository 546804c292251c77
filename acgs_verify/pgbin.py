"""Where PostgreSQL's programs are, for the probes (psql, pg_restore) and the sandbox (initdb, pg_ctl, ...).

Only the standard library: no pytest, no probes, no sandbox. Both callers keep their own error type, so each
function here raises LookupError with the one line the caller passes on.

>>> tool("pg_restore")                           # PATH, then the newest /usr/lib/postgresql/*/bin
'/usr/lib/postgresql/15/bin/pg_restore'
>>> tool("psql", "/opt/pg/bin")                  # only there, or LookupError
>>> server_bindir()                              # pg_config's bindir if it has initdb, pg_ctl, pg_basebackup
'/usr/lib/postgresql/15/bin'
"""

from __future__ import annotations

import contextlib
import glob
import re
import shutil
import subprocess
from pathlib import Path

SERVER_TOOLS = ("initdb", "pg_ctl", "pg_basebackup")


def debian_bindirs() -> list[str]:
    """/usr/lib/postgresql/*/bin, the newest major version first."""
    return sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: [int(x) for x in re.findall(r"\d+", p)],
                  reverse=True)


def tool(name: str, bindir: str | None = None) -> str:
    """The path of a PostgreSQL client tool: in `bindir` when given, else on PATH, else the newest Debian install."""
    if bindir:
        candidate = Path(bindir) / name
        if candidate.is_file():
            return str(candidate)
        raise LookupError(f"{name} not found in backups.pg_bindir {bindir}")
    found = shutil.which(name)
    if found:
        return found
    for d in debian_bindirs():
        if Path(d, name).is_file():
            return str(Path(d, name))
    raise LookupError(f"{name} not found (install postgresql-client, or set backups.pg_bindir)")


def server_bindir() -> str:
    """The directory holding initdb, pg_ctl and pg_basebackup: pg_config's bindir, the newest Debian install, or
    initdb's directory on PATH; LookupError when none has all three."""
    candidates = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, timeout=10)
        candidates.append(out.stdout.strip())
    candidates += debian_bindirs()
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).parent))
    for bindir in candidates:
        if bindir and all(Path(bindir, t).is_file() for t in SERVER_TOOLS):
            return bindir
    raise LookupError("PostgreSQL server binaries not found (initdb, pg_ctl, pg_basebackup); "
                      "install them: apt-get install postgresql")


# psql learned \restrict in 18.0 and in the minor releases of August 2025 (CVE-2025-8714): 17.6, 16.10, 15.14,
# 14.19, 13.22. Asked of the binary itself (`--help=commands`), so a backport a distribution made is seen too.
_restrict_seen: dict[str, bool] = {}


def has_restrict(psql: str) -> bool:
    """Whether this psql has `\\restrict KEY` (every later meta-command refused): `has_restrict("/usr/bin/psql")`.
    False when it does not say so within 10 s (then the caller must not trust its input to psql)."""
    if psql not in _restrict_seen:
        try:
            out = subprocess.run([psql, "--help=commands"], capture_output=True, timeout=10, stdin=subprocess.DEVNULL,
                                 env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})
            _restrict_seen[psql] = out.returncode == 0 and b"\\restrict" in out.stdout
        except (OSError, subprocess.SubprocessError):
            _restrict_seen[psql] = False
    return _restrict_seen[psql]
