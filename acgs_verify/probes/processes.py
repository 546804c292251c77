"""Which processes run on a host and who owns each listening port: identity by fact (SVC-03, SVC-11, DB-02).

>>> processes(pool, host)                  # raises ProbeError('host unreachable: ...'), found once per host
[(4242, 'python -m uvicorn ... service_app:auth ...'), ...]
>>> facts = port_owners(pool, host)
>>> facts.listeners[18016].owners[0].pid, identify(facts, 18016, r"uvicorn .*auth", "auth").ok
(4242, True)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from acgs_verify.errors import ProbeError
from acgs_verify.hosts.commands import command
from acgs_verify.redact import one_line
from acgs_verify.words import plural

if TYPE_CHECKING:
    from acgs_verify.hosts.pool import HostPool
    from acgs_verify.profile.model import Host


def processes(pool: HostPool, host: Host) -> list[tuple[int, str]]:
    """Every process of `host` as (pid, full command line), read once per run: read_processes."""
    return pool.measure(host, "processes", read_processes)


def read_processes(conn) -> list[tuple[int, str]]:
    """Every process as (pid, full command line): `ps -ww -eo pid=,args=` (-ww: ps cuts lines at 80 columns
    when its output is not a terminal, which would hide the part of the command line a pattern matches)."""
    out = conn.check_output("ps -ww -eo pid=,args=")
    procs = []
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if pid.isdigit():
            procs.append((int(pid), args.strip()))
    return procs


def processes_matching(procs: list[tuple[int, str]], pattern: str) -> list[tuple[int, str]]:
    rx = re.compile(pattern)
    return [(pid, args) for pid, args in procs if rx.search(args) and "ps -ww -eo pid=,args=" not in args]


def read_listening_ports(conn) -> set[int]:
    """TCP ports in LISTEN state on any address: `ss -Htln` (what the runbook's netstat -tlnp shows)."""
    out = conn.check_output("ss -Htln")
    ports = set()
    for line in out.splitlines():
        cols = line.split()
        if len(cols) >= 4:
            port = cols[3].rsplit(":", 1)[-1]
            if port.isdigit():
                ports.add(int(port))
    return ports


# ------------------------------------------------------------------------------ who owns a port (identity by fact)

# one `ps` per host serves identity (SVC-03, DB-02) and memory (SVC-11): rss and %mem ride along
PS_TABLE = "LC_ALL=C ps -ww -eo pid=,ppid=,user:32=,rss=,pmem=,lstart=,args="
_TCP_FILES = ("/proc/net/tcp", "/proc/net/tcp6")
_SHOWN_ARGS = 120  # a command line in a message: enough to tell two servers apart, short enough for a terminal


@dataclass(frozen=True)
class Proc:
    """One process: `ps -eo pid,ppid,user,rss,pmem,lstart,args`."""

    pid: int
    ppid: int
    user: str
    started: str  # local time of the host, "2026-11-30 17:07:40"
    args: str
    rss_kib: int = 0
    mem_percent: float = 0.0

    def describe(self, short: bool = False) -> str:
        """`pid 42 (user acgs, ppid 1, started 2026-11-30 17:07:40, `python -m uvicorn ... --port 8016`)`; `short`
        keeps pid, user and a shorter command line, for lists of other processes."""
        # the program's directory goes: the arguments are what tell two servers apart
        program, _, rest = self.args.partition(" ")
        args = _cut(f"{program.rsplit('/', 1)[-1]} {rest}".strip(), _SHOWN_ARGS // 2 if short else _SHOWN_ARGS)
        if short:
            return f"pid {self.pid} ({self.user}, `{args}`)"
        return f"pid {self.pid} (user {self.user}, ppid {self.ppid}, started {self.started}, `{args}`)"


def _cut(text: str, limit: int) -> str:
    """Head and tail of a long command line: the tail often holds what tells two servers apart (--port 8016)."""
    if len(text) <= limit:
        return text
    tail = limit // 3
    return text[: limit - tail - 3] + "..." + text[-tail:]


@dataclass(frozen=True)
class Listener:
    """A TCP port in LISTEN state and the processes holding its socket. `owners` is empty when the checker may not
    see them; `hidden` then says why ("not visible to user nobody (socket of uid 116 postgres)"). `socket_users`:
    the users whose uid holds the socket (/proc/net/tcp*, readable by anyone), which narrow a hidden owner down."""

    port: int
    addresses: tuple[str, ...]
    owners: tuple[Proc, ...]
    hidden: str | None = None
    socket_users: tuple[str, ...] = ()


@dataclass(frozen=True)
class PortOwners:
    """Every listening TCP port of a host with its owners, and the process table they were joined with."""

    user: str  # who the checker runs as on that host
    listeners: dict[int, Listener]
    procs: tuple[Proc, ...]


def port_owners(pool: HostPool, host: Host) -> PortOwners:
    """Who owns each listening TCP port of `host` (through sudo -n when the host says `become`), read once per run:
    read_port_owners."""
    return pool.measure(host, "port owners", read_port_owners, host.become)


def read_port_owners(conn, become: bool = False) -> PortOwners:
    """Who owns each listening TCP port: `ss -Htlnp` (or, without ss, /proc/net/tcp* inodes joined with the
    /proc/PID/fd socket links), joined with `ps` for user, ppid, start time and command line.

    >>> facts = read_port_owners(conn)            # conn: a testinfra host, any backend
    >>> facts.listeners[18016].owners[0].args
    'python -m uvicorn --factory acgs_verify.sandbox.service_app:auth ... --port 18016 ...'

    An unprivileged checker sees only its own sockets' owners: the others come back with `owners=()` and
    `hidden` naming the user and the socket's uid. With `become`, ss runs through `sudo -n` (never prompts).
    """
    user = conn.run("id -un").stdout.strip() or "?"
    sudo = "sudo -n " if become else ""
    refused = None
    res = conn.run(f"{sudo}ss -Htlnp")
    if become and res.rc != 0 and res.rc != 127:
        refused = one_line(res.stderr or "") or f"exit {res.rc}"
        res = conn.run("ss -Htlnp")
    # without ss (a minimal image): the kernel's own tables
    holders = _ss_holders(res.stdout) if res.rc == 0 else _proc_holders(conn, "" if refused else sudo)
    procs = _process_table(conn.check_output(PS_TABLE))
    by_pid = {p.pid: p for p in procs}
    sockets = _socket_uids(conn)  # port -> uids holding a listening socket: visible to anyone
    names = _user_names(conn, {u for uids in sockets.values() for u in uids})
    listeners = {}
    for port, (addresses, pids) in holders.items():
        owners = tuple(by_pid[pid] for pid in sorted(pids) if pid in by_pid)
        hidden = None
        if not owners:
            of = ", ".join(f"uid {u} {names.get(u, '?')}" for u in sorted(sockets.get(port, ()))) or "uid unknown"
            if user == "root":
                hidden = f"held by no process root can see (socket of {of})"
            else:
                hidden = f"not visible to user {user} (socket of {of})"
                hidden += (f"; become: sudo -n refused: {refused}" if refused else
                           "; set `become: true` on the host to read it through sudo -n" if not become else "")
        users = tuple(names[u] for u in sorted(sockets.get(port, ())) if u in names)
        listeners[port] = Listener(port, tuple(sorted(addresses)), owners, hidden, users)
    return PortOwners(user, listeners, tuple(p for p in procs if not _is_checker(conn, p, procs)))


def _ss_holders(out: str) -> dict[int, tuple[set[str], set[int]]]:
    """port -> (local addresses, pids) from `ss -Htlnp`: `LISTEN 0 2048 127.0.0.1:18016 0.0.0.0:* users:(("python",
    pid=6086,fd=7))`; a socket whose owner the caller may not see has no users:(...) part."""
    found: dict[int, tuple[set[str], set[int]]] = {}
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 4:
            continue
        address, _, port = cols[3].rpartition(":")
        if not port.isdigit():
            continue
        entry = found.setdefault(int(port), (set(), set()))
        entry[0].add(address)
        entry[1].update(int(p) for p in re.findall(r"pid=(\d+)", line))
    return found


def _tcp_table(conn) -> list[tuple[int, int, int]]:
    """(port, uid, inode) of every listening socket in /proc/net/tcp and tcp6 (state 0A), readable by anyone."""
    out = conn.run(command("cat", "--", *_TCP_FILES)).stdout
    rows = []
    for line in out.splitlines():
        cols = line.split()
        if len(cols) > 9 and cols[3] == "0A" and ":" in cols[1] and cols[7].isdigit():
            rows.append((int(cols[1].rsplit(":", 1)[1], 16), int(cols[7]), int(cols[9])))
    return rows


def _socket_uids(conn) -> dict[int, set[int]]:
    uids: dict[int, set[int]] = {}
    for port, uid, _ in _tcp_table(conn):
        uids.setdefault(port, set()).add(uid)
    return uids


def _proc_holders(conn, sudo: str) -> dict[int, tuple[set[str], set[int]]]:
    """Without ss: socket inodes of /proc/net/tcp* joined with the socket:[INODE] links under /proc/PID/fd."""
    links = conn.run(f"{sudo}find /proc -mindepth 3 -maxdepth 3 -path '/proc/[0-9]*/fd/*' -lname 'socket:*' "
                     "-printf '%h %l\\n'").stdout
    by_inode: dict[int, set[int]] = {}
    for line in links.splitlines():
        m = re.match(r"/proc/(\d+)/fd socket:\[(\d+)\]", line)
        if m:
            by_inode.setdefault(int(m.group(2)), set()).add(int(m.group(1)))
    found: dict[int, tuple[set[str], set[int]]] = {}
    for port, _, inode in _tcp_table(conn):
        entry = found.setdefault(port, (set(), set()))
        entry[0].add("*")
        entry[1].update(by_inode.get(inode, ()))
    return found


def _process_table(out: str) -> list[Proc]:
    procs = []
    for line in out.splitlines():
        cols = line.split(None, 10)  # pid ppid user rss pmem, lstart's five words, args
        if len(cols) < 11 or not cols[0].isdigit() or not cols[1].isdigit() or not cols[3].isdigit():
            continue
        try:
            started = datetime.strptime(" ".join(cols[5:10]), "%a %b %d %H:%M:%S %Y").strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            started = " ".join(cols[5:10])
        try:
            pmem = float(cols[4])
        except ValueError:
            pmem = 0.0
        if PS_TABLE.split("ps ", 1)[1] not in cols[10]:
            procs.append(Proc(int(cols[0]), int(cols[1]), cols[2], started, cols[10].strip(), int(cols[3]), pmem))
    return procs


def _user_names(conn, uids: set[int]) -> dict[int, str]:
    if not uids:
        return {}
    out = conn.run(command("getent", "passwd", *sorted(uids))).stdout
    return {int(f[2]): f[0] for f in (line.split(":") for line in out.splitlines()) if len(f) > 2 and f[2].isdigit()}


def _is_checker(conn, proc: Proc, procs: list[Proc]) -> bool:
    """The run itself and its parents (whose command line may quote a pattern given with --set) are no evidence."""
    if conn.backend.get_connection_type() != "local":
        return False
    by_pid, pid = {p.pid: p for p in procs}, os.getpid()
    while pid > 1:
        if pid == proc.pid:
            return True
        pid = by_pid[pid].ppid if pid in by_pid else 0
    return False


@dataclass(frozen=True)
class Identity:
    """What the process behind a port is, judged against the profile's pattern (see `identify`).

    ok: True (identified, or the weaker evidence held), False (not running, or someone else owns the port),
    None (nothing to judge on: the owner is hidden and no pattern was given)."""

    ok: bool | None
    measured: str
    owner: Proc | None = None
    warning: str | None = None
    pids: tuple[int, ...] = ()


def identify(facts: PortOwners, port: int, pattern: str | None, what: str) -> Identity:
    """The process that owns `port`, and whether the profile's `pattern` matches its command line.

    >>> identify(port_owners(pool, host), 18016, r"uvicorn .*auth", "the service")
    Identity(ok=False, measured="port 18016 owned by pid 123 (... `python -m http.server 18016`) which does not
    match /uvicorn .*auth/; 1 other process matches the pattern: pid 99 (...)", ...)

    A pattern confirms the owner; it never stands in for it. Only when the owner is hidden from the checker (an
    unprivileged user) does the pattern lead, anchored on what anyone can read (the socket's user, the port in the
    command line), named as that fallback in `measured` and `warning`; a mere match is weaker evidence, said so.
    """
    rx = re.compile(pattern) if pattern else None
    matching = roots([p for p in facts.procs if rx and rx.search(p.args)])
    listener = facts.listeners.get(port)
    if listener is None:
        return Identity(False, f"nothing listens on TCP port {port}: {what} is not running"
                               + _others(facts, matching, pattern, port), pids=tuple(p.pid for p in matching))
    if listener.owners:
        good = [p for p in listener.owners if rx is None or rx.search(p.args)]
        owner = (good or list(listener.owners))[0]
        shown = f"port {port} owned by {owner.describe()}"
        if good:
            return Identity(True, shown, owner, pids=tuple(p.pid for p in listener.owners))
        others = [p for p in matching if p not in listener.owners]
        why = f"{shown}, which does not match /{pattern}/" + _others(facts, others, pattern, port, True)
        return Identity(False, why, owner, pids=(owner.pid, *(p.pid for p in others)))
    if rx is None:
        return Identity(None, f"port {port} listens, but its owner is {listener.hidden}, and the profile gives no "
                              "process pattern to fall back on")
    return _hidden_owner(listener, matching, pattern)


def _hidden_owner(listener: Listener, matching: list[Proc], pattern: str) -> Identity:
    """The owner of a socket the checker may not see, from what any user can read: the socket's uid
    (/proc/net/tcp*) and every command line (ps). The named fallback: the one process of the socket's user that
    matches the pattern and names the port in its command line. Several such processes are not one owner."""
    port, users = listener.port, listener.socket_users
    of_user = [p for p in matching if not users or p.user in users]
    anchored = [p for p in of_user if names_port(p.args, port)]
    who = f"user {'/'.join(users)}" if users else "any user"
    if len(anchored) == 1:
        owner = anchored[0]
        return Identity(True, f"port {port} owned by {owner.describe()}, identified without seeing the socket's "
                              f"owner ({listener.hidden}): the one process of {who} matching /{pattern}/ that "
                              f"names port {port}",
                        owner, warning=f"the owner of port {port} is not visible ({listener.hidden}): identified "
                                       f"by the fallback, /{pattern}/ anchored on the port and the socket's user",
                        pids=(owner.pid,))
    if len(anchored) > 1:
        shown = "; ".join(p.describe(short=True) for p in anchored[:3])
        return Identity(None, f"port {port} listens, but its owner is {listener.hidden}, and "
                              f"{plural(len(anchored), 'process')} of {who} match /{pattern}/ and name port {port}: "
                              f"{shown}; which one owns it cannot be told (run as root or the service's user to see "
                              "it)",
                        pids=tuple(p.pid for p in anchored))
    if not matching:
        return Identity(False, f"port {port} listens, but its owner is {listener.hidden}, and no process matches "
                               f"/{pattern}/")
    if users and not of_user:
        shown = "; ".join(p.describe(short=True) for p in matching[:2])
        return Identity(False, f"port {port} listens on a socket of {who}, but no process of {who} matches "
                               f"/{pattern}/; {plural(len(matching), 'process')} of other users "
                               f"{'does' if len(matching) == 1 else 'do'}: {shown}",
                        pids=tuple(p.pid for p in matching))
    warning = (f"the owner of port {port} could not be verified ({listener.hidden}): passed on weaker evidence, "
               f"the port listening and /{pattern}/ matching a process of {who} that does not name the port")
    shown = "; ".join(p.describe(short=True) for p in of_user[:2])
    return Identity(True, f"port {port} listening, owner not verified: {listener.hidden}; weaker evidence: "
                          f"{plural(len(of_user), 'process')} of {who} "
                          f"{'matches' if len(of_user) == 1 else 'match'} /{pattern}/: {shown}",
                    warning=warning, pids=tuple(p.pid for p in of_user))


def names_port(args: str, port: int) -> bool:
    """Whether a command line names `port` as a number of its own (`--port 8016`, `-p 5432`, `:8016`)."""
    return re.search(rf"(?<![0-9]){port}(?![0-9])", args) is not None


def roots(procs: list[Proc]) -> list[Proc]:
    """Matching processes without a matching parent: one line per server, not one per worker or backend."""
    pids = {p.pid for p in procs}
    return [p for p in procs if p.ppid not in pids]


def _others(facts: PortOwners, procs: list[Proc], pattern: str | None, port: int, port_named: bool = False) -> str:
    if not pattern:
        return ""
    if not procs:
        return f"; no process matches /{pattern}/"
    ports = {pid: lis.port for lis in facts.listeners.values() for pid in (o.pid for o in lis.owners)}
    # first those that listen nowhere, the likely impostors, and of those the parents (a postmaster, not its
    # checkpointer): where several servers run on one host, the ones worth naming fit in the message
    matched = {p.pid for p in procs}
    procs = sorted(procs, key=lambda p: (p.pid in ports, p.ppid in matched))
    shown = "; ".join(p.describe(short=True) + (f" listening on {ports[p.pid]}" if p.pid in ports else "")
                      for p in procs[:2])
    more = f" (and {len(procs) - 2} more)" if len(procs) > 2 else ""
    n = len(procs)
    it = "it" if port_named else f"/{pattern}/"
    return (f"; {n} other process{'es' if n != 1 else ''} match{'' if n != 1 else 'es'} {it} but "
            f"own{'' if n != 1 else 's'} no socket on port {port}: {shown}{more}")


def service_processes(facts: PortOwners, port: int, owner: Proc | None = None) -> list[Proc]:
    """The processes that own `port` and all their descendants (uvicorn --workers, gunicorn's children), biggest
    RSS first (SVC-11). Where the socket's owner is hidden from the checker, `owner` is the process identified
    instead (identify's fallback). ProbeError when nothing listens on the port, or its owner is hidden and no
    `owner` is given.

    >>> [(p.pid, p.rss_kib, p.mem_percent) for p in service_processes(port_owners(pool, host), 18016)]
    [(4242, 61440, 0.7), (4250, 52224, 0.6)]
    """
    listener = facts.listeners.get(port)
    if listener is None:
        raise ProbeError(f"nothing listens on TCP {port} (ss -Htlnp): no service process to measure")
    if not listener.owners and owner is None:
        raise ProbeError(f"ss shows TCP {port} listening but not which process owns it ({listener.hidden}), and no "
                         "process could be identified as its owner (run the checks as root or as the service's "
                         "user to see the owner)")
    children: dict[int, list[Proc]] = {}
    for p in facts.procs:
        children.setdefault(p.ppid, []).append(p)
    seen: dict[int, Proc] = {}
    todo = list(listener.owners) or [owner]
    while todo:
        proc = todo.pop()
        if proc.pid not in seen:
            seen[proc.pid] = proc
            todo.extend(children.get(proc.pid, []))
    return sorted(seen.values(), key=lambda p: p.rss_kib, reverse=True)
