"""One host as discover reads it: its connection, its port owners, /proc details of a process, `find` output
split on NUL, and GETs of a health path. Every module of discover reads the host through this one object.

>>> reader = HostReader(pool, host, port_offset=0)
>>> reader.proc_details(4123)["cwd"]
'/srv/acgs/auth'
"""

from __future__ import annotations

import posixpath
import re

from acgs_verify.discover.cmdline import HTTP_TIMEOUT, bracket
from acgs_verify.discover.model import Discovery, Item
from acgs_verify.hosts.commands import command
from acgs_verify.hosts.pool import HostPool
from acgs_verify.probes.processes import port_owners
from acgs_verify.profile import Host

_HTTP = None  # one HTTP client for every health GET of a run


def _http():
    global _HTTP
    if _HTTP is None:
        from acgs_verify.probes.http import HttpProbe

        _HTTP = HttpProbe(verify=False)
    return _HTTP


class HostReader:
    """The host, its listening ports and processes (read once), and what has been found so far."""

    def __init__(self, pool: HostPool, host: Host, port_offset: int = 0, ports: set[int] | None = None):
        self.pool, self.host, self.offset = pool, host, port_offset
        self.conn = pool.get(host)
        self.sudo = ("sudo", "-n") if host.become else ()
        self.facts = port_owners(pool, host)
        # a scope: only these listening ports are read as services and servers (None: every port)
        self.ports = ports
        self.found = Discovery(host=Item(host_data(host)), user=self.facts.user)
        self.prefix = ""  # the runbook's layout under a prefix (a sandbox, a chroot), once the logs tell

    def listeners(self) -> list:
        return [lis for port, lis in sorted(self.facts.listeners.items())
                if self.ports is None or port in self.ports]

    def sh(self, *words: str | int, sudo: bool = False) -> tuple[int, str]:
        """(exit status, stdout) of one command, every word a value (host.command()): the paths and names below
        come from the host (a process's cwd, an open file, a directory listing), and whoever can create one
        chooses it. `sudo`: through `sudo -n` where the host has `become`."""
        res = self.conn.run(command(*(self.sudo if sudo else ()), *words))
        return res.rc, res.stdout

    def names(self, *words: str | int, sudo: bool = False) -> list[str]:
        """What a `find ... -print0` (or `-printf '...\\0'`) printed, one entry per name, whatever a name holds
        (a space, a line break, a leading `-`)."""
        _, out = self.sh(*words, sudo=sudo)
        return [n for n in out.split("\0") if n]

    def is_dir(self, path: str) -> bool:
        return self.conn.file(path).is_directory

    def is_file(self, path: str) -> bool:
        return self.conn.file(path).is_file

    def proc_details(self, pid: int) -> dict:
        return self.pool.measure(self.host, f"proc {pid}", read_proc_details, pid, self.sudo, self.found.user)

    def absolute(self, pid: int, path: str | None) -> str | None:
        """`path` as process `pid` meant it: a relative one is relative to that process's working directory, not
        to discover's; None where that directory cannot be read."""
        if not path or path.startswith("/"):
            return path or None
        cwd = self.proc_details(pid).get("cwd")
        return posixpath.join(cwd, path) if cwd else None

    def family(self, pid: int) -> set[int]:
        """`pid` and every process below it (a server's workers hold its connections)."""
        out, todo = {pid}, [pid]
        while todo:
            parent = todo.pop()
            for p in self.facts.procs:
                if p.ppid == parent and p.pid not in out:
                    out.add(p.pid)
                    todo.append(p.pid)
        return out

    def get(self, address: str, port: int, path: str) -> tuple[int | None, dict, str]:
        """One GET of a health path; on a remote host through its own curl (its loopback is not ours)."""
        url = f"http://{bracket(address)}:{port}{path}"
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


def host_data(host: Host) -> dict:
    data = host.model_dump(exclude_defaults=True, exclude={"roles", "mounts"})
    data.setdefault("name", host.name)
    data.setdefault("address", host.address)
    data["backend"] = host.backend
    return data


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
