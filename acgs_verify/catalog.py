"""The runbook's checks as data: one record per catalog ID (docs/checks.md is generated from it).

Everything a check says about itself that is not its measurement lives in its record here and only here: section,
severity, the kind of failure it reports, title, the runbook line it replaces, the runbook's next step, its target
and the evidence a pass needs. A check names its ID and nothing else about itself, so a new check is one test
function in checks/ plus one `_check(...)` record below (docs/design.md, "Where a new thing goes").

>>> CATALOG["SVC-01"].severity
'P0'
>>> CATALOG["SVC-07"].evidence.startswith("at least one request line in the log tail")
True
"""

from __future__ import annotations

from dataclasses import dataclass, field

SEVERITIES = ("P0", "P1", "P2", "P3")

# section marker -> the runbook section(s) the checks come from (used as report headings and Allure epics)
SECTIONS: dict[str, str] = {
    "services": "Service health",
    "database": "Database",
    "cache": "Cache",
    "constitution": "Constitutional compliance",
    "system": "System resources",
    "backups": "Backups",
    "certificates": "Certificates",
    "security": "Security",
    "monitoring": "Monitoring",
}


# What a failed check found, as a word reports sort on (Allure's categories, report/allure.py): the kind of failure a
# check reports when it measured. A check that could not measure is `unmeasured` whatever its ID; a check may name
# another kind of KINDS for one failure (Check.kind: SVC-02's body names another hash).
KINDS: dict[str, str] = {
    "unmeasured": "Could not measure (target unreachable, timeout, missing file)",
    "availability": "Not available (down, not answering, not active)",
    "threshold": "Threshold exceeded (latency, usage, age, rate)",
    "identity": "Wrong identity (port owner, server, process)",
    "hash": "Constitutional hash mismatch",
    "integrity": "Integrity broken (backup, dump, audit chain, format)",
    "expiry": "Expired or expiring (certificate, key rotation)",
    "access": "Access control (permissions, accounts)",
    "incident": "Incident found (OOM kill, breach indicator, open alert, blocked lock)",
}


# A next step names what the profile knows about the target as {fields}; a failure message fills them from its
# target and profile (check.py: next_step_for), the catalog's own page (docs/checks.md) with these words. No next
# step names a port, host, path or unit of its own: the runbook's (localhost:8003, /var/log/acgs, postgresql) are
# one deployment's, and tests/test_next_steps_from_profile.py renders every step against another profile. A command
# the operator is to type stands in backticks; the profile values filled into it are quoted words (check.py: _word,
# tests/test_next_steps_quoted.py).
GENERIC_FIELDS = {
    "restart": "`sudo systemctl restart <unit>`", "tail": "`tail -f <log>`", "unit": "<unit>",
    "owner": "`ss -tlnp 'sport = :<port>'`",  # which process owns the service's port
    "health": "`curl -f` each service's health URL (the profile's hosts, ports and health_path)",
    "logs": "<paths.logs>", "scripts": "<paths.app_root>/scripts",
    "db_reach": "`pg_isready -h <host> -p <port>`", "db_status": "`sudo systemctl status <database unit>`",
    "db_start": "`sudo systemctl start <database unit>`", "redis_ping": "`redis-cli -h <host> -p <port> ping`",
}


@dataclass(frozen=True)
class Limit:
    """A threshold a check's record declares: its default, its bounds and what it means. The profile's
    `thresholds:` accepts it by name like any other (profile/model.py: Thresholds), `--set thresholds.NAME=VALUE`
    too, and docs/checks.md lists it with its default; the check reads it as `thresholds.NAME`."""

    default: float
    doc: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    section: str  # a key of SECTIONS
    severity: str  # one of SEVERITIES
    kind: str  # what kind of failure it reports when it measured and found it wrong: a key of KINDS
    title: str
    runbook: str  # the runbook line the check replaces
    next_step_template: str  # with {restart}, {tail}, ... (GENERIC_FIELDS) where the target and profile fill them in
    target: str  # what the check runs against, in words
    evidence: str  # what a PASS needs to have seen; a check that saw less fails or skips saying so
    # thresholds this check brings with it (the runbook's own limits are Thresholds fields in profile/model.py)
    thresholds: dict[str, Limit] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # a record with a misspelt section, severity or kind would otherwise surface only in a report writer
        for name, value, known in (("section", self.section, SECTIONS), ("severity", self.severity, SEVERITIES),
                                   ("kind", self.kind, KINDS)):
            if value not in known or value == "unmeasured":
                raise ValueError(f"{self.id}: unknown {name} {value!r}; known: {', '.join(known)}")
        if not self.evidence.strip():
            raise ValueError(f"{self.id}: no evidence rule (no pass without positive evidence)")

    @property
    def next_step(self) -> str:
        """The next step in general words, as the catalog page shows it: `sudo systemctl restart <unit>`."""
        return self.next_step_with(GENERIC_FIELDS)

    def next_step_with(self, fields: dict[str, str]) -> str:
        """The next step with the target's facts: next_step_with({"restart": "`sudo systemctl restart acgs-auth`",
        ...}); a field not given keeps its general words."""
        return self.next_step_template.format_map({**GENERIC_FIELDS, **fields})

    @property
    def section_title(self) -> str:
        return SECTIONS[self.section]


def _check(id_: str, section: str, severity: str, kind: str, title: str, *, runbook: str, next_step: str,
           target: str, evidence: str, thresholds: dict[str, Limit] | None = None) -> CatalogEntry:
    return CatalogEntry(id_, section, severity, kind, title, runbook, next_step, target, evidence, thresholds or {})


_SVC_DOWN = "check which process owns the port ({owner}), then {restart} and {tail}"

_ENTRIES = [
    # Service health
    _check("SVC-01", "services", "P0", "availability", "health endpoint answers 2xx",
        runbook="curl -f http://HOST:PORT/health",
        next_step="Service Outage: " + _SVC_DOWN,
        target="each service on each app host",
        evidence="an HTTP answer from the health endpoint with a 2xx status within the timeout; no answer (refused, "
                 "timed out, reset) is a failure"),
    _check("SVC-02", "services", "P0", "hash", "health body is healthy and names the constitutional hash",
        runbook="curl -f http://HOST:PORT/health",
        next_step="Service Outage / Constitutional Compliance Failure: check the service log and its deployed config",
        target="each service",
        evidence="a health body that parses as a JSON object with a healthy `status` and the expected "
                 "`constitutional_hash`; an empty or non-JSON body is a failure"),
    _check("SVC-03", "services", "P0", "identity", "service process is running",
        runbook="ps aux | grep uvicorn",
        next_step="Service Outage: {restart}, then {tail}",
        target="each service on each app host",
        evidence="a process on the service's host that owns the service's listening socket, whose command line "
                 "matches the profile's pattern when one is given; a pattern that matches only other processes is a "
                 "failure; where the owner is hidden (no root), the one process of the socket's user that matches and "
                 "names the port, warned as that fallback"),
    _check("SVC-04", "services", "P0", "availability", "service port is listening",
        runbook="netstat -tlnp | grep :PORT",
        next_step="Service Outage: {restart}, then {tail}",
        target="each service on each app host",
        evidence="the service's port in the LISTEN state in the host's socket table (ss or /proc/net/tcp*); a table "
                 "that could not be read is a failure"),
    _check("SVC-05", "services", "P1", "availability", "systemd unit is active",
        runbook="systemctl status <unit>",
        next_step="Service Outage: {restart}; `journalctl -u {unit}`",
        target="each service on systemd hosts",
        evidence="`systemctl` reporting the unit `active`; skipped, with the reason, where the profile names no unit "
                 "or the host does not run systemd"),
    _check("SVC-06", "services", "P1", "threshold", "health latency p99 within target",
        runbook="python scripts/latency_check.py",
        next_step="High Latency: check database (pg_stat_statements), Redis (--latency-history) and load "
                  "(/proc/loadavg)",
        target="each service",
        evidence="every one of the N health samples answered (any HTTP status), so that the p99 is over N real round "
                 "trips; a sample without an answer is a failure; a p99 over the limit is measured again once (a stall "
                 "of the checker slows one set, a slow service both), and fails when the second set is over it too"),
    _check("SVC-07", "services", "P1", "threshold", "error rate below limit",
        runbook="grep ' 5[0-9][0-9] ' <log> / acgs_http_requests_total",
        next_step="Service Outage: {tail} for the failing requests",
        target="each service",
        evidence="at least one request line in the log tail (or window), or a non-zero acgs_http_requests_total; an "
                 "empty window is not a pass (skipped, saying what was read), an unreadable log is a failure"),
    _check("SVC-08", "services", "P0", "hash", "X-Constitutional-Hash header carries the expected hash",
        runbook="curl -sI http://HOST:PORT/health | grep X-Constitutional-Hash",
        next_step="Constitutional Compliance Failure: redeploy the service with the right constitutional "
                  "configuration",
        target="each service",
        evidence="an answer from the health endpoint whose X-Constitutional-Hash header equals the expected hash; no "
                 "answer or no header is a failure"),
    _check("SVC-09", "services", "P1", "availability", "readiness and liveness endpoints answer",
        runbook="curl -f http://HOST:PORT/health/ready; curl -f http://HOST:PORT/health/live",
        next_step="Service Outage: check the dependencies the readiness body names",
        target="each service that has them",
        evidence="each readiness/liveness path the profile names answering 2xx with a JSON body holding `ready: "
                 "true` / `alive: true`; an empty body is a failure"),
    _check("SVC-10", "services", "P2", "integrity", "/metrics is scrapeable Prometheus text",
        runbook="the service's /metrics as Prometheus scrapes it: curl -s http://HOST:PORT/metrics",
        next_step="Monitoring and Alerting: serve /metrics with prometheus_client's generate_latest() (text/plain; "
                  "version=0.0.4), not a JSON object or a JSON string; check the Prometheus target page",
        target="each service with a metrics path",
        evidence="/metrics parses as Prometheus text exposition with at least one sample; JSON, or text inside a "
                 "JSON string, is a failure showing the first 80 bytes"),
    # Database
    _check("DB-01", "database", "P0", "availability", "connect and SELECT 1",
        runbook='psql -h HOST -U acgs -d acgs_production -c "SELECT 1;"',
        next_step="Database Issues: {db_reach}; {db_status}; check pg_hba.conf and credentials",
        target="each database",
        evidence="a session opened as the profile's role answering `SELECT 1` within the timeout"),
    _check("DB-02", "database", "P0", "identity", "PostgreSQL server is running",
        runbook="sudo systemctl status postgresql",
        next_step="Database Issues: {db_start}; read the PostgreSQL log",
        target="each database host",
        evidence="the PostgreSQL server that listens on the database's port on its host (postmaster PID, data "
                 "directory, version), and its unit active where systemd runs it; processes of other clusters are "
                 "not evidence: the server is asked (data_directory, session pid, start time) and matched with ps "
                 "(-D, parent, elapsed time)"),
    _check("DB-03", "database", "P1", "threshold", "connection count below max_connections limit",
        runbook='psql -c "SELECT count(*) FROM pg_stat_activity;"',
        next_step="Database Issues: find idle sessions in pg_stat_activity; check the services' connection pools",
        target="each database",
        evidence="a row count from pg_stat_activity and a max_connections setting read from the server"),
    _check("DB-04", "database", "P2", "threshold", "no long-running queries",
        runbook="SELECT pid, now() - query_start ... WHERE (now() - query_start) > interval '5 minutes'",
        next_step="Database Issues: review the query; pg_cancel_backend(pid) if it must go",
        target="each database",
        evidence="pg_stat_activity read by a role that can see other sessions' rows (superuser or "
                 "pg_read_all_stats); a role that sees only its own session cannot say that none is slow"),
    _check("DB-05", "database", "P1", "incident", "no blocked locks",
        runbook="the runbook's blocked/blocking pg_locks query",
        next_step="Database Issues: inspect the blocking pid; pg_terminate_backend(blocking_pid) if it is stuck",
        target="each database",
        evidence="the blocked/blocking query answered: pg_blocking_pids() reads the lock manager, which no privilege "
                 "hides, so any role sees every blocked session (without pg_read_all_stats, not its query or since "
                 "when: the failure says so)"),
    _check("DB-06", "database", "P2", "threshold", "no slow statements in pg_stat_statements",
        runbook="SELECT query, mean_time, calls FROM pg_stat_statements ORDER BY mean_time DESC LIMIT 10",
        next_step="High Latency / Performance Optimization: EXPLAIN the slow statements, check index usage",
        target="each database, without the statements acgs-verify sent itself (they start /* acgs-verify */)",
        evidence="pg_stat_statements readable by the role, with at least one statement recorded besides acgs-verify's "
                 "own (skipped, saying so, when it holds none, as after a reset); skipped, with the reason, when the "
                 "extension is absent"),
    _check("DB-07", "database", "P1", "threshold", "replication lag within limit",
        runbook="SELECT ... FROM pg_stat_replication",
        next_step="Database Issues: check the replica's WAL receiver and network",
        target="each primary",
        evidence="pg_stat_replication read on the primary, with each standby's state visible to the role (without "
                 "pg_monitor or pg_read_all_stats it sees only that standbys exist: could not measure), and each "
                 "replica answering its replay lag; skipped, with the reason, when there is no replica"),
    _check("DB-08", "database", "P3", "threshold", "buffer cache hit ratio",
        runbook="SELECT blks_hit, blks_read FROM pg_stat_database",
        next_step="Performance Optimization: review shared_buffers and the queries reading from disk",
        target="each database",
        evidence="pg_stat_database with blocks read or hit (a non-zero denominator) for the database"),
    _check("DB-09", "database", "P3", "threshold", "table statistics are fresh",
        runbook="SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables",
        next_step="Database Maintenance: run ANALYZE (weekly maintenance)",
        target="each database",
        evidence="at least one user table visible in pg_stat_user_tables, each with a last (auto)analyze time"),
    _check("DB-10", "database", "P3", "threshold", "audit log retention",
        runbook="DELETE FROM audit_logs WHERE created_at < NOW() - INTERVAL '90 days'",
        next_step="Database Maintenance: run the weekly audit_logs clean-up",
        target="each database",
        evidence="the audit table visible to the role, with at least one row it can see (row-level security hiding "
                 "every row is not a pass), and its oldest creation time"),
    # Cache
    _check("RD-01", "cache", "P0", "availability", "PING answers PONG",
        runbook="redis-cli ping",
        next_step="Initial Assessment: check the Redis server is running and reachable: {redis_ping}",
        target="each Redis",
        evidence="PONG from the server within the timeout"),
    _check("RD-02", "cache", "P2", "threshold", "command latency p99 within limit",
        runbook="redis-cli --latency-history",
        next_step="High Latency: check Redis CPU, slowlog and memory",
        target="each Redis",
        evidence="every one of the N PINGs answered, so that the p99 is over real round trips; a p99 over the limit "
                 "is measured again once, and fails when the second set is over it too"),
    _check("RD-03", "cache", "P3", "threshold", "keyspace hit rate",
        runbook="redis-cli info stats | grep keyspace_hits",
        next_step="Application Optimization: review cache keys and TTLs",
        target="each Redis",
        evidence="keyspace hits + misses at least redis_hit_rate_min_lookups since the statistics were reset; fewer "
                 "lookups skip, saying how many there were"),
    # Constitutional compliance
    _check("CC-01", "constitution", "P0", "hash", "expected constitutional hash in recent log lines",
        runbook='grep "HASH" /var/log/acgs/*.log | tail -10',
        next_step="Constitutional Compliance Failure: verify the service loaded the constitution; restart it",
        target="each service log",
        evidence="at least one line in the service log's tail (or window) naming the expected hash; an empty, "
                 "missing or unreadable log is a failure"),
    _check("CC-02", "constitution", "P0", "hash", "no log line names a different constitutional hash",
        runbook='grep -i "constitutional" /var/log/acgs/*.log',
        next_step="Constitutional Compliance Failure: find which deploy carries the other hash; roll it back",
        target="each service log",
        evidence="at least one line read from the service log's tail (or window), none naming another hash; an "
                 "empty, missing or unreadable log is a failure, never '0 mismatches in 0 lines'"),
    _check("CC-03", "constitution", "P1", "hash", "policy files validate",
        runbook="python scripts/validate_constitutional_policies.py",
        next_step="Constitutional Compliance Failure: fix or restore the policy file from backup",
        target="each host's policy files",
        evidence="every policy file on the host (by extension, or the profile's include/exclude globs) parses and "
                 "names the expected hash; an empty policy directory is a failure"),
    _check("CC-04", "constitution", "P0", "threshold", "compliance rate of recent decisions",
        runbook="python scripts/compliance_report.py",
        next_step="Constitutional Compliance Failure: {health}; review denials",
        target="each environment",
        evidence="at least one recent governance decision (audit rows visible to the role) or the compliance metric "
                 "answered; skipped, with the reason, when no source is named"),
    _check("CC-05", "constitution", "P0", "integrity", "audit hash chain unbroken",
        runbook="python scripts/security_audit.py",
        next_step="Security Incident Response: preserve evidence (`cp -r {logs} ...`), then escalate",
        target="each database",
        evidence="at least one audit row visible to the role, every chain (per tenant or whatever partitioning) "
                 "followed link by link; 0 rows visible (row-level security) is a failure, never '0 broken links'"),
    _check("CC-06", "constitution", "P1", "hash", "cache holds the expected hash",
        runbook="redis-cli get acgs:constitutional_hash",
        next_step="Constitutional Compliance Failure: reload the constitution into the cache",
        target="each Redis",
        evidence="the key read from the cache, holding the expected hash; a missing key is a failure"),
    # System resources
    _check("SYS-01", "system", "P2", "threshold", "1-minute load average",
        runbook="cat /proc/loadavg",
        next_step="Root Cause Investigation: top; iostat -x 1 5; vmstat 1 5",
        target="each host",
        evidence="/proc/loadavg read on the host"),
    _check("SYS-02", "system", "P2", "threshold", "CPU utilization",
        runbook="top / vmstat 1 5",
        next_step="Root Cause Investigation: find the busy process with top",
        target="each host",
        evidence="two /proc/stat samples on the host with CPU time elapsed between them"),
    _check("SYS-03", "system", "P2", "threshold", "memory usage",
        runbook="free -m",
        next_step="Root Cause Investigation: cat /proc/meminfo; `ps aux --sort=-rss | head`",
        target="each host",
        evidence="/proc/meminfo read on the host with a non-zero MemTotal"),
    _check("SYS-04", "system", "P1", "threshold", "disk usage of each mount",
        runbook="df -h",
        next_step="Root Cause Investigation: find what grew (logs, backups) and free space",
        target="each host and mount",
        evidence="df output for the mount on the host; a mount that does not exist or that df cannot read is a "
                 "failure"),
    _check("SYS-05", "system", "P1", "incident", "no recent OOM kills",
        runbook='dmesg | grep -i "killed process"',
        next_step="Root Cause Investigation: find which process was killed; check memory limits",
        target="each host",
        evidence="at least one line read from the kernel log (paths.kernel_log) or dmesg; an empty, missing or "
                 "unreadable source is a failure that says which and why"),
    # Backups
    _check("BK-01", "backups", "P1", "threshold", "a recent backup exists",
        runbook="ls /var/backups/acgs/YYYYMMDD",
        next_step="Backup and Recovery: run `{scripts}/backup_full_system.sh`; check the backup timer",
        target="the backup host",
        evidence="at least one backup folder recognised under the backup root (YYYYMMDD, YYYYMMDD_HHMMSS, "
                 "YYYY-MM-DD, YYYY-MM-DDTHHMMSS or `latest`), the newest within the age limit; the message lists the "
                 "folders considered"),
    _check("BK-02", "backups", "P1", "integrity", "backup files present and not empty",
        runbook="ls -l /var/backups/acgs/latest/",
        next_step="Backup and Recovery: re-run the daily backup and read its output",
        target="latest backup",
        evidence="the latest backup folder found, and each expected file in it present with a non-zero size"),
    _check("BK-03", "backups", "P1", "integrity", "every archive reads to its end",
        runbook="gzip -t; tar -tzf",
        next_step="Backup and Recovery: the backup is unusable; take a new one now",
        target="latest backup",
        evidence="every archive of the latest backup read to its end (gzip stream and tar members)"),
    _check("BK-04", "backups", "P1", "integrity", "database dump is complete",
        runbook="zcat database.sql.gz | tail -1",
        next_step="Backup and Recovery: pg_dump stopped early; check disk space and the dump log",
        target="latest backup",
        evidence="the dump of the latest backup (database.sql.gz or database.sql) read to pg_dump's closing line"),
    _check("BK-05", "backups", "P3", "threshold", "backup retention",
        runbook="find /var/backups/acgs/ -type d -mtime +30",
        next_step="Backup and Recovery: check the clean-up step of `{scripts}/daily_backup.sh`",
        target="the backup host",
        evidence="the backup folders listed and counted (the count kept, the oldest age)"),
    _check("BK-06", "backups", "P2", "integrity", "latest dump is not much smaller than the previous",
        runbook="ls -l */database.sql.gz",
        next_step="Backup and Recovery: compare table counts; data may have been lost",
        target="latest backup",
        evidence="the latest and the previous dump both found, with their sizes"),
    _check("BK-07", "backups", "P1", "integrity", "restore drill",
        runbook="gunzip -c database.sql.gz | psql -d scratch",
        next_step="Recovery Procedures: the latest dump does not restore; take a new backup and investigate",
        target="latest backup",
        evidence="the latest dump restored into a scratch database and every restore table holding rows; skipped, "
                 "with the reason, when the drill is off or no admin credential is given"),
    # Certificates
    _check("TLS-01", "certificates", "P1", "expiry", "certificate file not expiring",
        runbook="openssl x509 -in cert.pem -noout -enddate",
        next_step="Key Rotation: sudo certbot renew --nginx",
        target="each certificate file on its host",
        evidence="at least one PEM certificate read from the file, with its Not After; a missing or empty file is a "
                 "failure"),
    _check("TLS-02", "certificates", "P1", "expiry", "live TLS endpoint verifies",
        runbook="openssl s_client -connect HOST:443",
        next_step="Key Rotation: sudo certbot renew --nginx; check the served chain",
        target="each TLS endpoint",
        evidence="a TLS handshake with the endpoint whose chain verifies for the name, and the served leaf's Not "
                 "After"),
    # Security
    _check("SEC-01", "security", "P1", "access", "no world-writable files in the application tree",
        runbook="find /home/acgs/ACGS -type f -perm /o+w -ls",
        next_step="Security: chmod o-w the listed files and find who changed them",
        target="each app host",
        evidence="a find over an application tree that exists and is readable, with at least one file examined; a "
                 "missing, unreadable or empty tree is a failure"),
    _check("SEC-02", "security", "P1", "access", "secret files are private",
        runbook="ls -l config/production.env",
        next_step="Security: chmod 0600 and chown the file; rotate what it holds if it was exposed",
        target="each secret file",
        evidence="stat of the secret file (mode and owner); a file that does not exist is a failure"),
    _check("SEC-03", "security", "P1", "threshold", "failed logins below limit",
        runbook='grep -i "failed login\\|unauthorized" /var/log/acgs/*.log',
        next_step="Security Incident Response: check the source addresses; `sudo ufw deny from` each one that attacks",
        target="each host's logs",
        evidence="every log the pattern names read, at least one line in their tails in all; no log, only empty logs "
                 "or an unreadable log is a failure, never '0 failed logins in 0 lines'"),
    _check("SEC-04", "security", "P1", "access", "user accounts match the allow-list",
        runbook="cut -d: -f1 /etc/passwd | sort",
        next_step="Security Incident Response: find who created the account; lock it",
        target="each host",
        evidence="at least one account name read from the passwd file; an empty or unreadable file is a failure"),
    _check("SEC-05", "security", "P2", "expiry", "keys rotated in time",
        runbook="python scripts/rotate_application_keys.py",
        next_step="Key Rotation: `python {scripts}/rotate_application_keys.py` / `python "
                  "{scripts}/rotate_database_credentials.py`",
        target="each key",
        evidence="the key's rotation time, from its rotation record or the key file's mtime; a missing key file or "
                 "an unreadable record is a failure"),
    _check("SEC-06", "security", "P0", "incident", "no breach indicators in logs",
        runbook='grep -i "breach" /var/log/acgs/*.log',
        next_step="Security Incident Response: isolate, preserve evidence, notify the security team",
        target="each host's logs",
        evidence="every log the pattern names read, at least one line in their tails in all; no log, only empty logs "
                 "or an unreadable log is a failure, never '0 breach indicators in 0 lines'"),
    # Monitoring
    _check("MON-01", "monitoring", "P2", "incident", "no unresolved critical alert",
        runbook="tail -f /var/log/acgs/alerts.log",
        next_step="Incident Detection: acknowledge and work the alert",
        target="each host",
        evidence="the alerts log read (its lines in the window); skipped, with the reason, where the profile says "
                 "there is no alerts log (paths.alerts_log: null)"),
    # Added from the runbook's remaining steps (Application/Database Optimization, High Latency, Key Metrics)
    _check("SVC-11", "services", "P2", "identity", "memory of the service's processes",
        runbook="ps aux | grep uvicorn | awk '{print $2, $4, $11}' | sort -k2 -nr",
        next_step="Application Optimization: find what the service holds (caches, leaks); restart it in a quiet "
                  "window ({restart})",
        target="each service on each app host",
        evidence="the processes that own the service's listening port (ss -p), or the one SVC-03 identified where that "
                 "owner is hidden, and their children, each with its RSS and %MEM from ps; a port whose owner can be "
                 "neither seen nor identified is a failure"),
    _check("SVC-12", "services", "P1", "threshold", "latency not degraded against the baseline",
        runbook="python scripts/latency_check.py (Incident Classification P1: performance degradation >500% of "
                "baseline)",
        next_step="High Latency: compare with the last good run; check database (pg_stat_statements), Redis "
                  "(--latency-history), load (/proc/loadavg) and the latest deploy",
        target="each service",
        evidence="this run's p99 from SVC-06's samples (every sample answered) and at least baseline_runs earlier "
                 "runs of the profile in history.jsonl whose SVC-06 passed for the service; fewer skip, saying how "
                 "many there are"),
    _check("DB-11", "database", "P3", "threshold", "table bloat (dead tuples) below limit",
        runbook="SELECT schemaname, tablename, pg_size_pretty(pg_total_relation_size(...)) FROM pg_tables ...",
        next_step="Database Optimization: VACUUM (ANALYZE) the table; check that autovacuum runs on it",
        target="each database",
        evidence="pg_stat_user_tables read with at least one user table visible, with its live and dead tuple counts "
                 "and its size (the runbook's size query)"),
    _check("DB-12", "database", "P3", "threshold", "indexes used, large tables not read by sequential scans",
        runbook="SELECT schemaname, tablename, attname, n_distinct, correlation FROM pg_stats ...",
        next_step="Database Optimization: drop indexes nothing uses; add an index for the queries that scan large "
                  "tables",
        target="each database",
        evidence="pg_stat_user_tables and pg_stat_user_indexes read with at least one user table visible; findings "
                 "only warn"),
    _check("DB-13", "database", "P2", "threshold",
        "connection pools: no session idle in transaction, pools within size",
        runbook="python scripts/connection_pool_stats.py",
        next_step="Application Optimization: find the application holding the open transaction (pg_stat_activity); "
                  "pg_terminate_backend(pid) if it is stuck; check the pool's size and leaks",
        target="each database",
        evidence="pg_stat_activity read by a role that can see other sessions (superuser or pg_read_all_stats), with "
                 "at least one other client session's row; a role that sees only its own cannot judge pools"),
    _check("SYS-06", "system", "P2", "threshold", "network latency to the host",
        runbook="ping -c 10 localhost",
        next_step="High Latency: check the network path (mtr, interface errors: ip -s link) and the host's load",
        target="each host",
        evidence="N round trips from the checker to every endpoint of the host (its ssh port, its services' ports): "
                 "TCP connect time (ICMP echo where the checker may send it); an endpoint that does not answer at "
                 "all is a failure"),
    _check("MON-02", "monitoring", "P2", "threshold", "service availability over the window",
        runbook="Key Metrics: service availability > 99.9 %",
        next_step="Incident Response: read the failed runs' SVC-01 messages in history.jsonl in the report directory "
                  "and their reports; work the outages' causes",
        target="each service",
        evidence="at least availability_min_runs runs of the profile within the window in history.jsonl that "
                 "recorded the service's SVC-01 outcome; fewer skip, saying how many there are"),
]

CATALOG: dict[str, CatalogEntry] = {e.id: e for e in _ENTRIES}
# views of the records, by ID, for readers that want one field of every check
EVIDENCE: dict[str, str] = {e.id: e.evidence for e in _ENTRIES}
KIND: dict[str, str] = {e.id: e.kind for e in _ENTRIES}


def _declared_limits() -> dict[str, Limit]:
    limits: dict[str, Limit] = {}
    for e in _ENTRIES:
        for name, limit in e.thresholds.items():
            if name in limits:
                raise ValueError(f"{e.id}: threshold {name!r} is declared by another check too")
            limits[name] = limit
    return limits


# the thresholds the records declare, by name (profile/model.py adds them to Thresholds)
LIMITS: dict[str, Limit] = _declared_limits()

# Gates: which IDs a gate runs (None = every check), and which must pass for the gate to open;
# restore_drill: BK-07 restores the latest dump unless the profile says backups.restore_drill: false.
GATES: dict[str, dict] = {
    "smoke": {"ids": ("SVC-01", "SVC-02", "SVC-03", "SVC-04", "DB-01", "RD-01", "CC-01", "CC-02")},
    "pre-maintenance": {"ids": None, "required": ("BK-01", "BK-02", "BK-03", "BK-04"), "snapshot": "write",
                        "restore_drill": True},
    "post-maintenance": {"ids": None, "snapshot": "compare"},
    "rollback": {"ids": None, "snapshot": "compare"},
    "compliance": {"ids": None},
    # Security Incident Response: the checks of step 3 and 4, and "Preserve evidence" (acgs_verify/evidence.py)
    "security-incident": {"ids": ("SEC-01", "SEC-02", "SEC-03", "SEC-04", "SEC-05", "SEC-06", "CC-01", "CC-02",
                                  "CC-05", "SYS-05"), "evidence": True},
}


def entry(check_id: str) -> CatalogEntry:
    try:
        return CATALOG[check_id]
    except KeyError:
        raise KeyError(f"unknown runbook ID {check_id!r}; known: {', '.join(CATALOG)}") from None
