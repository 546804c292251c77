"""Which local servers a service talks to: the TCP connections its processes hold, from /proc (the socket inodes
under /proc/PID/fd joined with /proc/net/tcp and tcp6), read the same way for any user allowed to read them.

>>> peer_ports(reader, {4123, 4124})
Counter({6380: 3, 5433: 1})
"""

from __future__ import annotations

import re
from collections import Counter

from acgs_verify.discover.reader import HostReader

ESTABLISHED = "01"
_SOCKET = re.compile(r"socket:\[(\d+)\]")


def peer_ports(reader: HostReader, pids: set[int]) -> Counter:
    """Remote port -> number of established connections held by `pids`; empty when their fds cannot be read."""
    inodes: set[str] = set()
    for pid in sorted(pids):
        # -lname, not -type: a socket link is read as the link's text, never followed
        for link in reader.names("find", f"/proc/{int(pid)}/fd", "-mindepth", 1, "-maxdepth", 1, "-lname",
                                 "socket:*", "-printf", "%l\\0", sudo=True):
            m = _SOCKET.fullmatch(link)
            if m:
                inodes.add(m.group(1))
    if not inodes:
        return Counter()
    rc, table = reader.sh("head", "-c", 4 << 20, "--", "/proc/net/tcp", "/proc/net/tcp6")
    ports: Counter = Counter()
    for line in table.splitlines():
        fields = line.split()
        # sl local rem st tx:rx tr:when retrnsmt uid timeout inode
        if len(fields) < 10 or fields[3] != ESTABLISHED or fields[9] not in inodes:
            continue
        try:
            ports[int(fields[2].rsplit(":", 1)[1], 16)] += 1
        except (IndexError, ValueError):
            continue
    return ports


def services_peers(reader: HostReader, services: list) -> tuple[Counter, int]:
    """(remote port -> connections, how many services' descriptors could be read) over every service's family."""
    total: Counter = Counter()
    read = 0
    for s in services:
        got = peer_ports(reader, reader.family(s.proc.pid))
        if got or reader.proc_details(s.proc.pid).get("files") is not None:
            read += 1
        total.update(got)
    return total, read
