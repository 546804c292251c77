"""The backup layouts real systems use, on real files in tmp dirs, read by whole runs of the BK checks.

Each run is `acgs-verify run` on a profile that names this machine and the backup root (no services, no databases): the
checks read the files the way they read /var/backups/acgs. First what "saw nothing" must never pass; then
the layouts (dated folder names, a `latest` symlink, plain or gzipped dumps, the two file sets) detected.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import os
import tarfile
import time
from pathlib import Path

import pytest

from acgs_verify.probes import archive
from acgs_verify.probes import backups as probe
from tests.conftest import run_cli

DUMP = ("--\n-- PostgreSQL database dump\n--\n\nSET x = 1;\nCOPY t (a) FROM stdin;\n{rows}\\.\n\n"
        "--\n-- PostgreSQL database dump complete\n--\n\n")
DAILY = ("database.sql.gz", "config.tar.gz", "application.tar.gz", "logs.tar.gz")


def bk_run(tmp_path: Path, root: Path, *extra: str) -> dict[str, tuple[str, str]]:
    """BK-01..06 against `root`: {check ID: (outcome, message or measured)}."""
    profile = tmp_path / "profile.yaml"
    # the host these files are on, named: a profile that names no target is refused (exit 3)
    profile.write_text(f"name: layouts\nhosts: [{{name: local, address: 127.0.0.1, backend: local}}]\n"
                       f"paths:\n  backups: {root}\n")
    reports = tmp_path / "reports"
    res = run_cli("run", "--profile", str(profile), "--report-dir", str(reports), *extra, "--", "-k", "BK",
                  timeout=120)
    summary = json.loads((reports / "latest" / "summary.json").read_text())
    out = {c["id"]: (c["outcome"], c.get("message") or c.get("measured") or "") for c in summary["checks"]}
    assert out, res.stdout + res.stderr
    return out


def tgz(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def stamp(days_ago: float, fmt: str) -> tuple[str, float]:
    """A folder name in `fmt` for a backup written `days_ago` days ago (an hour before that), and its mtime."""
    t = time.time() - 3600 - days_ago * 86400
    return dt.datetime.fromtimestamp(t).strftime(fmt), t


def daily_backup(root: Path, name: str, mtime: float) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "database.sql.gz").write_bytes(gzip.compress(DUMP.format(rows="1\n2\n").encode()))
    for f in DAILY[1:]:
        tgz(d / f, {f"x/{f}.txt": b"data\n"})
    _age(d, mtime)
    return d


def field_backup(root: Path, name: str, mtime: float, dump: str | None = None) -> Path:
    """What ACGS's backup script writes: a plain dump, the nginx config, a manifest naming both."""
    d = root / name
    d.mkdir(parents=True)
    (d / "database.sql").write_text(dump if dump is not None else DUMP.format(rows="1\n2\n3\n"))
    (d / "nginx.production.conf").write_text("server { listen 443 ssl; }\n")
    (d / "manifest.json").write_text(json.dumps({"backup_id": name, "files": ["database.sql",
                                                                              "nginx.production.conf"]}))
    _age(d, mtime)
    return d


def _age(d: Path, mtime: float) -> None:
    for p in [*d.iterdir(), d]:
        os.utime(p, (mtime, mtime))


# ----------------------------------------------------------------------------------- saw nothing: no pass


def test_an_empty_backup_root_passes_nothing(tmp_path):
    root = tmp_path / "backups"
    root.mkdir()
    out = bk_run(tmp_path, root)
    assert all(outcome != "passed" for outcome, _ in out.values()), out
    assert "no backup folder" in out["BK-01"][1] and "is empty" in out["BK-01"][1], out["BK-01"]


def test_an_empty_dated_folder_is_not_a_backup(tmp_path):
    root = tmp_path / "backups"
    (root / dt.date.today().strftime("%Y%m%d")).mkdir(parents=True)
    out = bk_run(tmp_path, root)
    assert out["BK-01"][0] == "failed" and "(empty)" in out["BK-01"][1], out["BK-01"]
    assert all(outcome != "passed" for outcome, _ in out.values()), out


def test_a_plain_dump_without_its_closing_line_fails_bk04(tmp_path):
    root = tmp_path / "backups"
    for k in range(8):
        name, t = stamp(k, "%Y%m%d_%H%M%S")
        cut = DUMP.format(rows="1\n2\n3\n").split("\\.")[0] if k == 0 else None
        field_backup(root, name, t, cut)
    out = bk_run(tmp_path, root)
    assert out["BK-04"][0] == "failed" and "no '-- PostgreSQL database dump complete'" in out["BK-04"][1], out
    assert out["BK-04"][1].count("database.sql") >= 1 and "database.sql.gz" not in out["BK-04"][1], out["BK-04"]


def test_an_archive_of_zero_members_fails_bk03(tmp_path):
    root = tmp_path / "backups"
    for k in range(8):
        d = daily_backup(root, *stamp(k, "%Y%m%d"))
        if k == 0:  # the newest: a logs archive made of nothing (tar -czf of a folder it could not read)
            tgz(d / "logs.tar.gz", {})
            _age(d, (d / "config.tar.gz").stat().st_mtime)
    out = bk_run(tmp_path, root)
    assert out["BK-03"][0] == "failed" and "logs.tar.gz: tar: no members" in out["BK-03"][1], out["BK-03"]


def test_no_expected_file_there_means_nothing_read_by_bk03(tmp_path):
    root = tmp_path / "backups"
    name, t = stamp(0, "%Y%m%d")
    (root / name).mkdir(parents=True)
    (root / name / "README").write_text("backups moved to the NAS\n")
    _age(root / name, t)
    out = bk_run(tmp_path, root)
    assert out["BK-03"][0] != "passed" and "nothing to read" in out["BK-03"][1], out["BK-03"]
    assert out["BK-02"][0] == "failed" and "database.sql.gz missing" in out["BK-02"][1], out["BK-02"]


# ---------------------------------------------------------------------------------------------- layouts


@pytest.mark.parametrize("fmt", ["%Y%m%d", "%Y%m%d_%H%M%S", "%Y-%m-%d", "%Y-%m-%dT%H%M%S"])
def test_each_dated_name_is_a_backup_folder(tmp_path, fmt):
    root = tmp_path / "backups"
    for k in range(8):
        daily_backup(root, *stamp(k, fmt))
    listing = probe.list_backups(root)
    assert len(listing.backups) == 8 and not listing.left_out, listing.left_out
    out = bk_run(tmp_path, root)
    assert {i: o for i, (o, _) in out.items()} == {"BK-01": "passed", "BK-02": "passed", "BK-03": "passed",
                                                     "BK-04": "passed", "BK-05": "passed", "BK-06": "passed",
                                                     "BK-07": "skipped"}, out
    assert "8 backup folders kept" in out["BK-05"][1], out["BK-05"]


def test_the_acgs_script_layout_passes_with_the_obvious_profile(tmp_path):
    root = tmp_path / "backups"
    for k in range(8):
        field_backup(root, *stamp(k, "%Y%m%d_%H%M%S"))
    newest = sorted(p.name for p in root.iterdir())[-1]
    (root / "latest").symlink_to(newest)
    out = bk_run(tmp_path, root)
    assert {o for i, (o, _) in out.items() if i != "BK-07"} == {"passed"}, out
    assert f"latest -> {newest} (the newest)" in out["BK-01"][1], out["BK-01"]
    assert "ACGS's backup script" in out["BK-02"][1] and "manifest.json there, listing" in out["BK-02"][1], out["BK-02"]


def test_one_backup_kept_is_counted_as_one(tmp_path):
    root = tmp_path / "backups"
    daily_backup(root, *stamp(0, "%Y%m%d_%H%M%S"))
    out = bk_run(tmp_path, root)
    assert out["BK-05"][0] == "failed" and "1 backup folder kept" in out["BK-05"][1], out["BK-05"]


def test_folders_left_out_are_named_with_why(tmp_path):
    root = tmp_path / "backups"
    for k in range(8):
        daily_backup(root, *stamp(k, "%Y%m%d"))
    (root / "20991231").mkdir()
    (root / "20991231" / "database.sql.gz").write_bytes(b"x")
    (root / dt.date.today().strftime("%Y-%m-%d")).mkdir()  # made, then the backup failed: empty
    (root / "tmp-restore").mkdir()
    (root / "20251341").mkdir()
    listing = probe.list_backups(root)
    why = dict(s.split(" ", 1) for s in listing.left_out)
    assert "in the future" in why["20991231"] and "empty" in why[dt.date.today().strftime("%Y-%m-%d")]
    assert "not a date" in why["tmp-restore"] and "not a valid date" in why["20251341"], why
    out = bk_run(tmp_path, root)
    for name in ("20991231", "tmp-restore", "20251341"):
        assert name in out["BK-01"][1] and name in out["BK-05"][1], out


def test_latest_symlink_outside_the_root_is_a_finding(tmp_path):
    root = tmp_path / "backups"
    for k in range(8):
        daily_backup(root, *stamp(k, "%Y%m%d"))
    elsewhere = daily_backup(tmp_path / "elsewhere", "20200101", time.time())
    (root / "latest").symlink_to(elsewhere)
    listing = probe.list_backups(root)
    assert listing.link is not None and listing.link.backup is None and "outside" in listing.link.problem
    out = bk_run(tmp_path, root)
    assert out["BK-01"][0] == "failed" and "points outside the backup root" in out["BK-01"][1], out["BK-01"]
    assert str(elsewhere) in out["BK-01"][1]


def test_latest_symlink_naming_an_older_folder_is_reported(tmp_path):
    root = tmp_path / "backups"
    names = [daily_backup(root, *stamp(k, "%Y%m%d_%H%M%S")).name for k in range(8)]
    (root / "latest").symlink_to(root / names[3])
    out = bk_run(tmp_path, root)
    assert out["BK-01"][0] == "passed", out["BK-01"]
    assert f"latest -> {names[3]}" in out["BK-01"][1] and f"the newest is {names[0]}" in out["BK-01"][1], out


def test_plain_dump_ends_are_read_without_reading_the_file(tmp_path):
    path = tmp_path / "database.sql"
    rows = "".join(f"{i}\n" for i in range(300_000))
    path.write_text(DUMP.format(rows=rows))
    scan = archive.plain_dump_ends(path)
    assert scan.ok and scan.uncompressed == 0 < len(scan.tail) <= 1 << 16
    assert b"dump complete" in scan.tail and scan.head.startswith(b"--")


def test_expected_set_from_the_profile_wins_over_detection(tmp_path):
    d = field_backup(tmp_path, "20250701_020000", time.time())
    assert probe.expected_files(d, ["database.sql", "extra.tar.gz"]).files == ["database.sql", "extra.tar.gz"]
    found = probe.expected_files(d, None)
    assert found.files == ["database.sql", "nginx.production.conf", "manifest.json"] and found.dump == "database.sql"
    (d / "manifest.json").write_text("{not json")
    assert "not valid JSON" in (probe.expected_files(d, None).problem or "")
