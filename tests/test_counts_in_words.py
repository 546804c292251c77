"""Counts meet nouns in words an SRE reads without stumbling: "1 process", "1 broken link", "2 rows"; and a
log excerpt starts where its line starts (the timestamp and source first), not somewhere in its middle."""

from __future__ import annotations

import ast
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


# words after a count that are not its noun ("3 is", "2 bytes" is a unit, as "2 ms")
NOT_NOUNS = {"is", "was", "has", "does", "its", "this", "less", "bytes"}


def _noun_after(text: str) -> str | None:
    """The plural noun among the first three words of `text`, when it starts right after a count: " user tables)"
    -> "tables"."""
    words = re.match(r" +((?:[A-Za-z-]+ ){0,2}[A-Za-z-]+)", text)
    return next((w for w in (words.group(1).split() if words else ()) if len(w) > 3 and w[-1] == "s" and
                 w[-2].islower() and w.lower() not in NOT_NOUNS), None)


def bare_counts(path: Path) -> list[str]:
    """f-strings of `path` that put `{len(x)}` or `{sum(x)}` right before a plural noun. Walked as the parser sees
    them: a string split over lines (`f"{len(t)} user " f"tables"`) is one string, which a line-by-line pattern
    never saw whole."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.JoinedStr):
            continue
        for value, text in zip(node.values, node.values[1:], strict=False):
            count = isinstance(value, ast.FormattedValue) and value.format_spec is None and \
                isinstance(value.value, ast.Call) and getattr(value.value.func, "id", None) in ("len", "sum")
            if count and isinstance(text, ast.Constant) and _noun_after(text.value):
                found.append(f"{path.name}:{node.lineno}: {{{ast.unparse(value.value)}}}{text.value}")
    return found


def test_no_check_or_probe_puts_a_bare_count_before_a_plural_noun():
    """`{len(x)} lines` says "1 lines"; such counts go through words.plural."""
    found = [hit for p in [*(REPO / "checks").glob("*.py"), *(REPO / "acgs_verify" / "probes").glob("*.py")]
             for hit in bare_counts(p)]
    assert not found, "\n".join(found)


def test_a_count_split_over_lines_or_before_an_adjective_is_found(tmp_path):
    """The shapes the earlier line-by-line pattern let through, and the plural() form it must accept."""
    module = tmp_path / "m.py"
    module.write_text('a = (f"{len(t)} user "\n     f"tables)")\n'
                      'b = f"{len(alerts)} unresolved CRITICAL alerts"\n'
                      'c = f"{sum(ups)} of {plural(len(ups), \'run\')} in the last {len(xs)} of them"\n')
    assert bare_counts(module) == ["m.py:1: {len(t)} user tables)", "m.py:3: {len(alerts)} unresolved CRITICAL alerts"]


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
