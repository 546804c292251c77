"""System resources: runbook 'Root Cause Investigation', 'System Resources' and 'Alert Configuration'.

SYS-01..SYS-04 share one read of /proc and df per host (probes/system.py), so a host costs one command.
Limits are inclusive, as the runbook's alerts are: "CPU utilization (alert: >80%)".
"""

from acgs_verify.check import runbook
from acgs_verify.probes import system
from acgs_verify.probes.http import Latency
from acgs_verify.words import excerpt, plural


@runbook("SYS-01")
def test_load_average(node, hosts, thresholds, check):
    """if [ $(cat /proc/loadavg | cut -d' ' -f1 | cut -d'.' -f1) -gt 8 ]; then echo "High CPU load detected" """
    snap, limit = system.snapshot(hosts, node.host), thresholds.load_1m_max
    check.at_most(snap.load_1m, limit, what="1-minute load",
                  shown=f"load {snap.load_1m:g} {snap.load_5m:g} {snap.load_15m:g} (1, 5, 15 min)")


# the CPU window (CPU_SAMPLE_SECONDS) of every host starts before the first check and the run waits for them,
# so N hosts cost one window and no other probe of this run runs inside it
@runbook("SYS-02", prefetch=system.prefetch_snapshot)
def test_cpu_utilization(node, hosts, thresholds, check):
    """top  (CPU utilization, alert: >80%)"""
    snap, limit = system.snapshot(hosts, node.host), thresholds.cpu_percent_max
    check.at_most(snap.cpu_percent, limit, "%",
                  shown=f"CPU {snap.cpu_percent:.1f} % busy over {system.CPU_SAMPLE_SECONDS:g} s")


@runbook("SYS-03")
def test_memory_usage(node, hosts, thresholds, check):
    """MEMORY_USAGE=$(free | grep Mem | awk '{printf("%.0f", $3/$2 * 100.0)}')  (alert: >85%)"""
    snap, limit = system.snapshot(hosts, node.host), thresholds.memory_percent_max
    used_mib = (snap.memory_total_kib - snap.memory_available_kib) // 1024
    check.at_most(snap.memory_percent, limit, "%",
                  shown=f"memory {snap.memory_percent:.1f} % used ({used_mib} of {snap.memory_total_kib // 1024} MiB)")


@runbook("SYS-04")
def test_disk_usage(mount, hosts, thresholds, check):
    """DISK_USAGE=$(df / | tail -1 | awk '{print $5}' | sed 's/%//')  (alert: >90%)"""
    disk, limit = system.snapshot(hosts, mount.host).disks.get(mount.mount), thresholds.disk_percent_max
    if not isinstance(disk, system.Disk):
        check.fail(f"df {mount.mount}: {disk or 'no answer'}")
    check.at_most(disk.percent, limit, "%", shown=f"{disk.mount} ({disk.filesystem}) {disk.percent:.1f} % used, "
                  f"{(disk.size_kib - disk.used_kib) // 1024} MiB free", value=disk.percent)


@runbook("SYS-05")
def test_no_recent_oom_kills(node, hosts, profile, thresholds, check):
    """dmesg | grep -i "killed process" """
    source, n = profile.paths.kernel_log, thresholds.log_tail_lines
    kills = system.oom_kills(hosts, node.host, source, n)
    if kills:
        check.evidence("OOM kills", "\n".join(kills[-20:]))
    latest = f", latest: {excerpt(kills[-1], 200)}" if kills else ""
    check.equals(len(kills), 0, shown=f"{plural(len(kills), repr('Killed process') + ' line')} in the last "
                 f"{plural(n, 'line')} of {source or 'dmesg'}{latest}")


def _endpoints(profile, host) -> list[tuple[str, int]]:
    """What the checker reaches on a host: its ssh port (remote backends) and its services' ports."""
    ports = [] if host.backend == "local" else [host.port or 22]
    ports += [s.port for s in profile.services if s.role in host.roles]
    return [(host.address, p) for p in dict.fromkeys(ports)]


@runbook("SYS-06")
def test_network_latency(node, profile, thresholds, check):
    """ping -c 10 localhost  (TCP connect time to the host's ssh and service ports; ICMP echo where permitted)"""
    endpoints, n = _endpoints(profile, node.host), thresholds.network_samples
    if not endpoints:
        check.skip(f"no TCP endpoint to time on {node.host.name}: a local host with no services")
    no_icmp = system.icmp_unavailable() if ":" not in node.host.address else "ICMP echo is IPv4 only here"
    timeout = thresholds.connect_timeout_seconds
    rtts = {f"{a}:{p}": system.tcp_connect_ms(a, p, n, timeout) for a, p in endpoints}
    if no_icmp is None:
        rtts[f"ICMP {node.host.address}"] = system.icmp_echo_ms(node.host.address, n, timeout)
    failed = [f for _, fails in rtts.values() for f in fails]
    if failed:
        check.fail(f"no answer: {'; '.join(failed[:3])}")
    p99 = {name: Latency(times, []).p99 for name, (times, _) in rtts.items()}
    worst = max(p99, key=p99.get)
    fail_ms, warn_ms = thresholds.network_p99_fail_ms, thresholds.network_p99_warn_ms
    how = "TCP connect" + ("" if no_icmp else " and ICMP echo") + f" x{n}" + (f"; {no_icmp}" if no_icmp else "")
    check.below(p99[worst], fail_ms, "ms", what="p99", shown=f"p99 {p99[worst]:.2f} ms to {worst} (worst of "
                f"{len(p99)}: {how})", value={k: round(v, 3) for k, v in p99.items()})
    floor = thresholds.latency_noise_floor_ms  # a p99 a hair above the target is the machine, not the network
    if p99[worst] > warn_ms + floor:
        check.warn(f"p99 {p99[worst]:.2f} ms to {worst} is above the {warn_ms:g} ms target by more than the "
                   f"{floor:g} ms noise floor")
