"""The application tree: the folder above a service's working directory that holds `config/`, and what discover
reads from there (policies, secret files, keys), plus the log and alert paths beside it.

>>> tree_of(reader, 4123)        # cwd /srv/acgs/services/auth, /srv/acgs/config exists
'/srv/acgs'
"""

from __future__ import annotations

from collections import Counter
from pathlib import PurePosixPath

from acgs_verify.discover.cmdline import common_dir, prune
from acgs_verify.discover.model import Item
from acgs_verify.discover.reader import HostReader
from acgs_verify.hosts.commands import operand

LOG_DIR, APP_ROOT = "/var/log/acgs", "/home/acgs/ACGS"
WALK_UP = 8  # levels above a working directory: a tree deeper than this is not where the service sits


def tree_of(reader: HostReader, pid: int) -> str | None:
    """The nearest folder at or above process `pid`'s working directory that holds `config/` (never `/`); None
    when the cwd cannot be read or no such folder is within WALK_UP levels."""
    cwd = reader.proc_details(pid).get("cwd")
    if not cwd:
        return None
    path = PurePosixPath(cwd)
    for folder in [path, *path.parents][:WALK_UP + 1]:
        if str(folder) == "/":
            return None
        if _holds_config(reader, str(folder)):
            return str(folder)
    return None


def _holds_config(reader: HostReader, folder: str) -> bool:
    return reader.pool.measure(reader.host, f"config dir {folder}", lambda conn, f: conn.file(f"{f}/config")
                               .is_directory, folder)


def find_paths(reader: HostReader, services: list) -> None:
    """paths.logs, alerts_log, passwd/kernel_log under a prefix, app_root and policies."""
    found = reader.found
    logs = [i.data["log"] for i in found.services if i.data.get("log")]
    log_dir = common_dir([str(PurePosixPath(p).parent) for p in logs]) if logs else None
    if log_dir:
        found.set_path("logs", log_dir, f"the directory of the services' logs ({len(logs)} files)")
        if log_dir.endswith(LOG_DIR) and log_dir != LOG_DIR:
            reader.prefix = log_dir[: -len(LOG_DIR)]
    elif reader.is_dir(LOG_DIR):
        found.set_path("logs", LOG_DIR, "the runbook's log directory exists")
    else:
        found.todos.append(f"paths.logs: no service log found and no {LOG_DIR}")
    prefix = reader.prefix
    if prefix:
        found.todos.append(f"note: the runbook's layout lies under {prefix} (from the log directory)")
    alerts = f"{found.path('logs') or LOG_DIR}/alerts.log"
    if reader.is_file(alerts):
        found.set_path("alerts_log", alerts, "exists")
    else:
        found.set_path("alerts_log", None, f"TODO: no {alerts}: MON-01 skips until one is named")
    for key, rel, what in (("passwd", "/etc/passwd", "accounts file"), ("kernel_log", "/var/log/kern.log",
                                                                         "kernel log")):
        if prefix and reader.is_file(prefix + rel):
            found.set_path(key, prefix + rel, f"the {what} under {prefix}")
    _app_root(reader, services)


def _app_root(reader: HostReader, services: list) -> None:
    found, prefix = reader.found, reader.prefix
    candidates = [(prefix + APP_ROOT, f"the runbook's application root under {prefix}")] if prefix else []
    trees = Counter(t for t in (tree_of(reader, s.proc.pid) for s in services) if t)
    for tree, n in trees.most_common():
        candidates.append((tree, f"the folder holding config/ above the services' working directories ({n} of "
                                 f"{len(services)})"))
    cwds = [c for c in (reader.proc_details(s.proc.pid).get("cwd") for s in services) if c]
    if cwds:
        candidates.append((common_dir(cwds), f"the services' common working directory ({len(cwds)} cwds)"))
    candidates.append((APP_ROOT, "the runbook's application root"))
    for root, why in candidates:
        if root and root != "/" and reader.is_dir(root) and reader.is_dir(f"{root}/config"):
            found.set_path("app_root", root, why)
            break
    else:
        found.todos.append("paths.app_root: no application tree with config/ found "
                           f"({', '.join(dict.fromkeys(c for c, _ in candidates if c))})")
        return
    root = found.path("app_root")
    dirs = sorted(reader.names("find", operand(root), "-maxdepth", 4, *prune(), "-type", "d", "-name", "policies",
                               "-print0"), key=len)
    if dirs:
        found.set_path("policies", dirs[0], "a policies directory in the application tree")
    else:
        found.set_path("policies", None, f"TODO: no policies directory under {root}: CC-03 skips")


def find_security(reader: HostReader) -> None:
    """security.secret_files and keys from the application tree, allowed_users from the accounts file."""
    found = reader.found
    root = found.path("app_root")
    if root is None:
        found.todos.append("security.secret_files: no application tree to look in")
        return
    files = sorted(reader.names("find", operand(root), "-maxdepth", 5, *prune(), "-type", "f", "(", "-name", "*.env",
                                "-o", "-name", "*.key", "-o", "-name", "*secret*", "-o", "-name", "*credentials*",
                                ")", "-print0"))
    if files:
        found.security["secret_files"] = Item(
            {"value": files}, [f"*.env, *.key, *secret*, *credentials* under {root}"])
    keys = []
    for f in files:
        stem, name = PurePosixPath(f).stem, PurePosixPath(f).name
        if f.endswith(".key") or "credentials" in name:
            key: dict = {"name": stem, "path": f, "kind": "db" if "credentials" in name or "db" in stem else "app"}
            folder = PurePosixPath(f).parent
            for record in (f"{folder}/{stem}.rotated", f"{folder}/{stem}.rotation"):
                if reader.is_file(record):
                    key["rotation_record"] = record
            keys.append(key)
    if keys:
        found.security["keys"] = Item(
            {"value": keys}, ["key files in the application tree (SEC-05 ages)"])
    passwd = found.path("passwd") or "/etc/passwd"
    rc, out = reader.sh("cut", "-d:", "-f1", "--", operand(passwd))
    users = [u for u in out.split() if u]
    if rc == 0 and users:
        found.security["allowed_users"] = Item({"value": users}, [
            f"baseline: the {len(users)} accounts in {passwd} at discover time; review them (SEC-04)"])
