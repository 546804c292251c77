"""The sandbox's daily backups, made the runbook's way (daily_backup.sh), and their faults.

DIR/var/backups/acgs/YYYYMMDD for the last DAYS days (names and mtimes backdated a day apart, the newest an
hour old), each with:
    database.sql.gz      pg_dump -h 127.0.0.1 -U acgs acgs_production | gzip   (the sandbox's own PostgreSQL)
    config.tar.gz        tar -czf ... home/acgs/ACGS/config/
    application.tar.gz   tar -czf ... home/acgs/ACGS/ --exclude=venv --exclude=.git
    logs.tar.gz          tar -czf ... var/log/acgs/
One dump and three archives are made, and copied into each day (a few hundred KB each), so `up` stays quick.
The pristine set is kept in DIR/run/backups/ for heal. State slice: {"faults": [...], "mtimes": {name: mtime}}.

Faults, each a state a real backup directory gets into:
    backup-stale          the last two nights' backups did not happen (the newest is two days old)
    backup-missing:FILE   FILE is missing from the latest backup
    backup-truncated      the latest application.tar.gz stops half-way (a full disk)
    backup-corrupt        64 bytes in the middle of the latest logs.tar.gz flipped (bad media)
    dump-incomplete       the latest dump stops before its last section and pg_dump's closing line
    backup-shrunk         the latest dump holds a tenth of the audit rows (data lost before the dump)
    backup-retention-old  a backup from 45 days ago still there (the clean-up step did not run)
    backup-too-few        only the newest 4 backups are left
    restore-broken        the latest dump decompresses and is complete, but a COPY row is not valid
    FAULT:ops-1           each fault above (backup-missing:FILE@ops-1) on the ssh host ops-1's own backup root,
                          DIR/hosts/ops-1/var/backups/acgs, made as app-1's is: caught over ssh (and paramiko)
    field-backups         (a layout, not a fault) the backups as ACGS's own backup script writes them on a real
                          deployment: DAYS folders YYYYMMDD_HHMMSS, each with a plain `database.sql` (the same
                          real pg_dump, not gzipped), `nginx.production.conf` and `manifest.json`, and a `latest`
                          symlink to the newest (the runbook's rollback restores latest/database.sql); every BK
                          check must pass on it. The faults above switched on after it break that layout (the
                          dump faults rewrite the plain dump). heal puts the default layout back.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from acgs_verify.sandbox.components.base import Component, Context, SandboxError
from acgs_verify.sandbox.components.postgres import find_bindir, primary_port
from acgs_verify.sandbox.constants import (
    APP_ROOT,
    BACKUP_ROOT,
    CONSTITUTIONAL_HASH,
    DATABASE,
    LOG_DIR,
    OPS_HOST,
    OPS_TREE,
    ROLE,
    RUN_DIR,
    secret_path,
)

DAYS = 10  # BK-05 wants >= 7 kept; backup-stale hides two and still leaves 8
FILES = ("database.sql.gz", "config.tar.gz", "application.tar.gz", "logs.tar.gz")
OLD_DAYS = 45
KEEP_TOO_FEW = 4
SHRINK_KEEP_EVERY = 10
FIELD = "field-backups"
FIELD_FILES = ("database.sql", "nginx.production.conf", "manifest.json")
DATED = re.compile(r"^\d{8}(_\d{6})?$")  # the default layout's folders, and the field layout's
NGINX_CONF = """server {
    listen 443 ssl http2;
    server_name acgs.internal;
    ssl_certificate /etc/ssl/acgs/cert.pem;
    ssl_certificate_key /etc/ssl/acgs/key.pem;
    location /api/auth/ { proxy_pass http://127.0.0.1:8016/; }
    location /api/constitutional/ { proxy_pass http://127.0.0.1:8001/; }
}
"""


class Backups(Component):
    name = "backups"
    fault_names = ("backup-stale", "backup-missing", "backup-truncated", "backup-corrupt", "dump-incomplete",
                   "backup-shrunk", "backup-retention-old", "backup-too-few", "restore-broken", FIELD)
    fault_help = {
        "backup-stale": "the newest backup is 49 h old (BK-01)",
        "backup-missing": "removes one file of the latest backup (BK-02, and what reads that file)",
        "backup-truncated": "application.tar.gz cut short (BK-03)",
        "backup-corrupt": "logs.tar.gz corrupt in the middle (BK-03)",
        "dump-incomplete": "the dump stops before pg_dump's closing line (BK-04)",
        "backup-shrunk": "the latest dump much smaller than the previous (BK-06)",
        "backup-retention-old": "backup folders older than the retention kept (BK-05)",
        "backup-too-few": "fewer backups than backup_min_count (BK-05)",
        "restore-broken": "the latest dump does not restore (BK-07, in the pre-maintenance gate)",
        FIELD: "a layout, not a fault: backups as ACGS's own script writes them (all checks pass)",
    }

    def fault_targets(self, fault: str) -> list[str]:
        if fault == "backup-missing":
            return [*FILES, *(f"{f}@{OPS_HOST}" for f in FILES)]
        return [] if fault == FIELD else ["", OPS_HOST]

    # ---------------------------------------------------------------------------------- lifecycle
    def up(self, ctx: Context) -> None:
        root, pristine = self._root(ctx), self._pristine(ctx)
        for d in (root, self._root(ctx, OPS_HOST), pristine, self._hidden(ctx), self._hidden(ctx, OPS_HOST),
                  self._aside(ctx)):
            shutil.rmtree(d, ignore_errors=True)
        pristine.mkdir(parents=True)
        ctx.state.update(faults=[], mtimes={})
        ctx.state.pop("field_link", None)
        self._dump(ctx, pristine / "database.sql.gz")
        (ctx.dir / APP_ROOT / "config").mkdir(parents=True, exist_ok=True)
        (ctx.dir / LOG_DIR).mkdir(parents=True, exist_ok=True)
        self._tar(ctx, pristine / "config.tar.gz", f"{APP_ROOT}/config/")
        self._tar(ctx, pristine / "application.tar.gz", f"{APP_ROOT}/", "--exclude=venv", "--exclude=.git")
        self._tar(ctx, pristine / "logs.tar.gz", f"{LOG_DIR}/")
        now = time.time()
        for host in ("", OPS_HOST):
            for k in range(DAYS):
                self._make(ctx, now - 3600 - k * 86400, host)
        ctx.save()

    def status(self, ctx: Context) -> list[dict[str, Any]]:
        root = self._root(ctx)
        n = len(self._dated(ctx)) if root.is_dir() else 0
        return [self.row(ctx, "backups", f"{n} dated backups in {root}")]

    def profile_fragment(self, ctx: Context) -> dict[str, Any]:
        return {"paths": {"backups": str(self._root(ctx))}}

    # ------------------------------------------------------------------------------------- faults
    def refuse(self, ctx: Context, fault: str, target: str) -> str | None:
        if fault == FIELD:
            active = self.active_faults(ctx)  # field-backups itself is listed once made
            return f"{FIELD} replaces the backups: heal {', '.join(active)} first" if active else None
        name, host = _where(fault, target)
        latest = self._dated(ctx, host)[-1]
        needs = {"backup-missing": name, "backup-truncated": "application.tar.gz",
                 "backup-corrupt": "logs.tar.gz"}.get(fault)
        if needs and not (latest / needs).is_file():
            return f"{fault}: the latest backup {latest.name} holds no {needs} (layout {FIELD}?)"
        return None

    def break_(self, ctx: Context, fault: str, target: str) -> None:
        if fault == FIELD:
            self._field_on(ctx)
            ctx.save()
            return
        name, host = _where(fault, target)
        latest = self._dated(ctx, host)[-1]
        if fault == "backup-stale":
            for d in self._dated(ctx, host)[-2:]:
                self._hide(ctx, d, host)
        elif fault == "backup-too-few":
            for d in self._dated(ctx, host)[:-KEEP_TOO_FEW]:
                self._hide(ctx, d, host)
        elif fault == "backup-missing":
            self._hidden(ctx, host).mkdir(parents=True, exist_ok=True)
            os.replace(latest / name, self._hidden(ctx, host) / name)
        elif fault == "backup-truncated":
            with open(latest / "application.tar.gz", "r+b") as f:
                f.truncate(os.fstat(f.fileno()).st_size // 2)
        elif fault == "backup-corrupt":
            with open(latest / "logs.tar.gz", "r+b") as f:
                middle = os.fstat(f.fileno()).st_size // 2
                f.seek(middle)
                flipped = bytes(b ^ 0x5A for b in f.read(64))
                f.seek(middle)
                f.write(flipped)
        elif fault in ("dump-incomplete", "backup-shrunk", "restore-broken"):
            self._rewrite_dump(ctx, latest / self._dump_name(ctx, host), fault)
        elif fault == "backup-retention-old":
            ctx.state[_key("old", host)] = self._make(ctx, time.time() - OLD_DAYS * 86400, host).name
        self._touch(ctx, latest)
        self._relink(ctx)
        ctx.save()

    def heal(self, ctx: Context, fault: str, target: str) -> None:
        if fault == FIELD:
            for other in [f for f in self.active_faults(ctx) if f != FIELD]:  # they changed the field folders
                self.heal_fault(ctx, *(other.split(":", 1) + [""])[:2])
            self._field_off(ctx)
            ctx.save()
            return
        name, host = _where(fault, target)
        hidden = self._hidden(ctx, host)
        if fault in ("backup-stale", "backup-too-few"):
            for d in sorted(hidden.iterdir()) if hidden.is_dir() else []:
                if d.is_dir():
                    os.replace(d, self._root(ctx, host) / d.name)
        elif fault == "backup-missing":
            os.replace(hidden / name, self._dated(ctx, host)[-1] / name)
        elif fault == "backup-retention-old":
            shutil.rmtree(self._root(ctx, host) / ctx.state.pop(_key("old", host)), ignore_errors=True)
        else:
            name = {"backup-truncated": "application.tar.gz", "backup-corrupt": "logs.tar.gz"}.get(
                fault, self._dump_name(ctx, host))
            shutil.copyfile(self._pristine(ctx) / name, self._dated(ctx, host)[-1] / name)
        for d in self._dated(ctx, host):
            self._touch(ctx, d)
        self._relink(ctx)
        ctx.save()

    # --------------------------------------------------------------------------------- the field layout
    def _dump_name(self, ctx: Context, host: str = "") -> str:
        # the field folders' own flag, not the fault list: field-backups is listed only once its folders are made
        # (app-1's layout only: ops-1 keeps the runbook's)
        field = not host and (ctx.state.get("field_link") or ctx.state.get("making_field"))
        return "database.sql" if field else "database.sql.gz"

    def _aside(self, ctx: Context) -> Path:
        return ctx.dir / RUN_DIR / "backups-default"

    def _field_on(self, ctx: Context) -> None:
        """The default folders set aside; DAYS field folders written from the same pristine dump, plain."""
        aside = self._aside(ctx)
        shutil.rmtree(aside, ignore_errors=True)
        aside.mkdir(parents=True)
        for d in self._dated(ctx):
            os.replace(d, aside / d.name)
        plain = self._pristine(ctx) / "database.sql"
        with gzip.open(self._pristine(ctx) / "database.sql.gz", "rb") as src, open(plain, "wb") as out:
            shutil.copyfileobj(src, out)  # byte for byte what `pg_dump` printed, before daily_backup.sh's gzip
        ctx.state["making_field"] = True
        now = time.time()
        try:
            for k in range(DAYS):
                self._make(ctx, now - 3600 - k * 86400)
        finally:
            ctx.state.pop("making_field", None)
        ctx.state["field_link"] = True
        self._relink(ctx)

    def _field_off(self, ctx: Context) -> None:
        root = self._root(ctx)
        for d in self._dated(ctx):
            shutil.rmtree(d)
        if (root / "latest").is_symlink():
            (root / "latest").unlink()
        ctx.state.pop("field_link", None)
        aside = self._aside(ctx)
        for d in sorted(aside.iterdir()) if aside.is_dir() else []:
            os.replace(d, root / d.name)
            self._touch(ctx, root / d.name)
        shutil.rmtree(aside, ignore_errors=True)
        (self._pristine(ctx) / "database.sql").unlink(missing_ok=True)

    def _relink(self, ctx: Context) -> None:
        """In the field layout, `latest` names the newest folder, as the backup script leaves it."""
        if not ctx.state.get("field_link"):
            return
        link, dated = self._root(ctx) / "latest", self._dated(ctx)
        if link.is_symlink():
            link.unlink()
        if dated:
            link.symlink_to(dated[-1].name)

    # ---------------------------------------------------------------------------------------- making
    def _root(self, ctx: Context, host: str = "") -> Path:
        """app-1's backup root (host ""), or ops-1's own."""
        return ctx.dir / (f"{OPS_TREE}/{BACKUP_ROOT}" if host else BACKUP_ROOT)

    def _pristine(self, ctx: Context) -> Path:
        return ctx.dir / RUN_DIR / "backups"

    def _hidden(self, ctx: Context, host: str = "") -> Path:
        return ctx.dir / RUN_DIR / _key("backups-hidden", host)

    def _dated(self, ctx: Context, host: str = "") -> list[Path]:
        return sorted(p for p in self._root(ctx, host).iterdir()
                      if not p.is_symlink() and p.is_dir() and DATED.match(p.name))

    def _make(self, ctx: Context, mtime: float, host: str = "") -> Path:
        """One dated backup written at `mtime`: the pristine files copied in, names and times backdated (in the
        field layout: YYYYMMDD_HHMMSS, the plain dump, the nginx config and a manifest naming both)."""
        when = dt.datetime.fromtimestamp(mtime)
        field = self._dump_name(ctx, host) == "database.sql"
        d = self._root(ctx, host) / when.strftime("%Y%m%d_%H%M%S" if field else "%Y%m%d")
        d.mkdir(parents=True, exist_ok=True)
        if field:
            shutil.copyfile(self._pristine(ctx) / "database.sql", d / "database.sql")
            (d / "nginx.production.conf").write_text(NGINX_CONF)
            (d / "manifest.json").write_text(json.dumps({
                "backup_id": d.name, "timestamp": when.isoformat(timespec="seconds"),
                "constitutional_hash": CONSTITUTIONAL_HASH, "files": list(FIELD_FILES[:2])}, indent=2) + "\n")
        else:
            for name in FILES:
                shutil.copyfile(self._pristine(ctx) / name, d / name)
        ctx.state.setdefault("mtimes", {})[d.name] = mtime
        self._touch(ctx, d)
        return d

    def _touch(self, ctx: Context, d: Path) -> None:
        """Files and directory carry the time the backup was written (a fault's rewrite too)."""
        mtime = ctx.state.get("mtimes", {}).get(d.name)
        if mtime is None or not d.is_dir():
            return
        for p in d.iterdir():
            os.utime(p, (mtime, mtime))
        os.utime(d, (mtime, mtime))

    def _hide(self, ctx: Context, d: Path, host: str = "") -> None:
        self._hidden(ctx, host).mkdir(parents=True, exist_ok=True)
        os.replace(d, self._hidden(ctx, host) / d.name)

    def _dump(self, ctx: Context, out: Path) -> None:
        """pg_dump | gzip > out, as daily_backup.sh does, against the sandbox PostgreSQL as acgs."""
        password = secret_path(ctx.dir, "db").read_text().strip()
        env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
        argv = [str(Path(find_bindir()) / "pg_dump"), "-h", "127.0.0.1", "-p", str(primary_port(ctx.port_offset)),
                "-U", ROLE, DATABASE]
        with open(out, "wb") as f:
            dump = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            gz = subprocess.Popen(["gzip", "-c"], stdin=dump.stdout, stdout=f, stderr=subprocess.PIPE)
            assert dump.stdout is not None
            dump.stdout.close()  # gzip holds the pipe now; pg_dump sees SIGPIPE if gzip dies
            try:
                _, gz_err = gz.communicate(timeout=60)
                _, dump_err = dump.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                dump.kill()
                gz.kill()
                raise SandboxError("pg_dump | gzip of the sandbox database took longer than 60 s") from None
        if dump.returncode or gz.returncode:
            why = (dump_err or gz_err).decode("utf-8", "replace").strip().splitlines()[-1:]
            raise SandboxError(f"pg_dump | gzip failed (exit {dump.returncode}/{gz.returncode}): {why}")

    def _tar(self, ctx: Context, out: Path, *args: str) -> None:
        """tar -czf out -C DIR args (the runbook's absolute paths, relative to the sandbox dir)."""
        res = subprocess.run(["tar", "-czf", str(out), "-C", str(ctx.dir), *args[1:], args[0]],
                             capture_output=True, text=True, timeout=60)
        # 1: a file changed while being read (a service writing its log), as on any live system
        if res.returncode not in (0, 1):
            raise SandboxError(f"tar -czf {out.name} failed (exit {res.returncode}): {res.stderr.strip()[-200:]}")

    def _rewrite_dump(self, ctx: Context, path: Path, fault: str) -> None:
        """The pristine dump, changed line by line the way `fault` says, gzipped again into path."""
        with gzip.open(self._pristine(ctx) / "database.sql.gz", "rt", encoding="utf-8") as f:
            lines = f.readlines()
        if fault == "dump-incomplete":  # stopped before the last section (an index) and the closing line
            cut = max(i for i, ln in enumerate(lines) if ln.startswith("-- Name: "))
            lines = lines[:cut - 1]
        else:
            start = next(i for i, ln in enumerate(lines) if ln.startswith("COPY public.audit_logs" if
                                                                          fault == "backup-shrunk"
                                                                          else "COPY public.policies"))
            end = lines.index("\\.\n", start)
            if fault == "backup-shrunk":
                lines[start + 1:end] = lines[start + 1:end][::SHRINK_KEEP_EVERY]
            else:  # the first row's id is no longer a number: COPY stops there
                lines[start + 1] = "x" + lines[start + 1]
        with (open(path, "w", encoding="utf-8") if path.suffix == ".sql" else
              gzip.open(path, "wt", encoding="utf-8")) as f:
            f.writelines(lines)


def _where(fault: str, target: str) -> tuple[str, str]:
    """(file, host) of a fault's target: 'config.tar.gz@ops-1' -> ('config.tar.gz', 'ops-1'); 'ops-1' -> ('',
    'ops-1'); host '' is app-1."""
    if fault == "backup-missing":
        name, _, host = target.partition("@")
        return name, host
    return "", target


def _key(name: str, host: str) -> str:
    return f"{name}-{host}" if host else name
