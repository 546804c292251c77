"""make bench: acgs-verify against the runbook typed by hand, on a sandbox of its own (free ports, always taken down).

    .venv/bin/python benchmarks/bench.py [--runs 5] [--quick] [--no-write]

Measures, each as the median of --runs runs after one warm-up run (BENCHMARKS.md says how and why):
  a. the whole catalog, one environment: `acgs-verify run` vs benchmarks/runbook.sh (the runbook's commands);
  b. `acgs-verify run --gate smoke`, command to exit, and its start-up share;
  c. per-check overhead (on-CPU time per test item; benchmarks/timing_plugin.py);
  d. the same profile for 1, 10 and 50 hosts, without workers and with one worker per core;
  e. peak RSS of every acgs-verify process;
  f. a fleet: N ssh hosts (N = --fleet, default 1,10,50,200), each its own address and ControlMaster connection,
     all reaching the sandbox's sshd through benchmarks/delay_proxy.py with --rtt-ms of round trip (default 20):
     wall time, the checker's own on-CPU seconds per host, connections per host (counted by the proxy), peak RSS.
  g. a host that is down: the whole catalog, and the smoke gate, on the sandbox's profile with and without an
     extra ssh host whose address never answers (a loopback listener with a full accept queue, which drops every
     SYN) and a service on it: the extra wall time against one connect timeout plus 2 s.
and writes the figures between the bench markers of BENCHMARKS.md (and benchmarks/last-run.json).

    .venv/bin/python benchmarks/bench.py --only fleet --fleet 1,10,50 --runs 3   # the fleet alone
    .venv/bin/python benchmarks/bench.py --only down --runs 3                    # the down host alone
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from acgs_verify.probes import system  # noqa: E402
from acgs_verify.profile import load_profile  # noqa: E402
from acgs_verify.sandbox import Sandbox  # noqa: E402
from tests.conftest import free_port_offset  # noqa: E402

VENV_BIN = Path(sys.executable).parent
ACGS = [sys.executable, "-m", "acgs_verify.cli"]
HOST_COUNTS = (1, 10, 50)
TARGETS = {"catalog_ratio": 0.5, "smoke_seconds": 0.6, "overhead_ms": 2.0, "scaling_ratio": 5.0, "rss_mb": 150}
SEP = "\x1f"  # runbook.sh splits the ACGS_* records on this: process patterns hold "|"
MARK_START, MARK_END = "<!-- bench:start -->", "<!-- bench:end -->"
FLEET_START, FLEET_END = "<!-- fleet:start -->", "<!-- fleet:end -->"
DOWN_START, DOWN_END = "<!-- down:start -->", "<!-- down:end -->"
GATE_START, GATE_END = "<!-- gate:start -->", "<!-- gate:end -->"
DOWN_ADDRESS = "127.0.0.41"  # the down host's loopback address: bench traffic stays in 127.0.0.0/8
DOWN_SLACK_S = 2.0  # the target: a down host costs at most one connect timeout plus this
FLEET_COUNTS = "1,10,50,200"
FLEET_TARGETS = {"ratio_50": 3.0, "rss_mb": 150, "sessions_per_host": 1}


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


# ------------------------------------------------------------------------------------------ measuring
class PeakRss:
    """Polls /proc for the peak RSS (VmHWM) of a process and all its descendants (xdist workers)."""

    def __init__(self, pid: int):
        self.pid, self.peak_kib, self._stop = pid, {}, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            for pid in self._tree():
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kib[pid] = max(self.peak_kib.get(pid, 0), int(line.split()[1]))
            self._stop.wait(0.02)

    def _tree(self) -> list[int]:
        pids, frontier = [self.pid], [self.pid]
        while frontier:
            parent = frontier.pop()
            try:
                kids = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
            except OSError:
                kids = []
            pids += [int(k) for k in kids]
            frontier += [int(k) for k in kids]
        return pids

    def stop(self) -> dict[int, int]:
        self._stop.set()
        self._thread.join()
        return self.peak_kib


def _subreaper() -> None:
    """Become the parent of orphaned descendants (the ssh ControlMasters daemonize when ControlPersist is set):
    their CPU time then reaches this process when it reaps them, instead of init's."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _children() -> set[int]:
    kids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            kids.update(int(k) for k in (task / "children").read_text().split())
    return kids


def _reap_orphans(before: set[int], timeout: float = 10.0) -> float:
    """Wait for the run's orphaned descendants (children adopted by this subreaper, not in `before`) to exit;
    their user+system CPU seconds."""
    cpu, deadline = 0.0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = _children() - before
        if not left:
            break
        for pid in left:
            with contextlib.suppress(ChildProcessError):
                got, _, usage = os.wait4(pid, os.WNOHANG)
                if got:
                    cpu += usage.ru_utime + usage.ru_stime
        time.sleep(0.02)
    return cpu


def timed(cmd: list[str], env: dict, rss: bool = False) -> dict:
    """Run cmd; wall time command to exit, exit code, last line, (rss) peak RSS per process, and the on-CPU
    seconds of the run and every process below it (orphans included: see _subreaper)."""
    before = _children()
    out = tempfile.TemporaryFile()  # noqa: SIM115 -- read back after the child exits, closed with the function
    t0 = time.time()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**env, "ACGS_BENCH_T0": str(t0)},
                            cwd=REPO)
    poller = PeakRss(proc.pid) if rss else None
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    peaks = poller.stop() if poller else {}
    cpu = usage.ru_utime + usage.ru_stime + _reap_orphans(before)
    if rss:
        peaks[proc.pid] = max(peaks.get(proc.pid, 0), usage.ru_maxrss)
    out.seek(0)
    text = out.read().decode("utf-8", "replace").strip().splitlines()
    return {"wall": wall, "t0": t0, "end": t0 + wall, "rc": proc.returncode, "last": text[-1] if text else "",
            "peak_rss_kib": peaks, "main_pid": proc.pid, "output": text, "cpu": cpu}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def series(name: str, runs: int, make_cmd, env: dict, rss: bool = True, timing_dir: Path | None = None,
           around=None) -> dict:
    """One warm-up run, then `runs` measured runs; each run's timing-plugin output read back when asked;
    `around()` is called before each run and returns a function called after it, whose dict joins the run's."""
    results = []
    for i in range(runs + 1):
        run_env = dict(env)
        if timing_dir is not None:
            d = timing_dir / f"{name}-{i}"
            d.mkdir(parents=True, exist_ok=True)
            run_env["ACGS_BENCH_OUT"] = str(d)
        before = load()
        after_run = around() if around is not None else None
        r = timed(make_cmd(), run_env, rss=rss)
        r["load"] = before
        r["load_after"] = load()
        if after_run is not None:
            r.update(after_run())
        if timing_dir is not None:
            r["processes"] = [json.loads(p.read_text()) for p in sorted(Path(run_env["ACGS_BENCH_OUT"]).glob("*.json"))]
        if i > 0:
            results.append(r)
        print(f"  {name} {'warm-up' if i == 0 else f'run {i}'}: {r['wall']:.2f} s exit {r['rc']} (load {before})"
              f" {r['last'][:110]}", flush=True)
    return {"walls": [r["wall"] for r in results], "median": median([r["wall"] for r in results]),
            "loads": [r["load"] for r in results], "runs": results}


# --------------------------------------------------------------------------------- the bash script's env
def runbook_env(profile_path: Path, history: Path | None = None) -> dict[str, str]:
    """What runbook.sh reads: the profile's ports, paths, passwords and limits as ACGS_* variables."""
    p = load_profile(str(profile_path))
    t = p.thresholds

    def host_line(h):
        return SEP.join([h.name, h.address, h.backend, str(h.port or ""), h.identity_file or "",
                         h.known_hosts or "", h.user or "", ",".join(h.roles), ",".join(h.mounts)])

    env = {
        "ACGS_HASH": p.constitutional_hash, "ACGS_SAMPLES": str(t.latency_samples),
        "ACGS_REDIS_SAMPLES": str(max(t.latency_samples, 100)), "ACGS_TAIL": str(t.log_tail_lines),
        "ACGS_CPU_SAMPLE": str(system.CPU_SAMPLE_SECONDS), "ACGS_HEALTH_TIMEOUT": str(t.health_timeout_seconds),
        "ACGS_P99_FAIL_MS": str(t.latency_p99_fail_ms), "ACGS_LOAD_MAX": str(t.load_1m_max),
        "ACGS_CPU_MAX": str(t.cpu_percent_max), "ACGS_MEM_MAX": str(int(t.memory_percent_max)),
        "ACGS_DISK_MAX": str(int(t.disk_percent_max)), "ACGS_CONNECT_TIMEOUT": str(int(t.connect_timeout_seconds)),
        "ACGS_FAILED_LOGINS_MAX": str(t.failed_logins_max), "ACGS_APP_KEY_DAYS": str(int(t.app_key_max_age_days)),
        "ACGS_DB_KEY_DAYS": str(int(t.db_credential_max_age_days)),
        "ACGS_ALERT_WINDOW": str(int(t.alert_window_minutes)),
        "ACGS_DB_TIMEOUT": str(int(t.db_connect_timeout_seconds)),
        "ACGS_DB_CONN_MAX": str(t.db_connections_max_percent),
        "ACGS_DB_LONG": str(t.db_long_query_seconds), "ACGS_DB_BLOCKED_MAX": str(t.db_blocked_locks_max),
        "ACGS_DB_MEAN_MS": str(t.db_statement_mean_ms_max), "ACGS_DB_LAG_MAX": str(t.db_replication_lag_seconds_max),
        "ACGS_DB_HIT_MIN": str(t.db_cache_hit_percent_min), "ACGS_DB_STATS_DAYS": str(t.db_stats_max_age_days),
        "ACGS_AUDIT_DAYS": str(t.audit_retention_days), "ACGS_COMPLIANCE_MIN": str(t.compliance_rate_percent_min),
        "ACGS_HIT_MIN": str(t.redis_hit_rate_percent_min), "ACGS_HIT_LOOKUPS": str(t.redis_hit_rate_min_lookups),
        "ACGS_APP_ROOT": p.paths.app_root, "ACGS_PASSWD": p.paths.passwd, "ACGS_LOGS": p.paths.logs,
        "ACGS_ALERTS_LOG": p.paths.alerts_log, "ACGS_KERNEL_LOG": p.paths.kernel_log or "",
        "ACGS_SECURITY_LOG": p.paths.security_log or "", "ACGS_SECRET_MODE": p.security.secret_max_mode,
        "ACGS_SECRET_FILES": "\n".join(p.security.secret_files),
        "ACGS_ALLOWED_USERS": " ".join(p.security.allowed_users),
        "ACGS_KEYS": "\n".join(SEP.join([k.name, k.path, k.kind, k.rotation_record or ""]) for k in p.security.keys),
        "ACGS_HOST_LINES": "\n".join(host_line(h) for h in p.hosts),
        "ACGS_SERVICE_HOSTS": "\n".join(SEP.join([h.name, h.address, ",".join(h.roles)]) for h in p.hosts),
        "ACGS_SERVICES": "\n".join(SEP.join([s.name, s.role, str(s.port), s.scheme, s.health_path, s.ready_path or "",
                                             s.live_path or "", s.metrics_path or "", s.log or "", s.process or "",
                                             s.unit or "", s.compliance_metric or ""]) for s in p.services),
        "ACGS_COMPLIANCE_METRICS": "\n".join(
            SEP.join([f"{s.name}@{h.name}", f"{s.scheme}://{h.address}:{s.port}{s.metrics_path}", s.compliance_metric])
            for s in p.services if s.compliance_metric and s.metrics_path for h in p.hosts_with_role(s.role)),
        "ACGS_DATABASES": "\n".join(SEP.join([d.name, d.dsn, p.secret(f"databases.{d.name}") or "",
                                              d.audit_table or "", " ".join(d.replicas),
                                              ",".join(f"{a}:{n}" for a, n in d.pools.items())])
                                     for d in p.databases),
        "ACGS_DB_PROCESSES": "\n".join(SEP.join([d.name, h.name, d.process]) for d in p.databases if d.process
                                       for h in p.hosts_with_role(d.role)),
        "ACGS_AUDIT_ROWS": str(p.databases[0].audit_chain_rows if p.databases else 0),
        "ACGS_REDIS": "\n".join(_redis_line(r, p) for r in p.redis),
        "ACGS_PYTHON": sys.executable,
    }
    # backups, certificates and policies (issue 5): covered when the profile has them
    # every certificate file, ops-1's too: the sandbox's hosts are one machine, so the runbook reads it here (TLS-01
    # reads it over ssh: a round trip the hand-typed runbook is spared)
    env["ACGS_CERTS"] = "\n".join(c.path for c in p.certificates)
    env["ACGS_TLS_ENDPOINTS"] = "\n".join(p.tls_endpoints)
    env["ACGS_CA_FILE"] = p.tls.ca_file or ""
    env["ACGS_CERT_FAIL_DAYS"] = str(int(getattr(t, "cert_fail_days", 7)))
    env["ACGS_BACKUP_DIR"] = p.paths.backups if Path(p.paths.backups).is_dir() else ""
    env["ACGS_BACKUP_FILES"] = " ".join(p.backups.files or [])  # none named: every file of the latest backup
    env["ACGS_BACKUP_HOURS"] = str(int(getattr(t, "backup_max_age_hours", 26)))
    env["ACGS_BACKUP_RETENTION"] = str(int(getattr(t, "backup_retention_days", 30)))
    env["ACGS_POLICY_DIR"] = p.paths.policies if Path(p.paths.policies).is_dir() else ""
    # issue 13's checks: SVC-10..12, SYS-06, DB-11..13, MON-02
    env.update({
        "ACGS_SVC_RSS_MAX": str(t.service_rss_mb_max), "ACGS_SVC_PMEM_MAX": str(t.service_mem_percent_max),
        "ACGS_BASELINE_RUNS": str(t.baseline_runs), "ACGS_BASELINE_FACTOR": str(t.baseline_factor_max),
        "ACGS_P99_WARN_MS": str(t.latency_p99_warn_ms), "ACGS_NET_SAMPLES": str(t.network_samples),
        "ACGS_NET_FAIL_MS": str(t.network_p99_fail_ms), "ACGS_DB_BLOAT_ROWS": str(t.db_bloat_min_rows),
        "ACGS_DB_DEAD_MAX": str(t.db_dead_tuple_percent_max),
        "ACGS_DB_IDLE_TX": str(t.db_idle_in_transaction_seconds_max),
        "ACGS_AVAIL_DAYS": str(t.availability_window_days), "ACGS_AVAIL_RUNS": str(t.availability_min_runs),
        "ACGS_AVAIL_MIN": str(t.availability_percent_min), "ACGS_PROFILE_NAME": p.name,
        "ACGS_HISTORY": str(history) if history else "",
    })
    return env


def _redis_line(r, p) -> str:
    from urllib.parse import urlsplit

    u = urlsplit(r.url)
    return SEP.join([r.name, u.hostname or "127.0.0.1", str(u.port or 6379), p.secret(f"redis.{r.name}") or "",
                     r.hash_key or ""])


# ------------------------------------------------------------------------------------- scaled profiles
def scaled_profile(base: Path, hosts: int, out: Path) -> Path:
    """The sandbox profile with `hosts` app hosts (app-1 .. app-N), all the local host on 127.0.0.1 and served by the
    same sandbox processes; app-1 also holds the database and the cache roles. Everything else is the base's."""
    import yaml

    data = yaml.safe_load(base.read_text())
    data["hosts"] = [{"name": f"app-{i}", "address": "127.0.0.1", "backend": "local",
                      "roles": ["app", "db", "cache"] if i == 1 else ["app"]} for i in range(1, hosts + 1)]
    data["certificates"] = kept_certificates(data)
    path = out / f"profile-{hosts}-hosts.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def kept_certificates(data: dict) -> list:
    """The profile's certificates but those on a host it no longer has (the sandbox's ops-1 keeps its own)."""
    names = {h["name"] for h in data["hosts"]}
    return [c for c in data.get("certificates", []) if isinstance(c, str) or c.get("host") in (None, *names)]


# ------------------------------------------------------------------------------------------ summaries
def timing_summary(runs: list[dict]) -> dict:
    """Medians over runs: start-up share, per-item on-CPU time (all, framework only), reports share."""
    startup, collect, reports, items_cpu, frame_cpu, check_cpu, item_wall = [], [], [], [], [], [], []
    for r in runs:
        procs = r.get("processes") or []
        main = next((p for p in procs if not p["worker"]), None)
        if main is None:
            continue
        m = main["marks"]
        startup.append(m["configured"] - r["t0"])
        collect.append(m.get("collected", m["configured"]) - m["configured"])
        reports.append(r["end"] - m["unconfigured"])
        for p in procs:
            for it in p["items"]:
                items_cpu.append(it["cpu"] * 1000)
                frame_cpu.append((it["cpu"] - it["check_cpu"]) * 1000)
                check_cpu.append(it["check_cpu"] * 1000)
                item_wall.append(it["wall"] * 1000)
    return {"startup_s": median(startup), "collect_s": median(collect), "reports_s": median(reports),
            "item_cpu_ms": median(items_cpu), "item_framework_cpu_ms": median(frame_cpu),
            "item_check_cpu_ms": median(check_cpu), "item_wall_ms": median(item_wall),
            "item_cpu_p90_ms": statistics.quantiles(items_cpu, n=10)[-1] if len(items_cpu) > 10 else float("nan"),
            "items_per_run": len(items_cpu) // max(1, len(runs))}


def peak_rss_mb(runs: list[dict]) -> float:
    return max((kib for r in runs for kib in r["peak_rss_kib"].values()), default=0) / 1024


def machine() -> dict:
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))
    return {"cores": os.cpu_count(), "memory_gib": round(mem_kib / 1024 / 1024, 1), "python": platform.python_version(),
            "kernel": platform.release(), "cpu": _cpu_model(), "bytecode_cache_off": bool(
                os.environ.get("PYTHONDONTWRITEBYTECODE"))}


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


# ----------------------------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="measured runs per figure, after one warm-up (default 5)")
    ap.add_argument("--quick", action="store_true",
                    help="2 runs, hosts 1 and 10 only, also in the fleet (a smoke test of the bench)")
    ap.add_argument("--no-write", action="store_true", help="print the figures; leave BENCHMARKS.md alone")
    ap.add_argument("--only", choices=("all", "local", "gate", "fleet", "down"), default="all",
                    help="local: scenarios a-e; gate: a-c alone (no scaling: ~1 minute), written to BENCHMARKS.md's "
                         "gate section; fleet: f; down: g (default all)")
    ap.add_argument("--fleet", default=FLEET_COUNTS, help=f"fleet sizes, comma-separated (default {FLEET_COUNTS})")
    ap.add_argument("--rtt-ms", type=float, default=20.0, help="the fleet's round trip (default 20 ms)")
    args = ap.parse_args()
    try:
        fleet_counts = sorted({int(x) for x in args.fleet.split(",") if x.strip()})
        if args.quick and args.fleet == FLEET_COUNTS:
            fleet_counts = [1, 10]
    except ValueError:
        print(f"bench: --fleet takes numbers separated by commas, not {args.fleet!r}", file=sys.stderr)
        return 3
    runs = 2 if args.quick else args.runs
    if shutil.which("psql") is None or shutil.which("redis-cli") is None or shutil.which("curl") is None:
        print("bench: needs curl, psql and redis-cli (apt-get install curl postgresql-client redis-tools)",
              file=sys.stderr)
        return 3
    work = Path(tempfile.mkdtemp(prefix="acgs-bench-"))
    sb = Sandbox(work / "sandbox", port_offset=free_port_offset())
    started = time.time()
    try:
        print(f"bench: sandbox in {sb.dir} (port offset {sb.port_offset}); load {load()}", flush=True)
        profile = sb.up()
        _subreaper()
        results = (measure(profile, work, runs, args.quick, scaling=args.only != "gate")
                   if args.only in ("all", "local", "gate") else {})
        if args.only in ("all", "fleet") and fleet_counts:
            results["fleet"] = measure_fleet(profile, work, runs, fleet_counts, args.rtt_ms)
        if args.only in ("all", "down"):
            results["down"] = measure_down(profile, work, runs)
    finally:
        sb.down()
        shutil.rmtree(work, ignore_errors=True)
    results["machine"] = machine()
    results["bench_seconds"] = round(time.time() - started, 1)
    results["runs"] = runs
    # a fleet-only run keeps the local scenarios' figures of the last full run
    name = {"fleet": "last-run-fleet.json", "down": "last-run-down.json", "gate": "last-run-gate.json"}.get(
        args.only, "last-run.json")
    (REPO / "benchmarks" / name).write_text(json.dumps(strip(results), indent=1, default=str) + "\n")
    out = REPO / "BENCHMARKS.md"
    if "catalog" in results:
        text = render(results)
        print(text)
        if not args.no_write:  # a gate-only run has no scaling figures: it keeps the full run's section as it is
            write_section(out, text, *((GATE_START, GATE_END) if args.only == "gate" else (MARK_START, MARK_END)))
    if "fleet" in results:
        text = render_fleet(results["fleet"], results["machine"], results["bench_seconds"], runs)
        print(text)
        if not args.no_write:
            write_section(out, text, FLEET_START, FLEET_END)
    if "down" in results:
        text = render_down(results["down"], results["machine"], runs)
        print(text)
        if not args.no_write:
            write_section(out, text, DOWN_START, DOWN_END)
    if not args.no_write:
        print(f"bench: figures written to BENCHMARKS.md and benchmarks/{name}")
    return 0


def measure(profile: Path, work: Path, runs: int, quick: bool, scaling: bool = True) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    timing = work / "timing"
    reports = work / "reports"
    plugin = ["--", "-p", "benchmarks.timing_plugin"]
    out: dict = {}

    print("a. whole catalog vs runbook.sh", flush=True)
    bash_env = {**env, **runbook_env(profile, reports / "history.jsonl")}
    out["bash"] = series("runbook.sh", runs, lambda: ["bash", str(REPO / "benchmarks" / "runbook.sh")], bash_env,
                         rss=False)
    out["catalog"] = series("catalog", runs, lambda: [*ACGS, "run", "--profile", str(profile), "--report-dir",
                                                      str(reports), *plugin], env, timing_dir=timing)
    print("b. smoke gate", flush=True)
    out["smoke"] = series("smoke", runs, lambda: [*ACGS, "run", "--profile", str(profile), "--gate", "smoke",
                                                  "--report-dir", str(reports), *plugin], env, timing_dir=timing)
    out["import"] = series("import", runs, lambda: [sys.executable, "-c", "import acgs_verify.cli"], env, rss=False)
    print("d. scaling", flush=True)
    out["scaling"] = {}
    for n in (HOST_COUNTS[:2] if quick else HOST_COUNTS) if scaling else ():
        path = scaled_profile(profile, n, work)
        for mode, extra in (("serial", ["--workers", "0"]), ("workers", ["--workers", str(os.cpu_count() or 2)])):
            if n == 1 and mode == "workers":
                continue  # `run --workers auto` never starts workers for one host
            key = f"{n}-{mode}"
            out["scaling"][key] = series(
                f"{n} hosts {mode}", runs,
                lambda path=path, extra=extra: [*ACGS, "run", "--profile", str(path), "--report-dir", str(reports),
                                                *extra, *plugin], env, timing_dir=timing)
    return out


def measure_fleet(profile: Path, work: Path, runs: int, counts: list[int], rtt_ms: float) -> dict:
    """f. N ssh hosts behind the delay proxy: wall time, checker CPU per host, connections per host, peak RSS."""
    from benchmarks.fleet import Fleet

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    reports = work / "reports-fleet"
    print(f"f. fleet of ssh hosts, {rtt_ms:g} ms round trip", flush=True)
    fleet = Fleet(profile, work, max(counts), rtt_ms)
    out: dict = {"rtt_ms": rtt_ms, "sizes": {}}
    try:
        for n in counts:
            path = fleet.profile(n)
            addresses = [f"{a}:{fleet.port}" for a in fleet.addresses[:n]]

            def around(addresses=addresses):
                start = fleet.counts()

                def after() -> dict:
                    time.sleep(0.3)  # the proxy writes its counts every 0.1 s
                    end = fleet.counts()

                    def diff(a: str, what: str) -> int:
                        return end.get(a, {}).get(what, 0) - start.get(a, {}).get(what, 0)
                    return {"sessions": [diff(a, "sessions") for a in addresses],
                            "accepted": [diff(a, "accepted") for a in addresses]}
                return after

            s = series(f"fleet {n} hosts", runs, lambda path=path: [
                *ACGS, "run", "--profile", str(path), "--report-dir", str(reports)], env, around=around)
            s["cpu_per_host"] = median([r["cpu"] / n for r in s["runs"]])
            out["sizes"][str(n)] = s
    finally:
        fleet.close()
    # the same number of hosts on the local backend, in one process (--workers 0): the memory bound is the same for
    # every backend (issue 24 item 7). One measured run: RSS does not move with the machine's load, wall time does.
    big = max(counts)
    path = scaled_profile(profile, big, work)
    out["local"] = {"hosts": big, **series(f"local {big} hosts", 1, lambda: [
        *ACGS, "run", "--profile", str(path), "--report-dir", str(reports), "--workers", "0"], env)}
    return out


def down_profile(base: Path, out: Path, ssh_port: int, service_port: int) -> Path:
    """The sandbox's profile plus app-2, an ssh host at DOWN_ADDRESS that never answers, and `edge`, a service
    on it (health, ready/live, metrics and a compliance metric: SVC-01/06/09/10 and CC-04 all ask it)."""
    import yaml

    data = yaml.safe_load(base.read_text())
    auth = next(s for s in data["services"] if s["name"] == "auth")
    data["hosts"].append({"name": "app-2", "address": DOWN_ADDRESS, "backend": "ssh", "port": ssh_port,
                          "roles": ["edge"], "user": "acgs"})
    data["services"].append({**auth, "name": "edge", "role": "edge", "port": service_port, "unit": "acgs-edge",
                             "compliance_metric": "acgs_constitutional_compliance", "process": "uvicorn .*edge"})
    path = out / "profile-down.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def measure_down(profile: Path, work: Path, runs: int) -> dict:
    """g. the whole catalog and the smoke gate, with and without a host that is down."""
    from acgs_verify.profile import load_profile
    from tests.servers import dead_listener

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    reports = work / "reports-down"
    timeout = load_profile(str(profile)).thresholds.connect_timeout_seconds
    print(f"g. a host that is down (connect timeout {timeout:g} s)", flush=True)
    out: dict = {"connect_timeout": timeout}
    with dead_listener(DOWN_ADDRESS) as ssh_port, dead_listener(DOWN_ADDRESS) as service_port:
        down = down_profile(profile, work, ssh_port, service_port)
        for gate in ("compliance", "smoke"):
            for name, path in (("healthy", profile), ("down", down)):
                out[f"{gate}-{name}"] = series(f"{gate} {name}", runs, lambda path=path, gate=gate: [
                    *ACGS, "run", "--profile", str(path), "--gate", gate, "--report-dir", str(reports)], env,
                    rss=False)
    return out


def render_down(d: dict, m: dict, runs: int) -> str:
    timeout = d["connect_timeout"]
    lines = [
        f"Measured by `make bench` (down-host scenario; {runs} runs per figure after one warm-up; medians). Machine: "
        f"{m['cores']} cores ({m['cpu']}). The sandbox's profile, and the same plus `app-2`, an ssh host whose "
        f"address ({DOWN_ADDRESS}) never answers, with a service on it; connect timeout {timeout:g} s.",
        "",
        f"| gate | healthy | with app-2 down | extra | target: extra <= {timeout:g} s + {DOWN_SLACK_S:g} s | "
        "load (1/5/15) first-last |",
        "|---|---|---|---|---|---|",
    ]
    for gate in ("compliance", "smoke"):
        healthy, down = d[f"{gate}-healthy"], d[f"{gate}-down"]
        extra = down["median"] - healthy["median"]
        lines.append(f"| {gate} | {healthy['median']:.2f} s | {down['median']:.2f} s | **{extra:.2f} s** | "
                     f"{_met(extra <= timeout + DOWN_SLACK_S)} | {_loads(down)} |")
    last = d["compliance-down"]["runs"][-1]["last"]
    lines += ["", f"Last line with app-2 down: `{last}`."]
    return "\n".join(lines)


def render_fleet(f: dict, m: dict, bench_seconds: float, runs: int) -> str:
    sizes = f["sizes"]
    lines = [
        f"Measured by `make bench` (fleet scenario; {runs} runs per size after one warm-up; medians; the bench took "
        f"{bench_seconds:.0f} s in all). Machine: {m['cores']} cores ({m['cpu']}), shared with other agents' runs "
        f"while measured: load (`uptime`, 1/5/15 min) before the first and after the last run of each size is in the "
        f"table. Every host: `backend: ssh`, its own address and ControlMaster, through benchmarks/delay_proxy.py "
        f"adding {f['rtt_ms']:g} ms of round trip to the sandbox's sshd.",
        "",
        "| hosts | wall (median) | runs (s) | x one host | checker on-CPU per host | ssh sessions per host "
        "(max) | TCP connects per host (max) | peak RSS (largest process) | exit codes | load before - after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    one = sizes.get("1", {}).get("median")
    for n, s in sizes.items():
        runs_ = s["runs"]
        ratio = f"{s['median'] / one:.1f} x" if one else "-"
        sess = max((x for r in runs_ for x in r["sessions"]), default=0)
        acc = max((x for r in runs_ for x in r["accepted"]), default=0)
        lines.append(
            f"| {n} | {s['median']:.2f} s | {' '.join(f'{w:.2f}' for w in s['walls'])} | {ratio} | "
            f"{s['cpu_per_host'] * 1000:.0f} ms | {sess} | {acc} | {peak_rss_mb(runs_):.0f} MB | "
            f"{' '.join(str(r['rc']) for r in runs_)} | {runs_[0]['load']} - {runs_[-1]['load_after']} |")
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    if one and "50" in sizes:
        r50 = sizes["50"]["median"] / one
        lines.append(f"| 50 hosts <= {FLEET_TARGETS['ratio_50']:g} x one host | **{r50:.1f} x** | "
                     f"{_met(r50 <= FLEET_TARGETS['ratio_50'])} |")
    big = max(sizes, key=int)
    rss = peak_rss_mb(sizes[big]["runs"])
    lines.append(f"| {big} hosts, ssh: peak RSS < {FLEET_TARGETS['rss_mb']} MB per process | **{rss:.0f} MB** | "
                 f"{_met(rss < FLEET_TARGETS['rss_mb'])} |")
    local = f.get("local")
    if local:
        lrss, bound = peak_rss_mb(local["runs"]), FLEET_TARGETS["rss_mb"]
        lines.append(f"| {local['hosts']} hosts, local backend, one process: peak RSS < {bound} MB "
                     f"| **{lrss:.0f} MB** (load {local['runs'][0]['load']}) | {_met(lrss < bound)} |")
    sess = max((x for s in sizes.values() for r in s["runs"] for x in r["sessions"]), default=0)
    lines.append(f"| one connection (ssh session) per host | **{sess}** at most | {_met(sess == 1)} |")
    lines += ["", "TCP connects beyond the one session are SYS-06's samples (connect and close, no byte sent)."]
    return "\n".join(lines)


def strip(results: dict) -> dict:
    """last-run.json without per-item lists and outputs (they run to megabytes)."""
    def clean(s):
        if isinstance(s, dict) and "runs" in s and isinstance(s["runs"], list):
            return {**s, "runs": [{k: v for k, v in r.items() if k not in ("processes", "output")} for r in s["runs"]]}
        return s
    out = {k: ({kk: clean(vv) for kk, vv in v.items()} if k in ("scaling", "down") and isinstance(v, dict)
               and "runs" not in v else clean(v)) for k, v in results.items() if k != "fleet"}
    if "fleet" in results:
        out["fleet"] = {**results["fleet"], "sizes": {n: clean(v) for n, v in results["fleet"]["sizes"].items()}}
    return out


def render(r: dict) -> str:
    m = r["machine"]
    cat, bash, smoke = r["catalog"], r["bash"], r["smoke"]
    ct, st = timing_summary(cat["runs"]), timing_summary(smoke["runs"])
    ratio = cat["median"] / bash["median"]
    lines = [
        f"Measured by `make bench` ({r['runs']} runs per figure after one warm-up; medians; the bench took "
        f"{r['bench_seconds']:.0f} s). Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, "
        f"Python {m['python']}, Linux {m['kernel']}"
        + (", PYTHONDONTWRITEBYTECODE set" if m["bytecode_cache_off"] else "") + ". Load is `uptime`'s 1/5/15-minute "
        "average just before each run (first-last of the series).",
        "",
        "| target | measured | met | load (1/5/15) |",
        "|---|---|---|---|",
        f"| whole catalog, one environment <= {TARGETS['catalog_ratio']:g} x runbook.sh | {cat['median']:.2f} s vs "
        f"{bash['median']:.2f} s: **ratio {ratio:.2f}** | {_met(ratio <= TARGETS['catalog_ratio'])} | {_loads(cat)} |",
        f"| smoke gate <= {TARGETS['smoke_seconds']:g} s, command to exit | **{smoke['median']:.2f} s** (start-up "
        f"{st['startup_s']:.2f} s) | {_met(smoke['median'] <= TARGETS['smoke_seconds'])} | {_loads(smoke)} |",
        f"| per-check overhead <= 2 ms median | **{ct['item_cpu_ms']:.2f} ms** on-CPU per item (framework alone "
        f"{ct['item_framework_cpu_ms']:.2f} ms) | {_met(ct['item_cpu_ms'] <= TARGETS['overhead_ms'])} | "
        f"{_loads(cat)} |",
    ]
    sc = r["scaling"]
    if "50-workers" in sc and "1-serial" in sc:
        best50 = min(sc["50-workers"]["median"], sc["50-serial"]["median"])
        sr = best50 / sc["1-serial"]["median"]
        lines.append(f"| 50 hosts <= 5 x one host | {best50:.2f} s vs {sc['1-serial']['median']:.2f} s: **{sr:.1f} x** "
                     f"| {_met(sr <= TARGETS['scaling_ratio'])} | {_loads(sc['50-serial'])} |")
    all_runs = [x for s in (cat, smoke, *sc.values()) for x in s["runs"]]
    rss = peak_rss_mb(all_runs)
    lines.append(f"| peak RSS < 150 MB per process | **{rss:.0f} MB** (largest of every acgs-verify process) | "
                 f"{_met(rss < TARGETS['rss_mb'])} | |")
    lines += ["", "| figure | median | runs (s) | load (1/5/15) first-last |", "|---|---|---|---|"]
    rows = [("runbook.sh (bash, the runbook's commands)", bash), ("acgs-verify run, whole catalog", cat),
            ("acgs-verify run --gate smoke", smoke), ("python -c 'import acgs_verify.cli'", r["import"])]
    rows += [(f"{k.split('-')[0]} hosts, {'no workers' if k.endswith('serial') else f'{os.cpu_count()} workers'}", v)
             for k, v in sc.items()]
    for name, s in rows:
        lines.append(f"| {name} | {s['median']:.2f} s | {' '.join(f'{w:.2f}' for w in s['walls'])} | {_loads(s)} |")
    lines += ["", "Where a run's time goes (medians):", "",
              "| run | start-up (process start to pytest configured) | collection | per item wall | per item on-CPU "
              "(framework / check) | after pytest (reports) | items | peak RSS |", "|---|---|---|---|---|---|---|---|"]
    for name, s in [("whole catalog", cat), ("smoke", smoke), *[(f"{k} hosts", v) for k, v in sc.items()]]:
        t = timing_summary(s["runs"])
        lines.append(f"| {name} | {t['startup_s']:.3f} s | {t['collect_s']:.3f} s | {t['item_wall_ms']:.2f} ms | "
                     f"{t['item_cpu_ms']:.2f} ms ({t['item_framework_cpu_ms']:.2f} / {t['item_check_cpu_ms']:.2f}) | "
                     f"{t['reports_s']:.3f} s | {t['items_per_run']} | {peak_rss_mb(s['runs']):.0f} MB |")
    lines += ["", f"Last lines: runbook.sh `{bash['runs'][-1]['last']}`; acgs-verify `{cat['runs'][-1]['last']}`."]
    return "\n".join(lines)


def _met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _loads(s: dict) -> str:
    return f"{s['loads'][0]} - {s['loads'][-1]}" if s["loads"] else ""


def write_section(path: Path, text: str, start: str = MARK_START, end: str = MARK_END) -> None:
    doc = path.read_text() if path.exists() else f"# Benchmarks\n\n{start}\n{end}\n"
    if start not in doc:
        doc += f"\n{start}\n{end}\n"
    head, rest = doc.split(start, 1)
    _, tail = rest.split(end, 1)
    path.write_text(f"{head}{start}\n{text}\n{end}{tail}")


if __name__ == "__main__":
    sys.exit(main())
