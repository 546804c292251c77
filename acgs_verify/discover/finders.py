"""What runs on one host, with evidence: services, PostgreSQL, Redis, paths, certificates, TLS endpoints, keys.

>>> found = find(Host(name="app-1"), port_offset=10000)
>>> [s.data["name"] for s in found.services], found.services[0].evidence[0]
(['auth', ...], 'pid 4123 owns 127.0.0.1:18016; cwd /srv/acgs/auth')

Identity by fact: a service is the process that owns a listening port (ss -p joined with ps); its command line only
anchors the `process` pattern written for it, and that pattern is checked here to match that process alone. Where
the owner is hidden from the user running discover, the evidence says so and the weaker route (a command line naming
that port) is named as such.
"""

from __future__ import annotations

import posixpath
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from urllib.parse import urlsplit, urlunsplit

from acgs_verify.discover.facts import (
    HTTP_TIMEOUT,
    _anchored,
    _app_of,
    _bracket,
    _common_dir,
    _connect_address,
    _dashed,
    _esc,
    _flag,
    _json_field,
    _module_name,
    _port_token,
    _program,
    _prune,
    _served_cert,
    _server_kind,
    _stem_matches,
    url_without_password,
)
from acgs_verify.errors import ProbeError
from acgs_verify.hosts.commands import command, operand
from acgs_verify.hosts.pool import HostPool
from acgs_verify.probes.processes import Proc, port_owners, roots
from acgs_verify.profile import HASH_RE, Host

# the runbook's 'Initial Assessment' port table
RUNBOOK_PORTS = {8016: "auth", 8002: "constitutional-ai", 8003: "policy-governance", 8004: "governance-synthesis",
                 8005: "formal-verification", 8010: "evolutionary-computation"}
PG_PORT, REDIS_PORT, HTTPS_PORT = 5432, 6379, 443
LOG_DIR, APP_ROOT, BACKUPS, CERT_DIR = "/var/log/acgs", "/home/acgs/ACGS", "/var/backups/acgs", "/etc/ssl/acgs"
HEALTH_PATHS = {"ready_path": "/health/ready", "live_path": "/health/live", "metrics_path": "/metrics"}
DATED = re.compile(r"^\d{8}(_\d{6})?$|^\d{4}-\d{2}-\d{2}(T\d{6})?$")
HASH = re.compile(HASH_RE.strip("^$"))
DB_VARS = re.compile(r"(^|_)(DATABASE_URL|DATABASE_URI|DB_URL|POSTGRES_DSN|POSTGRES_URL|PG_DSN)$")
REDIS_VARS = re.compile(r"(^|_)(REDIS_URL|REDIS_DSN|CACHE_URL)$")


@dataclass
class Item:
    """One profile entry and the comment lines that say where it came from; `candidate` ones are written
    commented out."""

    data: dict
    evidence: list[str] = field(default_factory=list)
    candidate: bool = False


@dataclass
class Discovery:
    host: Item
    user: str = "?"
    constitutional_hash: str | None = None
    services: list[Item] = field(default_factory=list)
    candidates: list[Item] = field(default_factory=list)
    databases: list[Item] = field(default_factory=list)
    redis: list[Item] = field(default_factory=list)
    paths: dict[str, Item] = field(default_factory=dict)
    certificates: list[Item] = field(default_factory=list)
    tls_endpoints: list[Item] = field(default_factory=list)
    tls_ca: Item | None = None
    security: dict[str, Item] = field(default_factory=dict)
    todos: list[str] = field(default_factory=list)


@dataclass
class _Server:
    """A listening Python ASGI/WSGI server and what its health paths said."""

    port: int
    address: str
    proc: Proc
    verified: bool  # the port's owner was seen (ss -p), not only a command line naming the port
    app: str | None
    port_token: str | None
    health: dict = field(default_factory=dict)
    paths: dict = field(default_factory=dict)
    hash: str | None = None
    name: str | None = None
    named_by: str = ""
    compliance_metric: str | None = None


def find(host: Host, port_offset: int = 0, connect_timeout: float = 3) -> Discovery:
    """Everything this module finds on `host`; raises ProbeError('host unreachable: ...')."""
    pool = HostPool(connect_timeout=connect_timeout)
    try:
        conn = pool.get(host)
        return _Finder(pool, host, conn, port_offset).run()
    finally:
        pool.close()


class _Finder:
    def __init__(self, pool: HostPool, host: Host, conn, offset: int):
        self.pool, self.host, self.conn, self.offset = pool, host, conn, offset
        self.sudo = ("sudo", "-n") if host.become else ()
        self.found = Discovery(host=Item(_host_data(host)))

    # ------------------------------------------------------------------------------------------ driver
    def run(self) -> Discovery:
        facts = port_owners(self.pool, self.host)
        self.facts = facts
        self.found.user = facts.user
        self.envs: dict[int, dict[str, str] | str] = {}
        services = self._services()
        self._databases(services)
        self._redis(services)
        self._paths(services)
        self._certificates(services)
        self._security()
        self._host(services)
        return self.found

    def sh(self, *words: str | int, sudo: bool = False) -> tuple[int, str]:
        """(exit status, stdout) of one command, every word a value (host.command()): the paths and names below
        come from the host (a process's cwd, an open file, a directory listing), and whoever can create one
        chooses it. `sudo`: through `sudo -n` where the host has `become`."""
        res = self.conn.run(command(*(self.sudo if sudo else ()), *words))
        return res.rc, res.stdout

    def names(self, *words: str | int, sudo: bool = False) -> list[str]:
        """What a `find ... -print0` (or `-printf '...\\0'`) printed, one entry per name, whatever a name holds
        (a space, a line break, a leading `-`)."""
        rc, out = self.sh(*words, sudo=sudo)
        return [n for n in out.split("\0") if n]

    # ---------------------------------------------------------------------------------------- services
    def _servers(self) -> list[_Server]:
        out, seen = [], set()
        for port, lis in sorted(self.facts.listeners.items()):
            owners = [p for p in lis.owners if _server_kind(p.args)]
            verified = bool(lis.owners)
            if not lis.owners:  # hidden from this user: a server whose command line names this port
                owners = [p for p in roots([p for p in self.facts.procs if _server_kind(p.args)])
                          if _port_token(p.args, port)]
            if not owners:
                continue
            proc = roots(owners)[0] if roots(owners) else owners[0]
            if (proc.pid, port) in seen:
                continue
            seen.add((proc.pid, port))
            out.append(_Server(port, _connect_address(lis.addresses), proc, verified, _app_of(proc.args),
                               _port_token(proc.args, port)))
        return out

    def _services(self) -> list[_Server]:
        servers = self._servers()
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(self._ask_health, servers))
        runbook = {p + self.offset: n for p, n in RUNBOOK_PORTS.items()}
        acgs = [s for s in servers if s.hash or s.port in runbook]
        others = [s for s in servers if s not in acgs]
        for s in acgs:
            s.name, s.named_by = _name_of(s, runbook)
        # a shared host may run several stacks: one entry per name, the one on the runbook's port first
        kept: dict[str, _Server] = {}
        for s in sorted(acgs, key=lambda s: (s.port not in runbook, s.port)):
            if s.name in kept:
                others.append(s)
            else:
                kept[s.name] = s
        hashes = Counter(s.hash for s in kept.values() if s.hash)
        if hashes:
            self.found.constitutional_hash = hashes.most_common(1)[0][0]
        for s in sorted(kept.values(), key=lambda s: s.port):
            self.found.services.append(self._service_item(s))
        for s in sorted(others, key=lambda s: s.port):
            why = (f"another `{s.name}` (a second stack on this host?)" if s.name in kept else
                   "answers without a constitutional hash and is not on a runbook port: not ACGS?")
            data = {"name": s.name or _module_name(s.app) or f"port-{s.port}", "port": s.port}
            self.found.candidates.append(Item(data, [f"candidate: {why}", self._owner_line(s)], candidate=True))
        return list(kept.values())

    def _ask_health(self, s: _Server) -> None:
        status, headers, body = self._get(s.address, s.port, "/health")
        s.health = {"status": status, "body": body}
        m = HASH.search(headers.get("x-constitutional-hash", "")) or HASH.search(_json_field(body,
                                                                                           "constitutional_hash"))
        s.hash = m.group(0) if m else None
        for key, path in HEALTH_PATHS.items():
            st, _, text = self._get(s.address, s.port, path)
            if st is not None and st not in (404, 405, 501):
                s.paths[key] = (path, st)
                if key == "metrics_path":
                    m2 = re.search(r"^(\w*compliance\w*)(?:\{[^}]*\})?\s+(0(?:\.\d+)?|1(?:\.0+)?)\s*$", text, re.M)
                    s.compliance_metric = m2.group(1) if m2 else None

    def _get(self, address: str, port: int, path: str) -> tuple[int | None, dict, str]:
        """One GET of a health path; on a remote host through its own curl (its loopback is not ours)."""
        url = f"http://{_bracket(address)}:{port}{path}"
        if self.host.backend == "local":
            reply = _http().get(url, HTTP_TIMEOUT)
            if reply.status is None:
                return None, {}, ""
            return reply.status, reply.headers, reply.body[:65536].decode("utf-8", "replace")
        rc, out = self.sh("curl", "-sS", "-i", "-m", f"{HTTP_TIMEOUT:g}", "--max-filesize", 1048576, "--", url)
        if rc != 0 or not out.startswith("HTTP/"):
            return None, {}, ""
        head, _, body = out.replace("\r\n", "\n").partition("\n\n")
        lines = head.splitlines()
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            return None, {}, ""
        headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        return status, headers, body

    def _service_item(self, s: _Server) -> Item:
        data: dict = {"name": s.name, "port": s.port, "health_path": "/health"}
        ev = [self._owner_line(s), f"named from {s.named_by}"]
        if s.hash:
            ev.append(f"/health answers HTTP {s.health['status']} with constitutional hash {s.hash}")
        else:
            ev.append(f"/health: HTTP {s.health['status'] or 'no answer'}, no constitutional hash; kept for the "
                      "runbook port")
        for key, (path, _status) in s.paths.items():
            data[key] = path
        if s.paths:
            ev.append("answers " + ", ".join(f"{p} ({st})" for p, st in s.paths.values()))
        if s.compliance_metric:
            data["compliance_metric"] = s.compliance_metric
            ev.append(f"{s.compliance_metric} on /metrics holds a compliance rate")
        pattern, note = self._pattern(s)
        if pattern:
            data["process"] = pattern
        ev.append(note)
        details = self._proc_details(s.proc.pid)
        if details.get("unit"):
            data["unit"] = details["unit"]
            ev.append(f"systemd unit {details['unit']} (/proc/{s.proc.pid}/cgroup)")
        else:
            ev.append(f"TODO unit: {details.get('unit_why', 'no systemd unit')}")
        log, why = self._log_of(s, details)
        if log:
            data["log"] = log
        ev.append(why)
        s.details = details  # type: ignore[attr-defined]  # the paths below reuse them
        return Item(data, ev)

    def _owner_line(self, s: _Server) -> str:
        who = f"pid {s.proc.pid} ({s.proc.user})"
        if s.verified:
            line = f"{who} owns {s.address}:{s.port}"
        else:
            line = (f"owner of port {s.port} hidden from {self.found.user}; {who} is a server whose command line "
                    f"names that port (weaker evidence)")
        cwd = self._proc_details(s.proc.pid).get("cwd")
        return line + (f"; cwd {cwd}" if cwd else "")

    def _pattern(self, s: _Server) -> tuple[str | None, str]:
        """A regex over `ps -eo args` anchored on the server, its app and its port; checked against every process."""
        kind = _server_kind(s.proc.args)
        parts = [_esc(kind or "")]
        for anchor in (s.app, s.port_token):
            if anchor:
                parts.append(_esc(anchor).replace(" ", "[ =]", 1) if anchor == s.port_token and
                             anchor.startswith("--") else _esc(anchor))
        if len(parts) == 1:
            return None, "TODO process: the command line names neither an app nor the port"
        pattern = " .*".join(parts) + "( |$)"
        parts_note = "; its command line does not name the port" if s.port_token is None else ""
        rx = re.compile(pattern)
        matching = roots([p for p in self.facts.procs if rx.search(p.args)])
        if [p.pid for p in matching] == [s.proc.pid]:
            return pattern, f"process pattern matches pid {s.proc.pid} only, of {len(self.facts.procs)} processes" \
                            + parts_note
        # another process's command line is its own (it may hold a password): named by pid, user and program only
        others = ", ".join(f"pid {p.pid} ({p.user}, {_program(p.args)[:40]})" for p in matching
                           if p.pid != s.proc.pid)
        return pattern, f"WARNING process pattern also matches {others or 'nothing'}: the port's owner decides"

    def _proc_details(self, pid: int) -> dict:
        return self.pool.measure(self.host, f"proc {pid}", read_proc_details, pid, self.sudo, self.found.user)

    def _log_of(self, s: _Server, details: dict) -> tuple[str | None, str]:
        files = details.get("files")
        if files is None:
            return self._log_by_name(s, f"/proc/{s.proc.pid}/fd not readable by {self.found.user}")
        logs = [p for p in files.values() if p.endswith(".log") and not p.startswith("/proc")]
        named = [p for p in logs if _stem_matches(PurePosixPath(p).stem, s.name or "")]
        pick = (named or logs or [None])[0]
        if pick:
            return pick, f"log: pid {s.proc.pid} holds {pick} open for writing (/proc/{s.proc.pid}/fd)"
        for fd in (1, 2):  # stdout/stderr redirected to a file
            p = files.get(fd)
            if p and not p.startswith(("/dev/", "/proc/")):
                return p, f"log: its {'stdout' if fd == 1 else 'stderr'} goes to {p}"
        return self._log_by_name(s, f"pid {s.proc.pid} holds no log file open")

    def _log_by_name(self, s: _Server, why: str) -> tuple[str | None, str]:
        base = (s.name or "").replace("-", "_")
        for d in self._log_dirs():
            for candidate in (f"{d}/{base}_service.log", f"{d}/{base}.log"):
                if self.conn.file(candidate).is_file:
                    return candidate, f"log: {candidate}, named after it ({why})"
        return None, f"TODO log: {why}, and no {base}_service.log under {' or '.join(self._log_dirs())}"

    def _log_dirs(self) -> list[str]:
        return [LOG_DIR]

    # -------------------------------------------------------------------------------- databases, redis
    def _service_env_urls(self, services: list[_Server], names: re.Pattern, kind: str) -> list[tuple[str, str, int]]:
        """(url without password, variable, pid) from the services' environments; a value that cannot be read
        safely is left out with a TODO naming the variable, never quoting the value."""
        out = []
        for s in services:
            env = self._proc_details(s.proc.pid)["env"]
            if isinstance(env, str):
                self.found.todos.append(env + ": the DSNs it may use are not known")
                continue
            for k, v in sorted(env.items()):
                if not names.search(k):
                    continue
                url = url_without_password(v, kind)
                if url is None:
                    self.found.todos.append(f"{k} in the environment of pid {s.proc.pid} is not a {kind} URL that "
                                            "can be written without its password: left out (value not shown)")
                else:
                    out.append((url, k, s.proc.pid))
        return out

    def _listeners_of(self, program: str) -> list[tuple[int, Proc | None, str]]:
        """(port, owner, address) of each listening port whose owner runs `program` (or, hidden, the well-known
        port and a command line naming it)."""
        out = []
        for port, lis in sorted(self.facts.listeners.items()):
            owner = next((p for p in lis.owners if _program(p.args) == program), None)
            if owner:
                out.append((port, owner, _connect_address(lis.addresses)))
            elif not lis.owners:
                named = [p for p in self.facts.procs if _program(p.args) == program and _port_token(p.args, port)]
                if named:
                    out.append((port, named[0], _connect_address(lis.addresses)))
        return out

    def _databases(self, services: list[_Server]) -> None:
        servers = self._listeners_of("postgres")
        dsns = self._service_env_urls(services, DB_VARS, "postgresql")
        replicas: dict[int, int] = {}  # replica port -> primary port
        for port, proc, _ in servers:
            data_dir = self._absolute(proc.pid, _flag(proc.args, "-D")) if proc else None
            if data_dir:
                rc, _ = self.sh("test", "-e", f"{data_dir}/standby.signal", sudo=True)
                if rc == 0:
                    rc, out = self.sh("grep", "-o", "-e", r"port=[0-9]*", "--", f"{data_dir}/postgresql.auto.conf",
                                      sudo=True)
                    ports = re.findall(r"port=(\d+)", out)
                    replicas[port] = int(ports[-1]) if ports else -1
        env_ports = {urlsplit(d[0]).port or PG_PORT: d for d in dsns}
        primary = _chosen(servers, env_ports, PG_PORT + self.offset)
        if primary is None:
            self.found.todos.append("databases: no PostgreSQL listens here" if not servers else
                                    f"databases: {len(servers)} PostgreSQL servers listen (ports "
                                    f"{', '.join(str(s[0]) for s in servers)}) and no service names one")
            return
        port, proc, address = primary
        if port in env_ports:
            dsn, var, pid = env_ports[port]
            ev = [f"{var} in the environment of pid {pid}, rebuilt from its user, host, port and database: no "
                  "password"]
        else:
            dsn = f"postgresql://acgs@{_bracket(address)}:{port}/acgs_production"
            ev = [f"TODO dsn: no service names a database URL; the runbook's role and database (acgs_production) "
                  f"on the server listening on {port}"]
        ev.insert(0, f"pid {proc.pid} ({proc.user}, {_program(proc.args)}) listens on {address}:{port}")
        data: dict = {"name": "primary", "dsn": dsn, "password_env": "ACGS_DB_PASSWORD"}
        ev.append("password_env: ACGS_DB_PASSWORD (export it; discover never writes a password)")
        pattern = _anchored(proc.args, port)
        if pattern:
            data["process"] = pattern
        unit = self._proc_details(proc.pid).get("unit")
        data["unit"] = unit
        ev.append(f"systemd unit {unit}" if unit else f"unit: null: no systemd unit in /proc/{proc.pid}/cgroup")
        reps = sorted(p for p, prim in replicas.items() if prim == port)
        if reps:
            base = urlsplit(dsn)
            data["replicas"] = [urlunsplit(base._replace(netloc=f"{base.username or 'acgs'}@{_bracket(address)}:{p}"))
                                for p in reps]
            ev.append(f"replica{'s' if len(reps) > 1 else ''} on {', '.join(map(str, reps))}: standby.signal in the "
                      f"data directory, primary_conninfo names port {port}")
        self.found.databases.append(Item(data, ev))
        for p, pr, a in servers:
            if p != port and p not in reps:
                self.found.todos.append(f"another PostgreSQL on {a}:{p} (pid {pr.pid if pr else '?'}) left out")

    def _redis(self, services: list[_Server]) -> None:
        servers = self._listeners_of("redis-server")
        urls = self._service_env_urls(services, REDIS_VARS, "redis")
        env_ports = {urlsplit(u[0]).port or REDIS_PORT: u for u in urls}
        pick = _chosen(servers, env_ports, REDIS_PORT + self.offset)
        if pick is None:
            self.found.todos.append("redis: no Redis listens here" if not servers else
                                    f"redis: {len(servers)} Redis servers listen and no service names one")
            return
        port, proc, address = pick
        ev = [f"pid {proc.pid} ({proc.user}, {_program(proc.args)}) listens on {address}:{port}"]
        if port in env_ports:
            url, var, pid = env_ports[port]
            ev.append(f"{var} in the environment of pid {pid}, rebuilt from its host, port and database: no "
                      "password")
        else:
            url = f"redis://{_bracket(address)}:{port}/0"
            ev.append("no service names a Redis URL: database 0")
        ev.append("password_env: ACGS_REDIS_PASSWORD (export it when Redis wants one)")
        self.found.redis.append(Item({"name": "cache", "url": url, "password_env": "ACGS_REDIS_PASSWORD"}, ev))

    # -------------------------------------------------------------------------------------------- paths
    def _paths(self, services: list[_Server]) -> None:
        logs = [s.get("log") for s in (i.data for i in self.found.services) if s.get("log")]
        prefix = ""
        log_dir = _common_dir([str(PurePosixPath(p).parent) for p in logs]) if logs else None
        if log_dir:
            self._set_path("logs", log_dir, f"the directory of the services' logs ({len(logs)} files)")
            if log_dir.endswith(LOG_DIR) and log_dir != LOG_DIR:
                prefix = log_dir[: -len(LOG_DIR)]  # the runbook's layout under a prefix (a sandbox, a chroot)
        elif self._is_dir(LOG_DIR):
            self._set_path("logs", LOG_DIR, "the runbook's log directory exists")
        else:
            self.found.todos.append(f"paths.logs: no service log found and no {LOG_DIR}")
        self.prefix = prefix
        if prefix:
            self.found.todos.append(f"note: the runbook's layout lies under {prefix} (from the log directory)")
        logs_dir = self.found.paths["logs"].data["value"] if "logs" in self.found.paths else LOG_DIR
        alerts = f"{logs_dir}/alerts.log"
        if self.conn.file(alerts).is_file:
            self._set_path("alerts_log", alerts, "exists")
        else:
            self._set_path("alerts_log", None, f"TODO: no {alerts}: MON-01 skips until one is named")
        for key, rel, what in (("passwd", "/etc/passwd", "accounts file"), ("kernel_log", "/var/log/kern.log",
                                                                             "kernel log")):
            if prefix and self.conn.file(prefix + rel).is_file:
                self._set_path(key, prefix + rel, f"the {what} under {prefix}")
        self._app_root(services)
        self._backups()

    def _app_root(self, services: list[_Server]) -> None:
        cwds = [self._proc_details(s.proc.pid).get("cwd") for s in services]
        cwds = [c for c in cwds if c]
        candidates = [(self.prefix + APP_ROOT, f"the runbook's application root under {self.prefix}")] \
            if self.prefix else []
        if cwds:
            candidates.append((_common_dir(cwds), f"the services' common working directory ({len(cwds)} cwds)"))
        candidates.append((APP_ROOT, "the runbook's application root"))
        for root, why in candidates:
            if root and root != "/" and self._is_dir(root) and self._looks_like_app(root):
                self._set_path("app_root", root, why)
                break
        else:
            self.found.todos.append("paths.app_root: no application tree with config/ found "
                                    f"({', '.join(c for c, _ in candidates if c)})")
            return
        root = self.found.paths["app_root"].data["value"]
        dirs = sorted(self.names("find", operand(root), "-maxdepth", 4, *_prune(), "-type", "d", "-name", "policies",
                                 "-print0"), key=len)
        if dirs:
            self._set_path("policies", dirs[0], "a policies directory in the application tree")
        else:
            self._set_path("policies", None, f"TODO: no policies directory under {root}: CC-03 skips")

    def _looks_like_app(self, root: str) -> bool:
        return self._is_dir(f"{root}/config")

    def _backups(self) -> None:
        candidates = ([self.prefix + BACKUPS] if self.prefix else []) + [BACKUPS]
        # the folders of the usual backup places, a symlink to a folder included (as `ls -d DIR/*/` lists them)
        candidates += sorted(self.names("find", "-H", "/var/backups", "/backup", "/backups", "/srv/backups",
                                        "-mindepth", 1, "-maxdepth", 1, "(", "-type", "d", "-o", "-xtype", "d", ")",
                                        "-print0"))
        for d in dict.fromkeys(candidates):
            dated = [x for x in self.names("find", "-H", operand(d), "-mindepth", 1, "-maxdepth", 1, "-printf",
                                           "%f\\0") if DATED.fullmatch(x)]
            if dated:
                self._set_path("backups", d, f"{len(dated)} dated backup folders, newest {max(dated)}")
                return
        self.found.todos.append(f"paths.backups: no directory of dated backups in {', '.join(candidates[:3])}")

    def _set_path(self, key: str, value: str | None, why: str) -> None:
        self.found.paths[key] = Item({"value": value}, [why])

    def _is_dir(self, path: str) -> bool:
        return self.conn.file(path).is_directory

    def _absolute(self, pid: int, path: str | None) -> str | None:
        """`path` as process `pid` meant it: a relative one is relative to that process's working directory, not
        to discover's; None where that directory cannot be read."""
        if not path or path.startswith("/"):
            return path or None
        cwd = self._proc_details(pid).get("cwd")
        return posixpath.join(cwd, path) if cwd else None

    # ------------------------------------------------------------------------------ certificates, TLS
    def _certificates(self, services: list[_Server]) -> None:
        named: dict[str, str] = {}
        for s in services:
            env = self._proc_details(s.proc.pid)["env"]
            if isinstance(env, dict):
                for k, v in env.items():
                    path = self._absolute(s.proc.pid, v)
                    if path and v.endswith((".pem", ".crt")) and not path.startswith(("/etc/ssl/certs", "/usr/")):
                        named.setdefault(path, f"{k} of pid {s.proc.pid}")
        for d in dict.fromkeys(([self.prefix + CERT_DIR] if self.prefix else []) + [CERT_DIR]):
            for p in sorted(self.names("find", operand(d), "-maxdepth", 1, "-type", "f", "(", "-name", "*.pem", "-o",
                                       "-name", "*.crt", ")", "-print0")):
                named.setdefault(p, f"found under {d}")
        leaves: dict[str, bytes] = {}
        for path, why in named.items():
            der, is_ca = self._first_cert(path)
            if der is None:
                continue
            if is_ca:
                if self.found.tls_ca is None:
                    self.found.tls_ca = Item({"ca_file": path}, [f"a CA certificate ({why})"])
                continue
            leaves[path] = der
            self.found.certificates.append(Item({"path": path}, [f"a server certificate ({why})"]))
        self._tls_endpoints(leaves)

    def _first_cert(self, path: str) -> tuple[bytes | None, bool]:
        rc, text = self.sh("head", "-c", 65536, "--", operand(path), sudo=True)
        m = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", text, re.S) if rc == 0 else None
        if not m:
            return None, False
        from cryptography import x509

        try:
            cert = x509.load_pem_x509_certificate(m.group(0).encode())
            try:
                is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
            except x509.ExtensionNotFound:
                is_ca = False
            from cryptography.hazmat.primitives.serialization import Encoding

            return cert.public_bytes(Encoding.DER), is_ca
        except ValueError:
            return None, False

    def _tls_endpoints(self, leaves: dict[str, bytes]) -> None:
        """A port serves TLS here when its owner's command line names one of the certificate files (or it is the
        runbook's 443) and the certificate it hands out is that file's."""
        if not leaves:
            return
        for port, lis in sorted(self.facts.listeners.items()):
            owners = lis.owners
            if not (any(p in o.args for o in owners for p in leaves) or port == HTTPS_PORT + self.offset):
                continue
            address = _connect_address(lis.addresses) if self.host.backend == "local" else self.host.address
            served = _served_cert(address, port)
            match = next((p for p, der in leaves.items() if der == served), None)
            if match:
                owner = f"pid {owners[0].pid} " if owners else ""
                self.found.tls_endpoints.append(Item({"url": f"https://{_bracket(address)}:{port}"},
                                                     [f"{owner}serves {match} on {port}"]))

    # ------------------------------------------------------------------------------------ security, host
    def _security(self) -> None:
        root = self.found.paths.get("app_root")
        if root is None:
            self.found.todos.append("security.secret_files: no application tree to look in")
            return
        root = root.data["value"]
        files = sorted(self.names("find", operand(root), "-maxdepth", 5, *_prune(), "-type", "f", "(", "-name", "*.env",
                                  "-o", "-name", "*.key", "-o", "-name", "*secret*", "-o", "-name", "*credentials*",
                                  ")", "-print0"))
        if files:
            self.found.security["secret_files"] = Item({"value": files}, [f"*.env, *.key, *secret*, *credentials* "
                                                                          f"under {root}"])
        keys = []
        for f in files:
            stem, name = PurePosixPath(f).stem, PurePosixPath(f).name
            if f.endswith(".key") or "credentials" in name:
                key: dict = {"name": stem, "path": f, "kind": "db" if "credentials" in name or "db" in stem else "app"}
                folder = PurePosixPath(f).parent
                for record in (f"{folder}/{stem}.rotated", f"{folder}/{stem}.rotation"):
                    if self.conn.file(record).is_file:
                        key["rotation_record"] = record
                keys.append(key)
        if keys:
            self.found.security["keys"] = Item({"value": keys}, ["key files in the application tree (SEC-05 ages)"])
        passwd = self.found.paths["passwd"].data["value"] if "passwd" in self.found.paths else "/etc/passwd"
        rc, out = self.sh("cut", "-d:", "-f1", "--", operand(passwd))
        users = [u for u in out.split() if u]
        if rc == 0 and users:
            self.found.security["allowed_users"] = Item({"value": users}, [
                f"baseline: the {len(users)} accounts in {passwd} at discover time; review them (SEC-04)"])

    def _host(self, services: list[_Server]) -> None:
        roles = [r for r, have in (("app", self.found.services), ("db", self.found.databases),
                                   ("cache", self.found.redis)) if have]
        self.found.host.data["roles"] = roles or ["app"]
        paths = [i.data["value"] for k, i in self.found.paths.items() if k in ("logs", "app_root", "backups")
                 and i.data["value"]]
        mounts = ["/"]
        if paths:
            rc, out = self.sh("df", "-P", "--", *map(operand, paths))
            # the mount point is what follows the capacity, spaces and all
            mounts += [m.group(1) for m in (_DF_ROW.search(line) for line in out.splitlines()[1:]) if m]
        self.found.host.data["mounts"] = list(dict.fromkeys(mounts))
        self.found.host.evidence = [f"read as user {self.found.user} over {self.host.backend}; roles from what "
                                    "was found; mounts: / and those holding the logs, app root and backups"]


# ------------------------------------------------------------------------------------------- helpers

_HTTP = None  # one HTTP client for every health GET of a run
_DF_ROW = re.compile(r"\s\d+\s+\d+\s+\d+\s+\d+%\s+(/.*)$")  # df -P: ... blocks used available capacity% MOUNT


def _http():
    global _HTTP
    if _HTTP is None:
        from acgs_verify.probes.http import HttpProbe

        _HTTP = HttpProbe(verify=False)
    return _HTTP


def _chosen(servers: list[tuple[int, Proc | None, str]], env_ports: dict[int, tuple], default_port: int
            ) -> tuple[int, Proc | None, str] | None:
    """Of the (port, proc, address) listeners: the one a service's environment names, else the one on the default
    port, else the only one; None leaves the choice to the user. _chosen(servers, {}, 5432) -> (5432, proc, addr)"""
    return next((s for s in servers if s[0] in env_ports), None) or \
        next((s for s in servers if s[0] == default_port), None) or \
        (servers[0] if len(servers) == 1 else None)


def _host_data(host: Host) -> dict:
    data = host.model_dump(exclude_defaults=True, exclude={"roles", "mounts"})
    data.setdefault("name", host.name)
    data.setdefault("address", host.address)
    data["backend"] = host.backend
    return data


def _name_of(s: _Server, runbook: dict[int, str]) -> tuple[str, str]:
    field_ = _json_field(s.health.get("body", ""), "service")
    if field_:
        return _dashed(re.sub(r"[_-]service$", "", field_)), f"the `service` field of /health ({field_})"
    if s.port in runbook:
        return runbook[s.port], f"the runbook's port table ({s.port})"
    name = _module_name(s.app)
    return name or f"port-{s.port}", f"the app module ({s.app})" if name else "its port"


def read_proc_details(conn, pid: int, sudo: tuple[str, ...], user: str) -> dict:
    """What /proc says of one process: {"cwd", "files": {fd: path} or None, "unit" or "unit_why", "env": {name:
    value} or why it cannot be read}. `sudo` prefixes the reads that need root (("sudo", "-n") or ()); `user` is
    who reads, for that why. Values stay in memory, only names are ever shown. A directory or file name is kept
    exactly as it is, line breaks and trailing spaces included: whoever runs the process chose it."""
    def sh(*words: str | int, root: bool = True) -> tuple[int, str]:
        res = conn.run(command(*(sudo if root else ()), *words))
        return res.rc, res.stdout

    out: dict = {}
    rc, cwd = sh("readlink", "--", f"/proc/{int(pid)}/cwd")
    cwd = cwd.removesuffix("\n")  # readlink's own line break; one in the name itself stays
    if rc == 0 and cwd.startswith("/"):
        out["cwd"] = cwd
    rc, fds = sh("find", f"/proc/{int(pid)}/fd", "-mindepth", 1, "-maxdepth", 1, "-lname", "/*", "-printf",
                 "%f %l\\0")
    out["files"] = {int(f): p for f, _, p in (x.partition(" ") for x in fds.split("\0")) if f.isdigit()} \
        if rc == 0 else None
    rc, cgroup = sh("cat", f"/proc/{int(pid)}/cgroup", root=False)
    units = re.findall(r"/([A-Za-z0-9@_.\\-]+)\.service(?:/|$)", cgroup, re.M) if rc == 0 else []
    if units:
        out["unit"] = units[-1]
    else:
        out["unit_why"] = f"no systemd unit in /proc/{pid}/cgroup" if rc == 0 else "cgroup not readable"
    rc, text = sh("cat", f"/proc/{int(pid)}/environ")
    if rc != 0:
        out["env"] = f"environment of pid {pid} not readable by {user}"
    else:
        out["env"] = {k: v for k, sep, v in (e.partition("=") for e in text.split("\0")) if sep and k}
    return out


__all__ = ["Discovery", "Item", "ProbeError", "find"]
