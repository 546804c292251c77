"""Backups (runbook: Backup and Recovery; Pre-Maintenance Checklist "Verify backup integrity")."""

from __future__ import annotations

from acgs_verify.check import ProbeError, runbook
from acgs_verify.probes.backups import (
    LINK,
    archive_scan,
    dump_status,
    expected_files,
    file_state,
    list_backups,
    newest_backup,
    size_change,
)
from acgs_verify.probes.hostfiles import host_files
from acgs_verify.words import plural


@runbook("BK-01")
def test_recent_backup_exists(backup_location, hosts, thresholds, check):
    """BACKUP_DIR="/var/backups/acgs/$(date +%Y%m%d)" (daily_backup.sh); the rollback reads .../acgs/latest/"""
    listing = list_backups(backup_location.root, files=host_files(hosts, backup_location.host))
    latest, limit, link = listing.latest, thresholds.backup_max_age_hours, listing.link
    if latest is None:
        check.fail(measured=listing.nothing(), expected=f"a backup written within {limit:g} h")
    age = latest.age_hours()
    if link is not None and link.problem is None and link.backup is not latest:
        check.warn(link.describe(latest))
    shown = f"; {link.describe(latest)}" if link else ""
    check.at_most(age, limit, "h", what="age", value=round(age, 2),
                  why=link.problem if link and link.problem else None,
                  shown=f"newest backup {latest.name} written {age:.1f} h ago{shown}; {listing.considered()}",
                  also=(link.problem is None, f"{LINK} naming a backup folder inside the root") if link else None)


def _latest(target, profile, hosts):
    """The newest backup folder on its host, and what it should hold (the profile's list, or the layout
    detected)."""
    listing, latest = newest_backup(target.root, host_files(hosts, target.host))
    b = profile.backups
    earlier = [x.path for x in reversed(listing.backups[:-1])]
    return listing, latest, expected_files(latest.path, b.files, b.dump_file, earlier, listing)


@runbook("BK-02")
def test_backup_files_present(latest_backup, hosts, profile, check):
    """if [ -f $BACKUP_DIR/database.sql.gz ] && [ -f $BACKUP_DIR/config.tar.gz ]; then (daily_backup.sh)"""
    listing, latest, want = _latest(latest_backup, profile, hosts)
    wrong = {f: why for f in want.files if (why := file_state(latest.path / f, listing))}
    if want.problem:
        wrong[want.problem] = "(what else the backup should hold is unknown)"
    n = len(want.files)
    shown = "; ".join(f"{f} {why}" for f, why in wrong.items()) or f"all {plural(n, 'file')} present"
    check.that(not wrong, measured=f"{latest.name}: {shown}; layout: {want.describe()}; {listing.considered()}",
               expected=f"{', '.join(want.files)} present and not empty")


@runbook("BK-03")
def test_archives_read_to_the_end(latest_backup, hosts, profile, backup_reader, check):
    """./scripts/verify_backup.sh (Pre-Maintenance Checklist): gzip -t and tar -tzf, every archive to its end"""
    listing, latest, want = _latest(latest_backup, profile, hosts)
    # a missing or empty file is BK-02's finding; here, whatever is there must read to its end
    # read for at most the drill's time budget, as BK-04's pg_restore is; on its own host, never copied here
    scans = [archive_scan(listing, latest.path / f, backup_reader, profile.backups.restore_timeout_seconds, hosts,
                          latest_backup.host) for f in want.files if not file_state(latest.path / f, listing)]
    broken = [s for s in scans if not s.ok]
    check.evidence("archives", [s.describe() for s in scans])
    check.that(scans and not broken, expected="every archive reads to its end (gzip stream and tar members intact)",
               measured=f"{latest.name}: " + ("; ".join(s.describe() for s in (broken or scans)) or
                                              f"nothing to read: none of {', '.join(want.files)} is there"))


@runbook("BK-04")
def test_dump_complete(latest_backup, hosts, profile, backup_reader, check):
    """zcat database.sql.gz | tail -1 (or tail -1 database.sql): pg_dump's "-- PostgreSQL database dump complete" """
    listing, latest, want = _latest(latest_backup, profile, hosts)
    b = profile.backups
    ok, found = dump_status(latest.path / want.dump, b.dump_format, backup_reader, b.pg_bindir,
                            b.restore_timeout_seconds, listing, hosts, latest_backup.host)
    check.that(ok, measured=f"{latest.name}/{want.dump}: {found}",
               expected="pg_dump's table of contents and every data block" if b.dump_format == "custom"
               else "ends with pg_dump's '-- PostgreSQL database dump complete'")


@runbook("BK-05")
def test_retention(backup_location, hosts, thresholds, check):
    """find /var/backups/acgs/ -type d -mtime +30 -exec rm -rf {} \\; (keep 30 days)"""
    listing = list_backups(backup_location.root, files=host_files(hosts, backup_location.host))
    days, least = thresholds.backup_retention_days, thresholds.backup_min_count
    old = [b.name for b in listing.backups if b.age_days() > days]
    kept = len(listing.backups) - len(old)
    if listing.left_out:
        check.warn(f"not backup folders, left out: {', '.join(listing.left_out)}")
    check.at_least(kept, least, what="backup folders kept", value=kept,
                   shown=f"{plural(kept, 'backup folder')} kept; older than {days:g} days: "
                         f"{', '.join(old) or 'none'}; {listing.considered()}",
                   also=(not old, f"none older than {days:g} days"))


@runbook("BK-06")
def test_dump_not_much_smaller(latest_backup, hosts, profile, thresholds, check):
    """ls -l /var/backups/acgs/*/database.sql.gz: the latest dump against the one before"""
    listing, _, want = _latest(latest_backup, profile, hosts)
    latest, size, previous, before = size_change(listing, want.dump)
    if previous is None:
        check.skip(f"no earlier backup with {want.dump} to compare with ({listing.considered()})")
    ratio = size / before
    check.at_least(100 * ratio, 100 * thresholds.backup_min_size_ratio, "% of the previous dump", value=round(ratio, 3),
                   shown=f"{latest.name}/{want.dump}: {size} bytes, {ratio:.0%} of {previous.name}'s {before} bytes")


@runbook("BK-07")
def test_restore_drill(latest_backup, hosts, profile, pg, backup_reader, pytestconfig, check):
    """gunzip -c /var/backups/acgs/20250701/database.sql.gz | psql (Recovery Procedures), into a scratch
    database the drill creates with the admin credential and always drops"""
    from acgs_verify.probes.backups import remote_dump
    from acgs_verify.probes.restore import drill_plan, drill_problems, live_counts, live_extensions, restore_drill

    plan = drill_plan(profile, pytestconfig.getoption("acgs_gate"))
    if plan.skip:
        check.skip(plan.skip)
    with check.step("find the latest dump") as step:
        listing, latest, want = _latest(latest_backup, profile, hosts)
        step["detail"] = f"{latest.name}/{want.dump}"
        state = file_state(latest.path / want.dump, listing)
    if state:
        check.fail(measured=f"{latest.name}/{want.dump} {state}: nothing to restore", expected="a dump to restore")
    b = profile.backups
    # on another host the dump is streamed from it into psql, never copied here
    dump = remote_dump(listing, latest.path / want.dump, b.dump_format, b.restore_timeout_seconds, hosts,
                       latest_backup.host)
    try:  # the drill's admin creates them first: the scratch role it restores as may not
        extensions = live_extensions(pg.get(plan.database))
    except ProbeError as exc:
        extensions = []
        check.warn(f"the live database's extensions are unknown, the dump creates its own: {exc}")
    try:
        drill = restore_drill(plan.database.admin_dsn, plan.password, dump.path, b.dump_format,
                              b.restore_tables, b.restore_timeout_seconds, b.pg_bindir, extensions, read=dump.read)
    except ProbeError as exc:
        check.stage("create the scratch database", "broken", exc)
        raise
    live = live_counts(pg.get(plan.database), b.restore_tables) \
        if b.restore_count_tolerance_percent is not None else {}
    problems = drill_problems(drill, live, b.restore_count_tolerance_percent)
    _drill_steps(check, drill, problems)
    if drill.leftovers:
        check.warn(f"dropped drill databases left by an interrupted run: {', '.join(drill.leftovers)}")
    for warning in drill.warnings:
        check.warn(warning)
    rows = ", ".join(f"{t} {n} rows" for t, n in drill.counts.items())
    check.that(not problems, measured="; ".join(problems) or f"{latest.name}/{want.dump}{dump.how()} restored into "
               f"{drill.database} in {drill.seconds:.1f} s: {rows}; dropped",
               expected=f"restores, and {', '.join(b.restore_tables)} have rows")


def _drill_steps(check, drill, problems) -> None:
    # the drill's stages after the fact (the probe runs them as one): what each one left behind
    check.stage("scratch database and role created", "passed",
                f"{drill.database}" + (f" owned by {drill.role}" if drill.role else ""))
    check.stage("restore", "passed" if drill.restored and not drill.refused else "failed",
                drill.refused or drill.error or f"{drill.seconds:.1f} s")
    if drill.restored:  # drill_problems lists the tables' counts, then the drop when it failed
        counted = problems if drill.dropped else problems[:-1]
        check.stage("count rows", "failed" if counted else "passed",
                    "; ".join(counted) or ", ".join(f"{t} {n} rows" for t, n in drill.counts.items()))
    else:
        check.stage("count rows", "skipped", "nothing restored to count")
    check.stage("drop the scratch database", "passed" if drill.dropped else "failed", drill.database)
