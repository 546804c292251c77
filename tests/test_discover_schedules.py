"""The backup root from what the host schedules (issue 24, item 5): `BACKUP_DIR=` in the script a crontab line or a
systemd timer's service runs, in the service's Environment=, or on the cron line itself. Crontabs, units and
scripts are what a target says: read with a cap, as text, never run, never through a symlink; only a literal
absolute path is taken."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from acgs_verify.discover.backups import READ_CAP, find_backups, scheduled_backup_dirs
from acgs_verify.discover.choice import choose
from acgs_verify.discover.reader import HostReader
from acgs_verify.hosts.pool import HostPool
from acgs_verify.profile import Host


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture
def reader(tmp_path):
    pool = HostPool(connect_timeout=5)
    reader = HostReader(pool, Host(name="sched-1"), ports=set())
    reader.prefix = str(tmp_path)
    yield reader
    pool.close()


@pytest.fixture
def host(tmp_path):
    """Under tmp_path (the layout's prefix): a system crontab, a user crontab, a timer and its service, and the
    scripts they name, hostile ones among them."""
    p = tmp_path
    marker = p / "ran"
    scripts = {
        "s1": _write(p / "opt/s1.sh", f"#!/bin/sh\nexport BACKUP_DIR=\"{p}/from-cron\"  # nightly\n"),
        "timer": _write(p / "opt/timer.sh", f"#!/bin/sh\nBACKUP_DIR=${{BACKUP_DIR:-{p}/from-timer}}\n"),
        # a command substitution is not a path: never taken, never run
        "hostile": _write(p / "opt/hostile.sh", f"#!/bin/sh\nBACKUP_DIR=$(touch {marker}){p}/x\n"
                          f"BACKUP_DIR=`touch {marker}`\n"),
        # past the cap: never read that far
        "long": _write(p / "opt/long.sh", "#" * READ_CAP + f"\nBACKUP_DIR={p}/past-the-cap\n"),
        "binary": _write(p / "opt/binary", b"\x7fELF\x02\x01\x00\xc0\xff" + f"BACKUP_DIR={p}/binary\n".encode()),
    }
    secret = _write(p / "secret/backup.sh", f"BACKUP_DIR={p}/through-a-symlink\n")
    (p / "opt/link.sh").symlink_to(secret)
    os.mkfifo(p / "opt/fifo.sh")
    cron = "\n".join([
        "SHELL=/bin/sh", f"BACKUP_DIR={p}/an-assignment-line", "# 0 1 * * * root /opt/commented.sh",
        f"30 2 * * * root {scripts['s1']} >/dev/null 2>&1",
        f"@daily root {scripts['hostile']}", f"5 4 * * * root {scripts['long']}",
        f"6 4 * * * root {scripts['binary']}", f"7 4 * * * root {p}/opt/link.sh", f"8 4 * * * root {p}/opt/fifo.sh",
        "9 4 * * * root /no/such/script.sh 'unbalanced", ""])
    _write(p / "etc/cron.d/acgs", cron)
    _write(p / "etc/cron.daily/acgs-dump", f"#!/bin/sh\nBACKUP_DIR='{p}/from-cron-daily'\n")
    _write(p / "var/spool/cron/crontabs/acgs", f"0 3 * * * BACKUP_DIR={p}/on-the-line /bin/true\n")
    _write(p / "etc/systemd/system/acgs-backup.timer", "[Timer]\nOnCalendar=daily\nUnit=acgs-backup.service\n")
    _write(p / "etc/systemd/system/acgs-backup.service",
           f"[Service]\nEnvironment=\"BACKUP_DIR={p}/from-environment\" OTHER=1\n"
           f"ExecStart=-{scripts['timer']} --full\n")
    return {"marker": marker}


def test_backup_dirs_come_from_what_crontabs_and_timers_run_and_nothing_else(reader, host, tmp_path):
    found = [(d, why) for d, why in scheduled_backup_dirs(reader) if d.startswith(str(tmp_path))]  # not the host's
    dirs = [d for d, _ in found]
    assert dirs == [f"{tmp_path}/from-cron", f"{tmp_path}/on-the-line", f"{tmp_path}/from-cron-daily",
                    f"{tmp_path}/from-environment", f"{tmp_path}/from-timer"], found
    why = dict(found)
    assert why[f"{tmp_path}/from-cron"] == f"BACKUP_DIR in {tmp_path}/opt/s1.sh (run by {tmp_path}/etc/cron.d/acgs " \
                                           "line 4)"
    assert why[f"{tmp_path}/from-timer"] == (
        f"BACKUP_DIR in {tmp_path}/opt/timer.sh (ExecStart of {tmp_path}/etc/systemd/system/acgs-backup.service, "
        f"run by {tmp_path}/etc/systemd/system/acgs-backup.timer)")
    assert not host["marker"].exists()


def test_the_backup_root_is_the_first_named_folder_that_holds_dated_backups(reader, host, tmp_path):
    for day in ("20261205", "20261206"):
        (tmp_path / "from-timer" / day).mkdir(parents=True)
    (tmp_path / "from-cron").mkdir()  # named first, but empty: not a backup root
    find_backups(reader)
    item = reader.found.paths["backups"]
    assert item.data["value"] == f"{tmp_path}/from-timer"
    assert item.evidence == [f"BACKUP_DIR in {tmp_path}/opt/timer.sh (ExecStart of {tmp_path}/etc/systemd/system/"
                             f"acgs-backup.service, run by {tmp_path}/etc/systemd/system/acgs-backup.timer): 2 dated "
                             "backup folders, newest 20261206"]


def test_with_nothing_scheduled_the_runbook_default_under_the_prefix_is_read(reader, tmp_path):
    (tmp_path / "var/backups/acgs/2026-12-06").mkdir(parents=True)
    find_backups(reader)
    assert reader.found.paths["backups"].data["value"] == f"{tmp_path}/var/backups/acgs"


@pytest.mark.parametrize(("facts", "runbook", "port", "by"), [
    ([("env", set()), ("content", {5433})], 5432, 5433, "content"),
    ([("content", {5433, 5434}), ("connections", {5434})], 5432, 5434, "connections"),  # narrowed, then decided
    ([("content", {5433, 5434}), ("connections", set())], 5433, 5433,
     "the runbook's port (5433): nothing else decided"),
    ([("content", set())], 5432, 5432, "the runbook's port (5432): nothing else decided"),
    ([("content", {5433, 5434})], 5432, None, ""),  # two hold it and nothing else tells: the user chooses
])
def test_a_server_is_chosen_by_the_first_fact_that_decides(facts, runbook, port, by):
    pick = choose([5432, 5433, 5434], facts, runbook)
    assert (pick.port, pick.decided_by) == (port, by)
