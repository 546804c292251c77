"""System resources of a host, read in one remote command: load, CPU, memory, disk, OOM kills.

>>> prefetch_snapshot(pool, host)                  # the CPU window starts now, in a thread (see @runbook prefetch)
>>> snap = snapshot(pool, host)                      # one command per host per run, shared by SYS-01..SYS-04
>>> snap.load_1m, round(snap.cpu_percent), round(snap.memory_percent)
(0.42, 7, 31)
>>> snap.disks["/"]
Disk(mount='/', filesystem='/dev/sda1', size_kib=102687672, used_kib=40960000, percent=39.9)
>>> oom_kills(pool, host, "/var/log/kern.log", 5000)      # or None for `dmesg`
['Jan 12 03:14:07 app-1 kernel: [12.3] Out of memory: Killed process 4242 (python) ...']
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING

from acgs_verify.errors import ProbeError
from acgs_verify.hosts.commands import CANNOT, command, operand, refuse, refused
from acgs_verify.probes.logs import tail_command
from acgs_verify.redact import one_line

if TYPE_CHECKING:
    from acgs_verify.hosts.pool import HostPool
    from acgs_verify.profile import Host

CPU_SAMPLE_SECONDS = 0.5  # long enough to average a burst, short enough for every host of a run
_MARK = "@@acgs"
DF_FAILED = f"{_MARK}-df-failed"  # not the block marker (`@@acgs df N`), which it must not split


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
    """One command for everything SYS-01..SYS-04 read. A mount is named by its place in `mounts`, never by its
    value, and a df that fails says so after its output (DF_FAILED): its error text is a reason, never a df line."""
    df = "".join(f"printf '{_MARK} df %s\\n' {i}; {command('df', '-P', '-k', '--', operand(m))} 2>&1 || "
                 f"printf '\\n%s\\n' '{DF_FAILED}'; " for i, m in enumerate(mounts))
    return (f"cat /proc/loadavg; echo {_MARK}; head -n 1 /proc/stat; sleep {CPU_SAMPLE_SECONDS}; "
            f"head -n 1 /proc/stat; echo {_MARK}; cat /proc/meminfo; {df}")


def snapshot(pool: HostPool, host: Host) -> Snapshot:
    """Load, CPU, memory and the host's mounts, read once per host per run (or waited for, if prefetched)."""
    return pool.measure(host, "system", read_snapshot, list(host.mounts))


def prefetch_snapshot(pool: HostPool, host: Host) -> Future:
    """Start snapshot() now, in a thread: the CPU windows of every host then run at once (SYS-02's prefetch)."""
    return pool.measure_later(host, "system", read_snapshot, list(host.mounts))


def read_snapshot(conn, mounts: list[str]) -> Snapshot:
    """cat /proc/loadavg; /proc/stat twice over CPU_SAMPLE_SECONDS; /proc/meminfo; df -P per mount."""
    result = conn.run(snapshot_command(mounts))
    if result.rc != 0 and not result.stdout:
        raise ProbeError(f"cannot read /proc: {one_line(result.stderr)}")
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
        if DF_FAILED in lines:  # what df said is why it failed, whatever it looks like
            out[mount] = one_line(" ".join(x for x in lines if x != DF_FAILED)) or "df failed"
            continue
        cols = lines[-1].split() if lines else []
        if len(cols) >= 6 and cols[1].isdigit() and cols[2].isdigit():
            size, used, avail = int(cols[1]), int(cols[2]), int(cols[3])
            # df's Use% rounds up used / (used + available): root's reserved blocks count as unusable
            pct = 100.0 * used / (used + avail) if used + avail else 0.0
            out[mount] = Disk(mount, cols[0], size, used, round(pct, 1))
        else:
            out[mount] = one_line(" ".join(lines)) or "df printed nothing"
    return out


def oom_kills(pool: HostPool, host: Host, kernel_log: str | None, n: int) -> list[str]:
    """read_oom_kills on `host`, once per run."""
    return pool.measure(host, "oom", read_oom_kills, kernel_log, n)


def read_oom_kills(conn, kernel_log: str | None, n: int) -> list[str]:
    """`dmesg | grep -i "killed process"` over the last n kernel log lines (a kernel log file, or dmesg).

    ProbeError when the source cannot be read or holds no line: "0 OOM kills" counts only over lines read.
    """
    # the refusals stand before the pipeline, so that their exit ends the command (CANNOT) rather than a subshell
    if kernel_log:
        path = operand(kernel_log)
        cmd = (f"{command('test', '-r', path)} || {refuse(f'cannot read {kernel_log}')}; "
               f"{tail_command(command(path), n)}")
    else:
        cmd = (f"out=$(dmesg 2>&1) || {{ printf 'dmesg: %s\\n' \"$out\" | head -n 1 >&2; exit {CANNOT}; }}; "
               f"printf '%s\\n' \"$out\" | tail -n {int(n)}")
    # awk rather than grep: the same pass counts the lines read
    result = conn.run(f"{cmd} | awk 'NF {{n++}} tolower($0) ~ /killed process/ {{print}} "
                      f"END {{print \"{_MARK} lines \" n+0}}'")
    hint = "" if kernel_log else " (set paths.kernel_log to read a kernel log file instead)"
    why = refused(result)
    if why:
        raise ProbeError(why + hint)
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    read = int(lines.pop().split()[-1]) if lines and lines[-1].startswith(f"{_MARK} lines ") else 0
    if not read:
        raise ProbeError(f"{kernel_log or 'dmesg'} holds no lines: no kernel messages to look for OOM kills in"
                         + hint)
    return lines


# ------------------------------------------------------------------------------------ SYS-06: network latency


def tcp_connect_ms(address: str, port: int, samples: int, timeout: float) -> tuple[list[float], list[str]]:
    """(round trips in ms, failures) of `samples` TCP connects from this machine to address:port.

    A refused connection is a round trip too (the peer's RST came back), so a stopped service does not read as
    network latency; a connect that times out or cannot be routed is a failure, and ends the sampling.
    >>> tcp_connect_ms("127.0.0.1", 18016, 10, 3)
    ([0.08, 0.05, ...], [])
    """
    import socket

    from acgs_verify.hosts import reach

    reach.gate(address, port)  # a host or port found silent: at once, not `samples` timeouts later

    def connect(_seq: int) -> None:
        try:
            with socket.create_connection((address, port), timeout=timeout):
                pass
        except ConnectionRefusedError:
            pass

    return _round_trips(samples, connect, lambda exc: f"{address}:{port}: {exc.strerror or type(exc).__name__}")


def _round_trips(samples: int, once: Callable[[int], None], failure: Callable[[OSError], str]
                 ) -> tuple[list[float], list[str]]:
    """(ms each of `samples` calls once(0), once(1), ... took, [failure(exc)] of the first that raised OSError):
    sampling ends at the first failure, as one unanswered sample already decides SYS-06."""
    import time

    times, failures = [], []
    for seq in range(samples):
        start = time.perf_counter()
        try:
            once(seq)
        except OSError as exc:
            failures.append(failure(exc))
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

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP) as s:
        s.settimeout(timeout)

        def echo(seq: int) -> None:
            packet = struct.pack("!BBHHH", 8, 0, 0, 0, seq) + b"acgs-verify"  # the kernel fills id and checksum
            s.sendto(packet, (address, 0))
            while True:
                reply = s.recv(1024)
                if len(reply) >= 8 and reply[0] == 0 and struct.unpack("!H", reply[6:8])[0] == seq:
                    return

        return _round_trips(samples, echo,
                            lambda exc: f"ICMP {address}: {exc.strerror or 'no echo reply within the timeout'}")
