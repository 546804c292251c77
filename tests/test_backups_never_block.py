"""A backup folder, a profile and a waivers file are read as regular files only, with a byte and a time budget: a FIFO
planted as the latest dump or its manifest would block the open forever, a link to /dev/zero would be read forever
(and, as the manifest, held in memory). Each is refused in one line, in bounded time.

Each probe call runs in a child process with a deadline, so that a regression fails this test instead of hanging
the suite.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

BOUND = 20  # seconds: every refusal below takes milliseconds; a blocked open or an endless read never ends

DUMP = b"--\n-- PostgreSQL database dump\n--\nSELECT 1;\n--\n-- PostgreSQL database dump complete\n--\n"


def _plant(path: Path, what: str) -> None:
    if what == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")


def _child(code: str):
    """Run `code` (which sets `out`) in a fresh interpreter; its `out` as JSON, or a failure if it outlives BOUND."""
    script = f"import json\n{code}\nprint(json.dumps(out))"
    started = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=BOUND,
                              cwd=REPO)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {BOUND} s: {code}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert time.monotonic() - started < BOUND
    return json.loads(done.stdout.splitlines()[-1])


def _backup(tmp_path: Path) -> Path:
    folder = tmp_path / "backups" / "20261207_020000"
    folder.mkdir(parents=True)
    return folder


@pytest.mark.parametrize("what", ["fifo", "devzero"])
def test_a_manifest_that_is_no_regular_file_is_a_problem_not_a_wait(tmp_path, what):
    folder = _backup(tmp_path)
    (folder / "database.sql").write_bytes(DUMP)
    _plant(folder / "manifest.json", what)
    out = _child(f"""
from pathlib import Path
from acgs_verify.probes.backups import expected_files
e = expected_files(Path({str(folder)!r}), None)
out = {{"files": e.files, "problem": e.problem}}""")
    kind = "a FIFO" if what == "fifo" else "a character device"
    assert out["problem"] == f"manifest.json unreadable ({kind}, not a regular file)", out
    assert out["files"] == ["database.sql", "manifest.json"], out


@pytest.mark.parametrize("what", ["fifo", "devzero"])
@pytest.mark.parametrize("name", ["database.sql.gz", "database.sql", "logs.tar.gz", "database.dump"])
def test_a_dump_or_archive_that_is_no_regular_file_is_refused_at_once(tmp_path, what, name):
    folder = _backup(tmp_path)
    path = folder / name
    _plant(path, what)
    if name == "database.dump":  # pg_dump -Fc: its magic is read before pg_restore is given the path
        call = "custom_dump_status(p, 'pg_restore', 10)"
    elif name == "database.sql":
        call = "plain_dump_ends(p)"
    else:
        call = "BackupReader().scan(p, 10)"
    out = _child(f"""
from pathlib import Path
from acgs_verify.probes.archive import BackupReader, custom_dump_status, plain_dump_ends, scan_archive
from acgs_verify.errors import ProbeError
p = Path({str(path)!r})
out = {{}}
for name, call in (("call", lambda: {call}), ("scan", lambda: scan_archive(p, feed=lambda b: None))):
    try:
        out[name] = repr(call())
    except ProbeError as exc:
        out[name] = "ProbeError: " + str(exc)""")
    kind = "a FIFO" if what == "fifo" else "a character device"
    for key in ("call", "scan"):
        assert out[key] == f"ProbeError: cannot read {path}: {kind}, not a regular file", out


def _bomb(path: Path, mib: int) -> None:
    """A gzip of `mib` MiB of zeros: about 1 KiB on disk per MiB it inflates to, CRC and length correct.

    Deflating 2 GiB took 7 s of CPU; after a sync flush, each further MiB of zeros deflates to the same bytes (the
    window holds only zeros), so one compressed MiB is written `mib - 1` times and only the CRC reads them all."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    first = c.compress(block) + c.flush(zlib.Z_SYNC_FLUSH)
    again = c.compress(block) + c.flush(zlib.Z_SYNC_FLUSH)
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(block, crc)
    last = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # an empty final block ends the deflate stream
    with open(path, "wb") as f:
        f.write(first)
        for _ in range(mib - 1):
            f.write(again)
        f.write(last + struct.pack("<II", crc, (mib << 20) & 0xFFFFFFFF))


def test_an_archive_is_read_no_longer_than_its_time_budget(tmp_path):
    from acgs_verify.probes.archive import scan_archive

    bomb = tmp_path / "database.sql.gz"
    _bomb(bomb, 2048)
    started = time.monotonic()
    scan = scan_archive(bomb, keep_ends=True, timeout=0.2)
    took = time.monotonic() - started
    assert took < 5, took
    assert scan.problem and scan.problem.startswith("not read to its end within 0.2 s (stopped at byte "), scan
    assert scan.uncompressed < 2048 << 20, scan.uncompressed
    # and without a budget the same probe reads a small archive to its end, as before
    small = tmp_path / "small.sql.gz"
    small.write_bytes(gzip.compress(DUMP))
    assert scan_archive(small, keep_ends=True, timeout=10).ok


@pytest.mark.parametrize("what", ["fifo", "devzero"])
def test_a_profile_or_waivers_file_that_is_no_regular_file_is_one_line_not_a_wait(tmp_path, what):
    planted = tmp_path / "planted.yaml"
    _plant(planted, what)
    out = _child(f"""
from pathlib import Path
from acgs_verify.profile.source import SourceError, read_yaml
try:
    read_yaml(Path({str(planted)!r}))
    out = "read"
except SourceError as exc:
    out = str(exc)""")
    kind = "a FIFO" if what == "fifo" else "a character device"
    assert out == f"{planted}: cannot read: {kind}, not a regular file", out
    profile = tmp_path / "p.yaml"
    profile.write_text("name: p\ncertificates: [/nonexistent.pem]\n")
    started = time.monotonic()
    res = run_cli("run", "--profile", str(profile), "--waivers", str(planted), "--report-dir",
                  str(tmp_path / "reports"), timeout=BOUND)
    assert time.monotonic() - started < BOUND
    assert res.returncode == 3, res.stderr
    assert res.stderr.splitlines() == [f"acgs-verify: error: {planted}: cannot read: {kind}, not a regular file"], \
        res.stderr


def test_backup_checks_on_a_planted_fifo_and_dev_zero_end_in_bounded_time(tmp_path):
    """The whole run: BK-02, BK-03, BK-04 on a latest backup whose dump is a FIFO and whose manifest is /dev/zero."""
    folder = _backup(tmp_path)
    _plant(folder / "database.sql.gz", "fifo")
    _plant(folder / "manifest.json", "devzero")  # the manifest makes it ACGS's layout: it is read
    (folder / "nginx.production.conf").write_text("server {}\n")
    profile = tmp_path / "p.yaml"
    profile.write_text(f"name: p\nhosts: [{{name: h1, backend: local, roles: [backup]}}]\n"
                       f"paths: {{backups: {str(tmp_path / 'backups')!r}}}\n"
                       "backups: {restore_drill: false}\n")
    started = time.monotonic()
    res = run_cli("run", "--profile", str(profile), "--report-dir", str(tmp_path / "reports"), "--",
                  "-m", "backups", "-k", "BK-02 or BK-03 or BK-04", timeout=120)
    assert time.monotonic() - started < 120
    summary = json.loads((tmp_path / "reports" / "latest" / "summary.json").read_text())
    checks = {c["id"]: c for c in summary["checks"]}
    assert {"BK-02", "BK-03", "BK-04"} <= set(checks), (res.stdout[-2000:], res.stderr)
    assert all(checks[i]["outcome"] != "passed" for i in ("BK-02", "BK-04")), checks
    assert "manifest.json unreadable (a character device, not a regular file)" in checks["BK-02"]["message"], \
        checks["BK-02"]["message"]
