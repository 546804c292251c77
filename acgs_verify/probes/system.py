"""System resources of a host, read in one remote command: load, CPU, memory, disk, OOM kills.

>>> snap = pool.fact(host, "system", lambda node: snapshot(node, host.mounts))
>>> snap.load_1m, round(snap.cpu_percent), round(snap.memory_percent)
(0.42, 7, 31)
>>> snap.disks["/"]
Disk(mount='/', filesystem='/dev/sda1', size_kib=102687672, used_kib=40960000, percent=39.9)
>>> oom_kills(node, "/var/log/kern.log", 5000)      # or None for `dmesg`
['Jan 12 03:14:07 app-1 kernel: [12.3] Out of memory: Killed process 4242 (python) ...']
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from acgs_verify.check import ProbeError

CPU_SAMPLE_SECONDS = 0.5  # long enough to average a burst, short enough for every host of a run
_MARK = "@@acgs"


@dataclass(frozen=True)
class Disk:
    mount: str
    filesystem: str
    size_kib: int
    used_kib: int
    percent: float


@dataclass(frozen=True)
class Snapshot:
    load_1m: float
    load_5m: float
    load_15m: float
    cpu_percent: float
    memory_total_kib: int
    memory_available_kib: int
    disks: dict[str, Disk | str]  # mount -> Disk, or why df could not tell

    @property
    def memory_percent(self) -> float:
        """In use, as `free` counts it in procps-ng 4: (total - available) / total."""
        return 100 * (self.memory_total_kib - self.memory_available_kib) / self.memory_total_kib


def snapshot_command(mounts: list[str]) -> str:
    df = "".join(f"echo '{_MARK} df' {shlex.quote(m)}; df -P -k -- {shlex.quote(m)} 2>&1; "
                 for m in mounts)
    return (f"cat /proc/loadavg; echo {_MARK}; head -n 1 /proc/stat; sleep {CPU_SAMPLE_SECONDS}; "
            f"head -n 1 /proc/stat; echo {_MARK}; cat /proc/meminfo; {df}")


def snapshot(node, mounts: list[str]) -> Snapshot:
    """cat /proc/loadavg; /proc/stat twice over CPU_SAMPLE_SECONDS; /proc/meminfo; df -P per mount."""
    result = node.run(snapshot_command(mounts))
    if result.rc != 0 and not result.stdout:
        raise ProbeError(f"cannot read /proc: {result.stderr.strip()[:200]}")
    return parse_snapshot(result.stdout, mounts)


def parse_snapshot(text: str, mounts: list[str]) -> Snapshot:
    parts = text.split(f"{_MARK}\n")
    if len(parts) < 3:
        raise ProbeError(f"unexpected output from /proc: {text[:120]!r}")
    load = parts[0].split()
    stat = [line.split()[1:] for line in parts[1].splitlines() if line.startswith("cpu ")]
    if len(load) < 3 or len(stat) != 2:
        raise ProbeError(f"unexpected /proc/loadavg or /proc/stat: {text[:120]!r}")
    meminfo_text, *df_blocks = parts[2].split(f"{_MARK} df ")
    mem = {}
    for line in meminfo_text.splitlines():
        key, _, rest = line.partition(":")
        if rest.split():
            mem[key] = int(rest.split()[0])
    if not mem.get("MemTotal"):
        raise ProbeError("unexpected /proc/meminfo: no MemTotal (or 0)")
    available = mem.get("MemAvailable", mem.get("MemFree", 0) + mem.get("Buffers", 0) + mem.get("Cached", 0))
    return Snapshot(float(load[0]), float(load[1]), float(load[2]), _cpu_percent(stat[0], stat[1]),
                    mem["MemTotal"], available, _disks(df_blocks, mounts))


def _cpu_percent(before: list[str], after: list[str]) -> float:
    """Busy share of all CPU time between two /proc/stat 'cpu' lines; idle and iowait count as idle."""
    a, b = [int(x) for x in before[:8]], [int(x) for x in after[:8]]
    total = sum(b) - sum(a)
    idle = (b[3] + b[4]) - (a[3] + a[4])
    if total <= 0:  # no CPU time between the samples: nothing measured, and 0 % would pass as "idle"
        raise ProbeError("the CPU counters in /proc/stat did not advance between the two samples")
    return 100.0 * (total - idle) / total


def _disks(blocks: list[str], mounts: list[str]) -> dict[str, Disk | str]:
    out: dict[str, Disk | str] = {}
    for mount, block in zip(mounts, blocks, strict=False):
        lines = [x for x in block.splitlines()[1:] if not x.startswith("Filesystem")]
        cols = lines[-1].split() if lines else []
        if len(cols) >= 6 and cols[1].isdigit() and cols[2].isdigit():
            size, used, avail = int(cols[1]), int(cols[2]), int(cols[3])
            # df's Use% rounds up used / (used + available): root's reserved blocks count as unusable
            pct = 100.0 * used / (used + avail) if used + avail else 0.0
            out[mount] = Disk(mount, cols[0], size, used, round(pct, 1))
        else:
            out[mount] = " ".join(" ".join(lines).split())[:200] or "df printed nothing"
    return out


def oom_kills(node, kernel_log: str | None, n: int) -> list[str]:
    """`dmesg | grep -i "killed process"` over the last n kernel log lines (a kernel log file, or dmesg).

    ProbeError when the source cannot be read or holds no line: "0 OOM kills" counts only over lines read.
    """
    if kernel_log:
        q = shlex.quote(kernel_log)
        cmd = f"test -r {q} || {{ echo 'cannot read {kernel_log}' >&2; exit 3; }}; tail -n {int(n)} -- {q}"
    else:
        cmd = f"out=$(dmesg 2>&1) || {{ printf 'dmesg: %s\\n' \"$out\" | head -n 1 >&2; exit 3; }}; " \
              f"printf '%s\\n' \"$out\" | tail -n {int(n)}"
    # awk rather than grep: the same pass counts the lines read
    result = node.run(f"{{ {cmd}; }} | awk 'NF {{n++}} tolower($0) ~ /killed process/ {{print}} "
                      f"END {{print \"{_MARK} lines \" n+0}}'")
    hint = "" if kernel_log else " (set paths.kernel_log to read a kernel log file instead)"
    if result.stderr.strip():
        raise ProbeError(result.stderr.strip().splitlines()[0][:200] + hint)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    read = int(lines.pop().split()[-1]) if lines and lines[-1].startswith(f"{_MARK} lines ") else 0
    if not read:
        raise ProbeError(f"{kernel_log or 'dmesg'} holds no lines: no kernel messages to look for OOM kills in"
                         + hint)
    return lines


# ------------------------------------------------------------------------------ SVC-11: memory per service


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    rss_kib: int
    mem_percent: float
    command: str


def port_owners(node) -> dict[int, set[int]]:
    """Listening TCP port -> PIDs of the processes holding its socket: `ss -Htlnp` (the runbook's netstat -tlnp).

    >>> port_owners(node)
    {18016: {4242}, 15432: {4301}}
    A port whose owner ss cannot name (another user's process, without root) maps to an empty set.
    """
    out = node.check_output("ss -Htlnp")
    owners: dict[int, set[int]] = {}
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 4:
            continue
        port = cols[3].rsplit(":", 1)[-1]
        if port.isdigit():
            owners.setdefault(int(port), set()).update(int(p) for p in re.findall(r"pid=(\d+)", line))
    return owners


def process_table(node) -> dict[int, Proc]:
    """Every process with its parent, RSS and %MEM: `ps -ww -eo pid=,ppid=,rss=,pmem=,args=`."""
    procs: dict[int, Proc] = {}
    for line in node.check_output("ps -ww -eo pid=,ppid=,rss=,pmem=,args=").splitlines():
        cols = line.split(None, 4)
        if len(cols) >= 4 and cols[0].isdigit() and cols[1].isdigit() and cols[2].isdigit():
            procs[int(cols[0])] = Proc(int(cols[0]), int(cols[1]), int(cols[2]), float(cols[3]),
                                       cols[4] if len(cols) > 4 else "")
    if not procs:
        raise ProbeError("ps listed no process")
    return procs


def service_memory(owners: dict[int, set[int]], procs: dict[int, Proc], port: int) -> list[Proc]:
    """The processes that own `port` and all their descendants (uvicorn --workers, gunicorn's children), biggest
    RSS first. ProbeError when nothing listens on the port or ss could not say who owns it."""
    if port not in owners:
        raise ProbeError(f"nothing listens on TCP {port} (ss -Htlnp): no service process to measure")
    roots = {p for p in owners[port] if p in procs}
    if not roots:
        raise ProbeError(f"ss shows TCP {port} listening but not which process owns it (run the checks as root "
                         "or as the service's user to see the owner)")
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.ppid, []).append(p.pid)
    seen, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, []))
    return sorted((procs[p] for p in seen), key=lambda p: p.rss_kib, reverse=True)


# ------------------------------------------------------------------------------------ SYS-06: network latency


def tcp_connect_ms(address: str, port: int, samples: int, timeout: float) -> tuple[list[float], list[str]]:
    """(round trips in ms, failures) of `samples` TCP connects from this machine to address:port.

    A refused connection is a round trip too (the peer's RST came back), so a stopped service does not read as
    network latency; a connect that times out or cannot be routed is a failure, and ends the sampling.
    >>> tcp_connect_ms("127.0.0.1", 18016, 10, 3)
    ([0.08, 0.05, ...], [])
    """
    import socket
    import time

    times, failures = [], []
    for _ in range(samples):
        start = time.perf_counter()
        try:
            with socket.create_connection((address, port), timeout=timeout):
                pass
        except ConnectionRefusedError:
            pass
        except OSError as exc:
            failures.append(f"{address}:{port}: {exc.strerror or type(exc).__name__}")
            break
        times.append((time.perf_counter() - start) * 1000)
    return times, failures


def icmp_unavailable() -> str | None:
    """Why this process may not send ICMP echo (unprivileged ping sockets, net.ipv4.ping_group_range), or None."""
    import socket

    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP).close()
    except OSError as exc:
        try:
            with open("/proc/sys/net/ipv4/ping_group_range") as f:
                groups = " ".join(f.read().split())
        except OSError:
            groups = "unknown"
        return f"ICMP echo not permitted here ({exc.strerror}; net.ipv4.ping_group_range {groups})"
    return None


def icmp_echo_ms(address: str, samples: int, timeout: float) -> tuple[list[float], list[str]]:
    """(round trips in ms, failures) of `samples` ICMP echoes to an IPv4 address over an unprivileged ping socket
    (what `ping -c N` measures); call only where icmp_unavailable() is None."""
    import socket
    import struct
    import time

    times, failures = [], []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP) as s:
        s.settimeout(timeout)
        for seq in range(samples):
            packet = struct.pack("!BBHHH", 8, 0, 0, 0, seq) + b"acgs-verify"  # the kernel fills id and checksum
            start = time.perf_counter()
            try:
                s.sendto(packet, (address, 0))
                while True:
                    reply = s.recv(1024)
                    if len(reply) >= 8 and reply[0] == 0 and struct.unpack("!H", reply[6:8])[0] == seq:
                        break
            except OSError as exc:
                failures.append(f"ICMP {address}: {exc.strerror or 'no echo reply within the timeout'}")
                break
            times.append((time.perf_counter() - start) * 1000)
    return times, failures
