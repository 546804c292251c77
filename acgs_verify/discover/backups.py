"""The backup root: the runbook's default, the folders of the usual backup places, and the `BACKUP_DIR=` that a
backup script names where a crontab line or a systemd timer's service runs it. Scripts and crontabs are read with
a size cap, as text, never run; only an absolute path written literally is taken.

>>> find_backups(reader)             # reader.found.paths["backups"]
>>> reader.found.paths["backups"].evidence
['BACKUP_DIR in /opt/acgs/backup.sh (run by /etc/cron.d/acgs line 3): 7 dated backup folders, newest 20261207']
"""

from __future__ import annotations

import base64
import re
import shlex
from pathlib import PurePosixPath

from acgs_verify.discover.reader import HostReader
from acgs_verify.hosts.commands import command, operand

BACKUPS = "/var/backups/acgs"
DATED = re.compile(r"^\d{8}(_\d{6})?$|^\d{4}-\d{2}-\d{2}(T\d{6})?$")
CRON_FILES = ("/etc/crontab",)
CRON_DIRS = ("/etc/cron.d", "/var/spool/cron/crontabs", "/var/spool/cron")
RUN_PARTS = ("/etc/cron.hourly", "/etc/cron.daily", "/etc/cron.weekly", "/etc/cron.monthly")  # scripts run as they are
UNIT_DIRS = ("/etc/systemd/system", "/lib/systemd/system", "/usr/lib/systemd/system")
READ_CAP = 65536  # bytes of one crontab, unit or script: a backup script is short
MAX_FILES = 200  # crontabs and timers read at most: a host with more is not read further
# BACKUP_DIR=/x, export BACKUP_DIR="/x", BACKUP_DIR=${BACKUP_DIR:-/x}: a literal absolute path, nothing expanded
_ASSIGN = re.compile(r"""^\s*(?:export\s+|readonly\s+|declare\s+(?:-x\s+)?)?BACKUP_DIR=(?:\$\{BACKUP_DIR:?-)?["']?"""
                     r"""(/[A-Za-z0-9_./@+-]*)["']?\}?\s*(?:[;#].*)?$""", re.M)
_ENV_ASSIGN = re.compile(r"""(?:^|\s)["']?BACKUP_DIR=["']?(/[A-Za-z0-9_./@+-]*)""")
_CRON_TIME = re.compile(r"^\s*(@\w+|(?:\S+\s+){5})")


def find_backups(reader: HostReader) -> None:
    found, prefix = reader.found, reader.prefix
    named = scheduled_backup_dirs(reader)
    candidates: list[tuple[str, str]] = [(d, why) for d, why in named]
    candidates += [(d, "the runbook's backup root" + (f" under {prefix}" if prefix else ""))
                   for d in ([prefix + BACKUPS] if prefix else []) + [BACKUPS]]
    # the folders of the usual backup places, a symlink to a folder included (as `ls -d DIR/*/` lists them)
    candidates += [(d, "a folder of the usual backup places") for d in sorted(reader.names(
        "find", "-H", "/var/backups", "/backup", "/backups", "/srv/backups", "-mindepth", 1, "-maxdepth", 1, "(",
        "-type", "d", "-o", "-xtype", "d", ")", "-print0"))]
    seen = set()
    for d, why in candidates:
        if d in seen:
            continue
        seen.add(d)
        dated = [x for x in reader.names("find", "-H", operand(d), "-mindepth", 1, "-maxdepth", 1, "-printf",
                                         "%f\\0") if DATED.fullmatch(x)]
        if dated:
            found.set_path("backups", d, f"{why}: {len(dated)} dated backup folders, newest {max(dated)}")
            return
    shown = ", ".join(list(dict.fromkeys(d for d, _ in candidates))[:4])
    found.todos.append(f"paths.backups: no directory of dated backups in {shown}")


def scheduled_backup_dirs(reader: HostReader) -> list[tuple[str, str]]:
    """(BACKUP_DIR, why) from the scripts that crontab lines and systemd timers run, in the order found."""
    out: list[tuple[str, str]] = []
    roots = [reader.prefix] if reader.prefix else []
    roots.append("")
    for root in dict.fromkeys(roots):
        crontabs = [root + f for f in CRON_FILES] + [f for d in CRON_DIRS for f in _files(reader, root + d, "*")]
        for tab in crontabs[:MAX_FILES]:
            text = _read(reader, tab)
            for n, line in enumerate(text.splitlines(), 1):
                for d, script in _cron_line_dirs(reader, line, system=not tab.startswith(root + "/var/spool")):
                    out.append((d, f"BACKUP_DIR in {script} (run by {tab} line {n})"))
        for d in RUN_PARTS:
            for script in _files(reader, root + d, "*"):
                out += [(x, f"BACKUP_DIR in {script} (run by run-parts from {root + d})")
                        for x in _ASSIGN.findall(_read(reader, script))]
        timers = [f for d in UNIT_DIRS for f in _files(reader, root + d, "*.timer")]
        for timer in timers[:MAX_FILES]:
            unit = _unit_key(_read(reader, timer), "Unit") or PurePosixPath(timer).stem + ".service"
            service = f"{PurePosixPath(timer).parent}/{PurePosixPath(unit).name}"
            text = _read(reader, service)
            for value in _unit_values(text, "Environment"):
                for d in _ENV_ASSIGN.findall(value):
                    out.append((d, f"BACKUP_DIR in Environment= of {service} (run by {timer})"))
            for value in _unit_values(text, "ExecStart"):
                for d, script in _command_dirs(reader, value):
                    out.append((d, f"BACKUP_DIR in {script} (ExecStart of {service}, run by {timer})"))
    return out


def _cron_line_dirs(reader: HostReader, line: str, system: bool) -> list[tuple[str, str]]:
    if not line.strip() or line.lstrip().startswith("#") or re.match(r"^\s*\w+\s*=", line):
        return []
    m = _CRON_TIME.match(line)
    if not m:
        return []
    rest = line[m.end():]
    if system:  # /etc/crontab and /etc/cron.d name the user before the command
        rest = rest.split(None, 1)[1] if len(rest.split(None, 1)) == 2 else ""
    return _command_dirs(reader, rest)


def _command_dirs(reader: HostReader, command: str) -> list[tuple[str, str]]:
    """BACKUP_DIR set on the command line itself (`BACKUP_DIR=/x /opt/backup.sh`) or in a script it names."""
    out = [(d, "the command line") for d in _ENV_ASSIGN.findall(command)]
    try:
        words = shlex.split(command, comments=True)
    except ValueError:
        words = command.split()
    for word in words[:16]:
        word = word.lstrip("-@!+:")  # systemd's ExecStart prefixes
        if word.startswith("/") and not word.endswith("/") and word.count("/") > 1:
            text = _read(reader, word)
            out += [(d, word) for d in _ASSIGN.findall(text)]
    return out


def _files(reader: HostReader, folder: str, pattern: str) -> list[str]:
    """Regular files directly in `folder` whose name matches `pattern`, sorted; symlinks are not followed."""
    return sorted(reader.names("find", operand(folder), "-mindepth", 1, "-maxdepth", 1, "-type", "f", "-name",
                               pattern, "-print0", sudo=True))[:MAX_FILES]


def _read(reader: HostReader, path: str) -> str:
    """The first READ_CAP bytes of a regular file (not a symlink, a FIFO or a device), as text; '' otherwise."""
    rc, kind = reader.sh("find", operand(path), "-maxdepth", 0, "-type", "f", "-printf", "f", sudo=True)
    if rc != 0 or kind != "f":
        return ""
    # through base64: a binary (an ExecStart that is no script) or bytes that are not UTF-8 must not reach a
    # decoder that raises; what comes back is decoded here with replacement
    res = reader.conn.run(command(*reader.sudo, "head", "-c", READ_CAP, "--", operand(path)) + " | base64 -w0")
    try:
        data = base64.b64decode(res.stdout.strip(), validate=True)
    except ValueError:
        return ""
    return "" if b"\0" in data else data.decode("utf-8", "replace")


def _unit_values(text: str, key: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^\s*{key}\s*=\s*(.*)$", text, re.M)]


def _unit_key(text: str, key: str) -> str | None:
    values = _unit_values(text, key)
    return values[-1] if values else None
