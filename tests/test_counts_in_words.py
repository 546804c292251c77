"""Counts meet nouns in words an SRE reads without stumbling: "1 process", "1 broken link", "2 rows"; and a
log excerpt starts where its line starts (the timestamp and source first), not somewhere in its middle."""

from __future__ import annotations

import json
import re
from pathlib import Path

from acgs_verify.words import excerpt, plural
from tests.conftest import REPO, run_cli

OOM = ("Jan 12 03:14:07 app-1 kernel: [123456.789012] Out of memory: Killed process 4242 (python3) "
       "total-vm:8123456kB, anon-rss:7000000kB, file-rss:1234kB, shmem-rss:0kB, UID:1000 pgtables:14000kB "
       "oom_score_adj:0 and a long tail the kernel adds on some versions")


def test_plural_says_one_and_many():
    assert [plural(1, "process"), plural(2, "process"), plural(0, "broken link"), plural(1, "row")] == [
        "1 process", "2 processes", "0 broken links", "1 row"]
    assert plural(1, "entry", "entries") == "1 entry" and plural(3, "entry", "entries") == "3 entries"


def test_no_check_or_probe_puts_a_bare_count_before_a_plural_noun():
    """`{len(x)} lines` says "1 lines"; such counts go through words.plural."""
    bare = re.compile(r"\{len\([^{}]*\)\} +[a-z][a-z ]*?[a-z]s\b")
    found = [f"{p.relative_to(REPO)}:{i}: {line.strip()}" for p in [*(REPO / "checks").glob("*.py"),
                                                                   *(REPO / "acgs_verify" / "probes").glob("*.py")]
             for i, line in enumerate(p.read_text().splitlines(), 1) if bare.search(line)]
    assert not found, "\n".join(found)


def test_excerpt_keeps_the_start_of_the_line():
    assert excerpt(OOM, 60).startswith("Jan 12 03:14:07 app-1 kernel:") and excerpt(OOM, 60).endswith("...")
    assert len(excerpt(OOM, 60)) == 60 and excerpt("short line\n") == "short line"


def test_one_oom_kill_reads_as_one_line_from_its_start(tmp_path: Path):
    log = tmp_path / "kern.log"
    log.write_text("Jan 12 03:14:00 app-1 kernel: [1.0] booting\n" + OOM + "\n")
    profile = tmp_path / "p.yaml"
    profile.write_text("name: one-host\nhosts:\n  - {name: app-1, address: 127.0.0.1, backend: local, roles: [app]}\n"
                       f"paths: {{kernel_log: {log}}}\n")
    res = run_cli("run", "--profile", str(profile), "--report-dir", str(tmp_path / "reports"), "--", "-k", "SYS-05")
    summary = json.loads((tmp_path / "reports" / "latest" / "summary.json").read_text())
    sys05 = next(c for c in summary["checks"] if c["id"] == "SYS-05")
    assert sys05["outcome"] == "failed", res.stdout[-2000:]
    assert "1 'Killed process' line in the last" in sys05["message"], sys05["message"]
    assert "latest: Jan 12 03:14:07 app-1 kernel: [123456.789012] Out of memory: Killed process 4242" in \
        sys05["message"], sys05["message"]
