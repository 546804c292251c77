"""What a host's security and monitoring checks read: the application tree, a passwd file, a kernel log, and the
security and alerts logs, with realistic content, and their faults.

Layout under DIR: home/acgs/ACGS (config/production.env at 0600, keys with mtimes, a rotation record),
etc/passwd, var/log/kern.log, var/log/acgs/security.log and var/log/acgs/alerts.log. Every fault changes one file
and its heal writes that file as `up` did.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from acgs_verify.sandbox.components.base import Component, Context, atomic_write
from acgs_verify.sandbox.constants import APP_ROOT, LOG_DIR

PASSWD = "etc/passwd"
KERNEL_LOG = "var/log/kern.log"
SECURITY_LOG = f"{LOG_DIR}/security.log"
ALERTS_LOG = f"{LOG_DIR}/alerts.log"
APP_KEY_AGE_DAYS = 5  # rotated monthly: well inside the 31 days SEC-05 allows
DB_ROTATED_DAYS = 20  # rotated quarterly: inside 92 days
STALE_DAYS = 60
FAILED_LOGIN_BURST = 25  # above the default failed_logins_max of 10

ACCOUNTS = ["root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy",
            "www-data", "backup", "list", "irc", "_apt", "nobody", "systemd-network", "messagebus", "sshd",
            "postgres", "redis", "acgs"]
_SHELLS = {"root": "/bin/bash", "sync": "/bin/sync", "postgres": "/bin/bash", "acgs": "/bin/bash"}
_HOMES = {"root": "/root", "acgs": "/home/acgs", "postgres": "/var/lib/postgresql", "redis": "/var/lib/redis",
          "www-data": "/var/www", "nobody": "/nonexistent", "sshd": "/run/sshd"}


class AppTree(Component):
    name = "apptree"
    fault_names = ("world-writable", "secret-readable", "unknown-user", "oom-kill", "failed-logins",
                   "breach-indicator", "critical-alert", "stale-key", "no-alerts-log")
    fault_help = {
        "world-writable": "a world-writable file in the application tree (SEC-01)",
        "secret-readable": "config/production.env readable by others (SEC-02)",
        "unknown-user": "an account the allow-list does not name in the passwd file (SEC-04)",
        "oom-kill": "an OOM kill in the kernel log (SYS-05)",
        "failed-logins": "failed login lines in the logs, above the limit (SEC-03)",
        "breach-indicator": "a breach line in the logs (SEC-06)",
        "critical-alert": "an unresolved critical alert in the alerts log (MON-01)",
        "stale-key": "the application key last rotated long ago (SEC-05)",
        "no-alerts-log": "removes the alerts log (MON-01)",
    }

    # ---------------------------------------------------------------------------------- lifecycle
    def up(self, ctx: Context) -> None:
        self.clear_faults(ctx)
        root = ctx.dir / APP_ROOT
        files = {
            "README.md": "# ACGS\nAI Constitutional Governance System\n",
            "services/core/constitutional-ai/app/main.py": "from fastapi import FastAPI\napp = FastAPI()\n",
            "services/platform/authentication/app/main.py": "from fastapi import FastAPI\napp = FastAPI()\n",
            "scripts/backup_full_system.sh": "#!/bin/sh\nset -eu\n",
        }
        for rel, text in files.items():
            _write(root / rel, text, 0o755 if rel.endswith(".sh") else 0o644)
        _write(root / "config/production.env", "DATABASE_URL=postgresql://acgs@localhost:5432/acgs_production\n"
               "REDIS_URL=redis://localhost:6379/0\nJWT_SECRET_KEY=sandbox-not-a-real-secret\n", 0o600)
        _write(root / "config/keys/app.key", "sandbox application signing key (not a real key)\n", 0o600)
        _write(root / "config/keys/db.credentials", "acgs:sandbox-not-a-real-password\n", 0o600)
        for rel in ("world-writable", "secret-readable", "unknown-user", "oom-kill", "failed-logins",
                    "critical-alert", "stale-key"):
            self.heal(ctx, rel, "")
        _write(ctx.dir / SECURITY_LOG, _security_log(), 0o644)

    def status(self, ctx: Context) -> list[dict[str, Any]]:
        return [self.row(ctx, "app tree", "files in " + str(ctx.dir / APP_ROOT))]

    def profile_fragment(self, ctx: Context) -> dict[str, Any]:
        root = ctx.dir / APP_ROOT
        return {
            "paths": {"app_root": str(root), "passwd": str(ctx.dir / PASSWD), "kernel_log": str(ctx.dir / KERNEL_LOG),
                      "alerts_log": str(ctx.dir / ALERTS_LOG)},
            "security": {
                "secret_files": [str(root / "config/production.env"), str(root / "config/keys/app.key"),
                                 str(root / "config/keys/db.credentials")],
                "secret_max_mode": "0640",
                "allowed_users": list(ACCOUNTS),
                "keys": [{"name": "app", "path": str(root / "config/keys/app.key"), "kind": "app"},
                         {"name": "db", "path": str(root / "config/keys/db.credentials"), "kind": "db",
                          "rotation_record": str(root / "config/keys/db.rotated")}],
            },
        }

    # ------------------------------------------------------------------------------------- faults
    def break_(self, ctx: Context, fault: str, target: str) -> None:
        root, now = ctx.dir / APP_ROOT, datetime.now()
        if fault == "world-writable":
            os.chmod(root / "services/core/constitutional-ai/app/main.py", 0o666)
        elif fault == "secret-readable":
            os.chmod(root / "config/production.env", 0o644)
        elif fault == "unknown-user":
            _append(ctx.dir / PASSWD, "mallory:x:1337:1337::/home/mallory:/bin/bash\n")
        elif fault == "oom-kill":
            _append(ctx.dir / KERNEL_LOG, _kern(now, 86410.5, "Out of memory: Killed process 4242 (python3) "
                    "total-vm:8123456kB, anon-rss:6234567kB, file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:12345kB "
                    "oom_score_adj:0"))
        elif fault == "failed-logins":
            _append(ctx.dir / SECURITY_LOG, "".join(
                _line(now - timedelta(seconds=FAILED_LOGIN_BURST - i), "acgs.security", "WARNING",
                      f"Failed login for user admin from 127.0.0.{50 + i % 5} (invalid password)")
                for i in range(FAILED_LOGIN_BURST)))
        elif fault == "breach-indicator":
            _append(ctx.dir / SECURITY_LOG, _line(now, "acgs.security", "ERROR", "Security breach indicator: "
                    "audit_logs rows changed outside the API by svc-backup from 127.0.0.66"))
        elif fault == "critical-alert":
            _append(ctx.dir / ALERTS_LOG, _line(now - timedelta(minutes=2), "acgs.alerts", "CRITICAL",
                    "[ALERT-0107] policy-governance error rate 12.5 % above the 1 % limit for 5 min"))
        elif fault == "stale-key":
            _age(root / "config/keys/app.key", STALE_DAYS)
        elif fault == "no-alerts-log":  # a deployment where no component writes an alerts log
            (ctx.dir / ALERTS_LOG).unlink(missing_ok=True)

    def heal(self, ctx: Context, fault: str, target: str) -> None:
        """Write the fault's file as `up` does (up calls it for each file)."""
        root = ctx.dir / APP_ROOT
        if fault == "world-writable":
            os.chmod(root / "services/core/constitutional-ai/app/main.py", 0o644)
        elif fault == "secret-readable":
            os.chmod(root / "config/production.env", 0o600)
        elif fault == "unknown-user":
            _write(ctx.dir / PASSWD, _passwd(), 0o644)
        elif fault == "oom-kill":
            _write(ctx.dir / KERNEL_LOG, _kernel_log(), 0o640)
        elif fault in ("failed-logins", "breach-indicator"):
            _write(ctx.dir / SECURITY_LOG, _security_log(), 0o644)
        elif fault in ("critical-alert", "no-alerts-log"):
            _write(ctx.dir / ALERTS_LOG, _alerts_log(), 0o644)
        elif fault == "stale-key":
            _age(root / "config/keys/app.key", APP_KEY_AGE_DAYS)
            rotated = datetime.now().astimezone() - timedelta(days=DB_ROTATED_DAYS)
            _write(root / "config/keys/db.rotated", rotated.isoformat(timespec="seconds") + "\n", 0o644)
            _age(root / "config/keys/db.credentials", DB_ROTATED_DAYS)


# ------------------------------------------------------------------------------------------- content


def _write(path: Path, text: str, mode: int) -> None:
    atomic_write(path, text)
    os.chmod(path, mode)


def _append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def _age(path: Path, days: float) -> None:
    t = time.time() - days * 86400
    os.utime(path, (t, t))


def _line(ts: datetime, logger: str, level: str, message: str) -> str:
    """The services' format: %(asctime)s - %(name)s - %(levelname)s - %(message)s"""
    return f"{ts:%Y-%m-%d %H:%M:%S},{ts.microsecond // 1000:03d} - {logger} - {level} - {message}\n"


def _kern(ts: datetime, uptime: float, message: str) -> str:
    return f"{ts:%b %d %H:%M:%S} app-1 kernel: [{uptime:12.6f}] {message}\n"


def _passwd() -> str:
    lines = []
    for uid, name in enumerate(ACCOUNTS):
        uid = {"root": 0, "nobody": 65534, "acgs": 1000}.get(name, 100 + uid)
        shell = _SHELLS.get(name, "/usr/sbin/nologin")
        lines.append(f"{name}:x:{uid}:{uid}:{name}:{_HOMES.get(name, '/usr/sbin')}:{shell}\n")
    return "".join(lines)


def _kernel_log() -> str:
    boot = datetime.now() - timedelta(days=1)
    events = [(0.0, "Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0)"),
              (0.0, "Command line: BOOT_IMAGE=/boot/vmlinuz-6.1.0-18-amd64 root=UUID=0b1f ro quiet"),
              (0.412, "Memory: 24512344K/25165240K available (14336K kernel code, 2441K rwdata)"),
              (1.873, "EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none."),
              (3.201, "systemd[1]: Started postgresql@15-main.service - PostgreSQL Cluster 15-main."),
              (5.664, "audit: type=1400 audit(1736650000.123:2): apparmor=\"STATUS\" operation=\"profile_load\""),
              (40211.2, "TCP: request_sock_TCP: Possible SYN flooding on port 8016. Sending cookies."),
              (80001.9, "EXT4-fs (sda1): re-mounted. Quota mode: none.")]
    return "".join(_kern(boot + timedelta(seconds=up), up, msg) for up, msg in events)


def _security_log() -> str:
    events = [(180, "INFO", "Login succeeded for user operator from 127.0.0.1 (mfa=totp)"),
              (150, "INFO", "Token issued for service policy-governance (scope=policies:read)"),
              (95, "WARNING", "Failed login for user operator from 127.0.0.1 (expired totp)"),
              (94, "INFO", "Login succeeded for user operator from 127.0.0.1 (mfa=totp)"),
              (40, "INFO", "API key rotated for service governance-synthesis"),
              (12, "WARNING", "Failed login for user auditor from 127.0.0.7 (invalid password)"),
              (3, "INFO", "Login succeeded for user auditor from 127.0.0.7 (mfa=webauthn)")]
    return _log("acgs.security", events)


def _alerts_log() -> str:
    events = [(190, "CRITICAL", "[ALERT-0101] auth_service health check failing on app-1"),
              (184, "INFO", "[ALERT-0101] resolved: auth_service healthy again after restart"),
              (75, "WARNING", "[ALERT-0102] disk usage on /var at 81 %"),
              (50, "CRITICAL", "[ALERT-0103] database connection count at 92 % of max_connections"),
              (41, "INFO", "[ALERT-0103] resolved: connection count back to 35 %"),
              (6, "WARNING", "[ALERT-0104] P99 latency of constitutional-ai at 7.2 ms (target 5 ms)")]
    return _log("acgs.alerts", events)


def _log(logger: str, events: list[tuple[int, str, str]]) -> str:
    """(minutes ago, level, message) events as log lines ending now."""
    now = datetime.now()
    return "".join(_line(now - timedelta(minutes=m), logger, level, msg) for m, level, msg in events)
