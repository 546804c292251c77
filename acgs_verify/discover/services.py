"""The services: Python ASGI/WSGI servers that own a listening port, named by what /health says, with the
process pattern, unit and log written for each.

>>> servers = find_services(reader)              # also fills reader.found.services and .candidates
>>> servers[0].name, servers[0].port
('auth', 8016)

Identity by fact: a service is the process that owns a listening port (ss -p joined with ps); its command line only
anchors the `process` pattern written for it, and that pattern is checked here to match that process alone. Where
the owner is hidden from the user running discover, the evidence says so and the weaker route (a command line naming
that port) is named as such. Two services that report one name from one application tree are two entries, named by
name and port (`auth-8101`); one from another tree is another stack's, a candidate.
"""

from __future__ import annotations

import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from acgs_verify.discover.apptree import LOG_DIR, tree_of
from acgs_verify.discover.cmdline import (
    app_of,
    connect_address,
    dashed,
    esc,
    json_field,
    module_name,
    port_token,
    program,
    server_kind,
    stem_matches,
)
from acgs_verify.discover.model import Item
from acgs_verify.discover.reader import HostReader
from acgs_verify.probes.processes import Proc, roots
from acgs_verify.profile import HASH_RE

# the runbook's 'Initial Assessment' port table
RUNBOOK_PORTS = {8016: "auth", 8002: "constitutional-ai", 8003: "policy-governance", 8004: "governance-synthesis",
                 8005: "formal-verification", 8010: "evolutionary-computation"}
HEALTH_PATHS = {"ready_path": "/health/ready", "live_path": "/health/live", "metrics_path": "/metrics"}
HASH = re.compile(HASH_RE.strip("^$"))


@dataclass
class Server:
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
    tree: str | None = None  # the application tree above its working directory


def listening_servers(reader: HostReader) -> list[Server]:
    """Every Python server that owns (or, hidden, names) a listening port in the reader's scope."""
    out, seen = [], set()
    for lis in reader.listeners():
        port = lis.port
        owners = [p for p in lis.owners if server_kind(p.args)]
        verified = bool(lis.owners)
        if not lis.owners:  # hidden from this user: a server whose command line names this port
            owners = [p for p in roots([p for p in reader.facts.procs if server_kind(p.args)])
                      if port_token(p.args, port)]
        if not owners:
            continue
        proc = roots(owners)[0] if roots(owners) else owners[0]
        if (proc.pid, port) in seen:
            continue
        seen.add((proc.pid, port))
        out.append(Server(port, connect_address(lis.addresses), proc, verified, app_of(proc.args),
                          port_token(proc.args, port)))
    return out


def find_services(reader: HostReader) -> list[Server]:
    """The ACGS services (reader.found.services) and the other servers (candidates); returns those kept."""
    found = reader.found
    servers = listening_servers(reader)
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda s: _ask_health(reader, s), servers))
    runbook = {p + reader.offset: n for p, n in RUNBOOK_PORTS.items()}
    acgs = [s for s in servers if s.hash or s.port in runbook]
    others: list[tuple[Server, str]] = [(s, "answers without a constitutional hash and is not on a runbook port: "
                                            "not ACGS?") for s in servers if s not in acgs]
    for s in acgs:
        s.name, s.named_by = _name_of(s, runbook)
        s.tree = tree_of(reader, s.proc.pid)
    home = _home_tree(acgs, runbook)
    kept: list[Server] = []
    for s in sorted(acgs, key=lambda s: (s.port not in runbook, s.port)):
        taken = s.name in {k.name for k in kept}
        if home and s.tree == home:
            kept.append(s)
        elif home and s.tree:
            others.append((s, f"the application tree above its working directory is {s.tree}, not {home}: "
                              "another stack on this host?"))
        elif home and not (s.port in runbook and not taken):
            others.append((s, f"no application tree above its working directory, and not on a runbook port: not "
                              f"part of the stack in {home}?"))
        elif taken:
            # a shared host may run several stacks: where the trees cannot tell them apart, the runbook port's first
            others.append((s, f"another `{s.name}` (a second stack on this host?)"))
        else:
            kept.append(s)
    twice = {n: c for n, c in Counter(s.name for s in kept).items() if c > 1}
    for s in kept:
        if s.name in twice:
            s.named_by += f"; {twice[s.name]} services of this stack report that name, so each is named by its " \
                          "port too"
            s.name = f"{s.name}-{s.port}"
    hashes = Counter(s.hash for s in kept if s.hash)
    if hashes:
        found.constitutional_hash = hashes.most_common(1)[0][0]
    for s in sorted(kept, key=lambda s: s.port):
        found.services.append(_service_item(reader, s))
    for s, why in sorted(others, key=lambda o: o[0].port):
        data = {"name": s.name or module_name(s.app) or f"port-{s.port}", "port": s.port}
        found.candidates.append(Item(data, [f"candidate: {why}", _owner_line(reader, s)], candidate=True))
    return kept


def _home_tree(acgs: list[Server], runbook: dict[int, str]) -> str | None:
    """The application tree of this stack: the commonest of the services on the runbook's ports where any listens
    there (None when none of theirs is known: the trees then tell nothing), else the commonest of all."""
    on_runbook = [s for s in acgs if s.port in runbook]
    counts = Counter(s.tree for s in (on_runbook or acgs) if s.tree)
    return counts.most_common(1)[0][0] if counts else None


def _ask_health(reader: HostReader, s: Server) -> None:
    status, headers, body = reader.get(s.address, s.port, "/health")
    s.health = {"status": status, "body": body}
    m = HASH.search(headers.get("x-constitutional-hash", "")) or HASH.search(json_field(body, "constitutional_hash"))
    s.hash = m.group(0) if m else None
    for key, path in HEALTH_PATHS.items():
        st, _, text = reader.get(s.address, s.port, path)
        if st is not None and st not in (404, 405, 501):
            s.paths[key] = (path, st)
            if key == "metrics_path":
                m2 = re.search(r"^(\w*compliance\w*)(?:\{[^}]*\})?\s+(0(?:\.\d+)?|1(?:\.0+)?)\s*$", text, re.M)
                s.compliance_metric = m2.group(1) if m2 else None


def _name_of(s: Server, runbook: dict[int, str]) -> tuple[str, str]:
    field_ = json_field(s.health.get("body", ""), "service")
    if field_:
        return dashed(re.sub(r"[_-]service$", "", field_)), f"the `service` field of /health ({field_})"
    if s.port in runbook:
        return runbook[s.port], f"the runbook's port table ({s.port})"
    name = module_name(s.app)
    return name or f"port-{s.port}", f"the app module ({s.app})" if name else "its port"


def _service_item(reader: HostReader, s: Server) -> Item:
    data: dict = {"name": s.name, "port": s.port, "health_path": "/health"}
    ev = [_owner_line(reader, s), f"named from {s.named_by}"]
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
    pattern, note = _pattern(reader, s)
    if pattern:
        data["process"] = pattern
    ev.append(note)
    details = reader.proc_details(s.proc.pid)
    if details.get("unit"):
        data["unit"] = details["unit"]
        ev.append(f"systemd unit {details['unit']} (/proc/{s.proc.pid}/cgroup)")
    else:
        ev.append(f"TODO unit: {details.get('unit_why', 'no systemd unit')}")
    log, why = _log_of(reader, s, details)
    if log:
        data["log"] = log
    ev.append(why)
    return Item(data, ev)


def _owner_line(reader: HostReader, s: Server) -> str:
    who = f"pid {s.proc.pid} ({s.proc.user})"
    if s.verified:
        line = f"{who} owns {s.address}:{s.port}"
    else:
        line = (f"owner of port {s.port} hidden from {reader.found.user}; {who} is a server whose command line "
                f"names that port (weaker evidence)")
    cwd = reader.proc_details(s.proc.pid).get("cwd")
    return line + (f"; cwd {cwd}" if cwd else "")


def _pattern(reader: HostReader, s: Server) -> tuple[str | None, str]:
    """A regex over `ps -eo args` anchored on the server, its app and its port; checked against every process."""
    kind = server_kind(s.proc.args)
    parts = [esc(kind or "")]
    for anchor in (s.app, s.port_token):
        if anchor:
            parts.append(esc(anchor).replace(" ", "[ =]", 1) if anchor == s.port_token and
                         anchor.startswith("--") else esc(anchor))
    if len(parts) == 1:
        return None, "TODO process: the command line names neither an app nor the port"
    pattern = " .*".join(parts) + "( |$)"
    parts_note = "; its command line does not name the port" if s.port_token is None else ""
    rx = re.compile(pattern)
    procs = reader.facts.procs
    matching = roots([p for p in procs if rx.search(p.args)])
    if [p.pid for p in matching] == [s.proc.pid]:
        return pattern, f"process pattern matches pid {s.proc.pid} only, of {len(procs)} processes" + parts_note
    # another process's command line is its own (it may hold a password): named by pid, user and program only
    others = ", ".join(f"pid {p.pid} ({p.user}, {program(p.args)[:40]})" for p in matching if p.pid != s.proc.pid)
    return pattern, f"WARNING process pattern also matches {others or 'nothing'}: the port's owner decides"


def _log_of(reader: HostReader, s: Server, details: dict) -> tuple[str | None, str]:
    files = details.get("files")
    if files is None:
        return _log_by_name(reader, s, f"/proc/{s.proc.pid}/fd not readable by {reader.found.user}")
    logs = [p for p in files.values() if p.endswith(".log") and not p.startswith("/proc")]
    named = [p for p in logs if stem_matches(PurePosixPath(p).stem, s.name or "")]
    pick = (named or logs or [None])[0]
    if pick:
        return pick, f"log: pid {s.proc.pid} holds {pick} open for writing (/proc/{s.proc.pid}/fd)"
    for fd in (1, 2):  # stdout/stderr redirected to a file
        p = files.get(fd)
        if p and not p.startswith(("/dev/", "/proc/")):
            return p, f"log: its {'stdout' if fd == 1 else 'stderr'} goes to {p}"
    return _log_by_name(reader, s, f"pid {s.proc.pid} holds no log file open")


def _log_by_name(reader: HostReader, s: Server, why: str) -> tuple[str | None, str]:
    base = (s.name or "").replace("-", "_")
    for candidate in (f"{LOG_DIR}/{base}_service.log", f"{LOG_DIR}/{base}.log"):
        if reader.is_file(candidate):
            return candidate, f"log: {candidate}, named after it ({why})"
    return None, f"TODO log: {why}, and no {base}_service.log under {LOG_DIR}"
