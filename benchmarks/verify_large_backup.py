"""Benchmark (not a test): verify a ~1 GiB database.sql.gz as BK-03/BK-04 do, against `gzip -t` on the same file.

    .venv/bin/python benchmarks/verify_large_backup.py [--size-gib 1.0] [--dir /tmp/acgs-bench] [--keep]

Builds a pg_dump-like plain dump (audit_logs COPY rows with SHA-256 hashes and JSON, the sandbox's shape) and
gzips it (level 6, gzip's default) until the file is --size-gib, once (kept between runs with --keep). Then it
times, each in a fresh process measured by wait4() (user+sys CPU, wall clock and peak RSS):
    gzip -t FILE
    python -c "scan_archive(FILE, keep_ends=True); dump_tail_status(...)"   (what BK-03 + BK-04 run)
and prints the ratio of the two and the verifier's peak memory, next to the load average (the machine may be
shared). Targets: verifier wall time <= 1.2x gzip -t, peak RSS < 64 MB.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import time
import zlib
from pathlib import Path

VERIFY = """
import sys
from acgs_verify.probes.archive import scan_archive, dump_tail_status
scan = scan_archive(sys.argv[1], keep_ends=True)
print(scan.ok, scan.problem, scan.uncompressed, dump_tail_status(scan))
"""


def build(path: Path, size: int) -> None:
    """Write a dump-shaped file whose gzip is `size` bytes, streaming (a 16 MB text block, varied per copy)."""
    rnd = random.Random(7)
    head = "--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n\nCOPY public.audit_logs (id, " \
           '"timestamp", created_at, event_data, prev_hash, current_hash, tenant_id, user_id, service_name, ' \
           "event_type, constitutional_hash) FROM stdin;\n"
    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
    written, row = 0, 0
    with open(path, "wb") as f:
        f.write(comp.compress(head.encode()))
        while written < size:
            lines = []
            for _ in range(40_000):
                row += 1
                h = hashlib.sha256(str(row).encode()).hexdigest()
                data = json.dumps({"request_id": f"req-{row:09d}", "policy_id": f"policy-{rnd.randrange(40):03d}",
                                   "decision": rnd.choice(("allow", "deny")), "score": round(rnd.random(), 4)})
                lines.append(f"{row}\t2025-07-01 02:{row % 60:02d}:{row % 60:02d}+00\t2025-07-01 02:00:00+00\t{data}"
                             f"\t{h}\t{hashlib.sha256(h.encode()).hexdigest()}\ttenant-{row % 5}\tuser-{row % 60:03d}"
                             f"\tpolicy-governance\tgovernance_decision\tcdd01ef066bc6cf2\n")
            out = comp.compress("".join(lines).encode())
            f.write(out)
            written = f.tell()
        f.write(comp.compress(b"\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n"))
        f.write(comp.flush())


def load_now() -> str:
    """The load average as the summary lines print it: `0.52 1.10 0.98 on 2 CPUs`."""
    return f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"


def measure(argv: list[str]) -> dict:
    """Wall time, CPU time and peak RSS of one command, by /usr/bin/time (a small C parent: a child's peak RSS
    counts the memory it was forked with, so it must not be forked from this Python process directly)."""
    with open(os.devnull, "w") as devnull:
        fmt = "ACGSBENCH %e %U %S %M"
        res = subprocess.run(["/usr/bin/time", "-f", fmt, *argv], capture_output=True, text=True, stdin=devnull)
    line = next(ln for ln in res.stderr.splitlines() if ln.startswith("ACGSBENCH"))
    wall, user, sys_, rss_kb = (float(x) for x in line.split()[1:])
    return {"wall": wall, "cpu": user + sys_, "rss_mb": rss_kb / 1024, "exit": res.returncode,
            "out": res.stdout.strip()}


def dump_for_bench(description: str) -> tuple[argparse.Namespace, Path]:
    """The options both backup benchmarks take, and the dump they verify (built once, kept in --dir with --keep)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--size-gib", type=float, default=1.0)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/acgs-bench"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keep", action="store_true", help="keep the file for the next run")
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    path = args.dir / "database.sql.gz"
    size = int(args.size_gib * (1 << 30))
    if not path.exists() or path.stat().st_size < size:
        t = time.monotonic()
        build(path, size)
        print(f"built {path}: {path.stat().st_size / (1 << 20):.0f} MiB in {time.monotonic() - t:.0f} s")
    return args, path


def main() -> int:
    args, path = dump_for_bench(__doc__.splitlines()[0])
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)  # same page cache for both
    repo = Path(__file__).resolve().parents[1]
    env_python = [sys.executable, "-c", VERIFY, str(path)]
    os.environ["PYTHONPATH"] = str(repo)
    rows = []
    for r in range(args.rounds):
        load = os.getloadavg()[0]
        g = measure(["gzip", "-t", str(path)])
        v = measure(env_python)
        rows.append((g, v, load))
        print(f"round {r + 1}: load {load:.2f} | gzip -t wall {g['wall']:.1f} s cpu {g['cpu']:.1f} s rss "
              f"{g['rss_mb']:.1f} MB | verifier wall {v['wall']:.1f} s cpu {v['cpu']:.1f} s rss {v['rss_mb']:.1f} MB "
              f"| ratio wall {v['wall'] / g['wall']:.2f} cpu {v['cpu'] / g['cpu']:.2f} | {v['out'][:120]}")
        assert g["exit"] == 0 and v["out"].startswith("True"), (g, v)
    best_g = min(x[0]["wall"] for x in rows)
    best_v = min(x[1]["wall"] for x in rows)
    peak = max(x[1]["rss_mb"] for x in rows)
    print(f"file {path.stat().st_size / (1 << 20):.0f} MiB; best wall: gzip -t {best_g:.1f} s, verifier {best_v:.1f} s "
          f"(ratio {best_v / best_g:.2f}, target <= 1.2); verifier peak RSS {peak:.1f} MB (target < 64); "
          f"load average now {load_now()}")
    if not args.keep:
        path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
