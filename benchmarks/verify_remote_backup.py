"""Benchmark (not a test): a ~1 GiB database.sql.gz on an ssh host (a real sshd on 127.0.0.48, the sandbox's
component alone), verified as BK-03/BK-04 do over the connection, against `ssh host gzip -t FILE`.

    .venv/bin/python benchmarks/verify_remote_backup.py [--size-gib 1.0] [--dir /tmp/acgs-bench] [--keep]

The file is built as benchmarks/verify_large_backup.py builds it (and shared with it through --dir). Each round
times, each in a fresh process measured by /usr/bin/time (wall clock, user+sys CPU, peak RSS of the process and
its children):
    ssh -F CONFIG HOST gzip -t FILE                                     the baseline
    scan_on_host(pool, host, FILE, keep_ends=True) + dump_tail_status   the host's gzip there (`gzip -dc | tail`)
    scan_on_host(..., stream=True) + dump_tail_status                   every byte through ssh into zlib here
and prints the ratios to the baseline and the checker's peak memory, next to the load average (the machine may
be shared). Target: the verification <= 1.2 x the baseline in a few MB of checker memory.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.verify_large_backup import dump_for_bench, load_now, measure  # noqa: E402

ADDRESS = "127.0.0.48"
VERIFY = """
import json, sys
from acgs_verify.probes.archive import dump_tail_status
from acgs_verify.probes.archive_remote import scan_on_host, tools
from acgs_verify.hosts.pool import HostPool
from acgs_verify.profile import Host
host = Host.model_validate(json.loads(sys.argv[1]))
pool = HostPool(connect_timeout=10)
try:
    if sys.argv[3] == "connect":  # the checker's own floor: interpreter, imports, one ssh connection
        print(True, sorted(tools(pool, host)))
        raise SystemExit(0)
    scan = scan_on_host(pool, host, sys.argv[2], timeout=3600, keep_ends=True, stream=sys.argv[3] == "stream" or None)
    print(scan.ok, scan.problem, dump_tail_status(scan), scan.how)
finally:
    pool.close()
"""


def main() -> int:
    args, path = dump_for_bench(__doc__.splitlines()[0])

    import json

    from acgs_verify.hosts.backends import ssh_config_text
    from acgs_verify.profile import Host
    from acgs_verify.sandbox import Sandbox
    from acgs_verify.sandbox.components.sshd import Sshd

    repo = Path(__file__).resolve().parents[1]
    os.environ["PYTHONPATH"] = str(repo)
    with tempfile.TemporaryDirectory(prefix="acgs-bench-ssh-", dir="/tmp") as d:
        from tests.conftest import free_port_offset  # an offset no other run on this machine holds

        sb = Sandbox(Path(d) / "sb", port_offset=free_port_offset(),
                     components=[Sshd(address=ADDRESS, host_name="db-1")])
        sb.up()
        try:
            entry = sb.profile_data()["hosts"][-1]
            host = Host.model_validate(entry)
            config = Path(d) / "ssh_config"
            config.write_text(ssh_config_text(host, 10, Path(d)))
            rows = []
            for r in range(args.rounds):
                load = os.getloadavg()[0]
                g = measure(["ssh", "-F", str(config), ADDRESS, "gzip", "-t", str(path)])
                h = measure([sys.executable, "-c", VERIFY, json.dumps(entry), str(path), "host"])
                s = measure([sys.executable, "-c", VERIFY, json.dumps(entry), str(path), "stream"])
                c = measure([sys.executable, "-c", VERIFY, json.dumps(entry), str(path), "connect"])
                rows.append((g, h, s, c, load))
                print(f"round {r + 1}: load {load:.2f} | ssh gzip -t wall {g['wall']:.1f} s | on the host wall "
                      f"{h['wall']:.1f} s rss {h['rss_mb']:.1f} MB ({h['out'][-40:]}) | streamed wall "
                      f"{s['wall']:.1f} s cpu {s['cpu']:.1f} s rss {s['rss_mb']:.1f} MB ({s['out'][-40:]}) | "
                      f"connect only rss {c['rss_mb']:.1f} MB | ratio host {h['wall'] / g['wall']:.2f} streamed "
                      f"{s['wall'] / g['wall']:.2f}")
                assert g["exit"] == 0 and h["out"].startswith("True") and s["out"].startswith("True"), (g, h, s)
        finally:
            sb.down()
    best = [min(x[i]["wall"] for x in rows) for i in range(3)]
    peak = [max(x[i]["rss_mb"] for x in rows) for i in (1, 2, 3)]
    print(f"file {path.stat().st_size / (1 << 20):.0f} MiB; best wall: ssh gzip -t {best[0]:.1f} s, on the host "
          f"{best[1]:.1f} s (ratio {best[1] / best[0]:.2f}), streamed {best[2]:.1f} s (ratio {best[2] / best[0]:.2f}); "
          f"checker peak RSS {peak[0]:.1f} MB / {peak[1]:.1f} MB (connect only: {peak[2]:.1f} MB); load average now "
          f"{load_now()}")
    if not args.keep:
        path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
