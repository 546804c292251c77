"""Backups (runbook: Backup and Recovery; Pre-Maintenance Checklist "Verify backup integrity")."""

from __future__ import annotations

from acgs_verify.check import runbook
from acgs_verify.probes.backups import dump_status, file_state, list_backups, newest_backup, size_change


@runbook("BK-01")
def test_recent_backup_exists(backup_location, thresholds, check):
    """BACKUP_DIR="/var/backups/acgs/$(date +%Y%m%d)" (daily_backup.sh)"""
    latest = list_backups(backup_location.root).latest
    limit = thresholds.backup_max_age_hours
    if latest is None:
        check.that(False, measured=f"no dated (YYYYMMDD) backup directory under {backup_location.root}",
                   expected=f"a backup written within {limit:g} h")
    age = latest.age_hours()
    check.that(age <= limit, measured=f"latest backup {latest.name} written {age:.1f} h ago",
               expected=f"<= {limit:g} h", value=round(age, 2))


@runbook("BK-02")
def test_backup_files_present(latest_backup, profile, check):
    """if [ -f $BACKUP_DIR/database.sql.gz ] && [ -f $BACKUP_DIR/config.tar.gz ]; then (daily_backup.sh)"""
    _, latest = newest_backup(latest_backup.root)
    wrong = {f: why for f in profile.backups.files if (why := file_state(latest.path / f))}
    shown = "; ".join(f"{f} {why}" for f, why in wrong.items()) or f"all {len(profile.backups.files)} present"
    check.that(not wrong, measured=f"{latest.name}: {shown}",
               expected=f"{', '.join(profile.backups.files)} present and not empty")


@runbook("BK-03")
def test_archives_read_to_the_end(latest_backup, profile, backup_reader, check):
    """./scripts/verify_backup.sh (Pre-Maintenance Checklist): gzip -t and tar -tzf, every archive to its end"""
    _, latest = newest_backup(latest_backup.root)
    # a missing or empty file is BK-02's finding; here, whatever is there must read to its end
    scans = [backup_reader.scan(latest.path / f) for f in profile.backups.files if not file_state(latest.path / f)]
    broken = [s for s in scans if not s.ok]
    check.evidence("archives", [s.describe() for s in scans])
    check.that(not broken, measured=f"{latest.name}: " + "; ".join(s.describe() for s in (broken or scans)),
               expected="every archive reads to its end (gzip stream and tar members intact)")


@runbook("BK-04")
def test_dump_complete(latest_backup, profile, backup_reader, check):
    """zcat database.sql.gz | tail -1: pg_dump's closing "-- PostgreSQL database dump complete" """
    _, latest = newest_backup(latest_backup.root)
    b = profile.backups
    ok, found = dump_status(latest.path / b.dump_file, b.dump_format, backup_reader, b.pg_bindir,
                            b.restore_timeout_seconds)
    check.that(ok, measured=f"{latest.name}/{b.dump_file}: {found}",
               expected="pg_dump's table of contents and every data block" if b.dump_format == "custom"
               else "ends with pg_dump's '-- PostgreSQL database dump complete'")


@runbook("BK-05")
def test_retention(backup_location, thresholds, check):
    """find /var/backups/acgs/ -type d -mtime +30 -exec rm -rf {} \\; (keep 30 days)"""
    listing = list_backups(backup_location.root)
    days, least = thresholds.backup_retention_days, thresholds.backup_min_count
    old = [b.name for b in listing.backups if b.age_days() > days]
    kept = len(listing.backups) - len(old)
    if listing.strays:
        check.warn(f"not dated backups, left out: {', '.join(listing.strays)}")
    span = f" ({listing.backups[0].name}..{listing.latest.name})" if listing.backups else ""
    check.that(not old and kept >= least,
               measured=f"{kept} daily backups kept{span}; older than {days:g} days: {', '.join(old) or 'none'}",
               expected=f"none older than {days:g} days and >= {least} kept", value=kept)


@runbook("BK-06")
def test_dump_not_much_smaller(latest_backup, profile, thresholds, check):
    """ls -l /var/backups/acgs/*/database.sql.gz: the latest dump against the one before"""
    listing, _ = newest_backup(latest_backup.root)
    latest, size, previous, before = size_change(listing, profile.backups.dump_file)
    if previous is None:
        check.skip(f"no earlier backup with {profile.backups.dump_file} to compare with")
    ratio = size / before
    check.that(ratio >= thresholds.backup_min_size_ratio,
               measured=f"{latest.name}: {size} bytes, {ratio:.0%} of {previous.name}'s {before} bytes",
               expected=f">= {thresholds.backup_min_size_ratio:.0%} of the previous dump", value=round(ratio, 3))


@runbook("BK-07")
def test_restore_drill(latest_backup, profile, pg, pytestconfig, check):
    """gunzip -c /var/backups/acgs/20250701/database.sql.gz | psql (Recovery Procedures), into a scratch
    database the drill creates with the admin credential and always drops"""
    from acgs_verify.probes.restore import drill_plan, drill_problems, live_counts, restore_drill

    plan = drill_plan(profile, pytestconfig.getoption("acgs_gate"))
    if plan.skip:
        check.skip(plan.skip)
    _, latest = newest_backup(latest_backup.root)
    b = profile.backups
    drill = restore_drill(plan.database.admin_dsn, plan.password, latest.path / b.dump_file, b.dump_format,
                          b.restore_tables, b.restore_timeout_seconds, b.pg_bindir)
    live = live_counts(pg.get(plan.database), b.restore_tables) if b.restore_count_tolerance_percent is not None else {}
    problems = drill_problems(drill, live, b.restore_count_tolerance_percent)
    if drill.leftovers:
        check.warn(f"dropped drill databases left by an interrupted run: {', '.join(drill.leftovers)}")
    rows = ", ".join(f"{t} {n} rows" for t, n in drill.counts.items())
    check.that(not problems, measured="; ".join(problems) or f"{latest.name}/{b.dump_file} restored into "
               f"{drill.database} in {drill.seconds:.1f} s: {rows}; dropped",
               expected=f"restores, and {', '.join(b.restore_tables)} have rows")
