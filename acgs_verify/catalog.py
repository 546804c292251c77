"""The runbook's checks as data: one entry per catalog ID (docs/checks.md is generated from it).

Severity, section, the runbook's next step and the evidence a pass needs live here and only here, so a check
names its ID and nothing else about itself.

>>> CATALOG["SVC-01"].severity
'P0'
>>> CATALOG["SVC-07"].evidence.startswith("at least one request line in the log tail")
True
"""

from __future__ import annotations

from dataclasses import dataclass

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
class CatalogEntry:
    id: str
    section: str
    severity: str
    title: str
    runbook: str
    next_step_template: str  # with {restart}, {tail}, ... (GENERIC_FIELDS) where the target and profile fill them in
    target: str

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

    @property
    def evidence(self) -> str:
        """What a PASS needs to have seen (EVIDENCE); a check that saw less fails or skips saying so."""
        return EVIDENCE[self.id]

    @property
    def kind(self) -> str:
        """What kind of failure the check reports when it measured and found it wrong (KIND, one of KINDS)."""
        return KIND[self.id]


def _e(id_, section, severity, title, runbook, next_step, target):
    return CatalogEntry(id_, section, severity, title, runbook, next_step, target)


_SVC_DOWN = "check which process owns the port ({owner}), then {restart} and {tail}"
_DB_NEXT = "see runbook 'Database Issues'"

_ENTRIES = [
    # Service health
    _e("SVC-01", "services", "P0", "health endpoint answers 2xx", "curl -f http://HOST:PORT/health",
       "Service Outage: " + _SVC_DOWN, "each service on each app host"),
    _e("SVC-02", "services", "P0", "health body is healthy and names the constitutional hash",
       "curl -f http://HOST:PORT/health",
       "Service Outage / Constitutional Compliance Failure: check the service log and its deployed config",
       "each service"),
    _e("SVC-03", "services", "P0", "service process is running", "ps aux | grep uvicorn",
       "Service Outage: {restart}, then {tail}", "each service on each app host"),
    _e("SVC-04", "services", "P0", "service port is listening", "netstat -tlnp | grep :PORT",
       "Service Outage: {restart}, then {tail}", "each service on each app host"),
    _e("SVC-05", "services", "P1", "systemd unit is active", "systemctl status <unit>",
       "Service Outage: {restart}; `journalctl -u {unit}`", "each service on systemd hosts"),
    _e("SVC-06", "services", "P1", "health latency p99 within target", "python scripts/latency_check.py",
       "High Latency: check database (pg_stat_statements), Redis (--latency-history) and load (/proc/loadavg)",
       "each service"),
    _e("SVC-07", "services", "P1", "error rate below limit", "grep ' 5[0-9][0-9] ' <log> / acgs_http_requests_total",
       "Service Outage: {tail} for the failing requests", "each service"),
    _e("SVC-08", "services", "P0", "X-Constitutional-Hash header carries the expected hash",
       "curl -sI http://HOST:PORT/health | grep X-Constitutional-Hash",
       "Constitutional Compliance Failure: redeploy the service with the right constitutional configuration",
       "each service"),
    _e("SVC-09", "services", "P1", "readiness and liveness endpoints answer",
       "curl -f http://HOST:PORT/health/ready; curl -f http://HOST:PORT/health/live",
       "Service Outage: check the dependencies the readiness body names", "each service that has them"),
    _e("SVC-10", "services", "P2", "/metrics is scrapeable Prometheus text",
       "the service's /metrics as Prometheus scrapes it: curl -s http://HOST:PORT/metrics",
       "Monitoring and Alerting: serve /metrics with prometheus_client's generate_latest() (text/plain; "
       "version=0.0.4), not a JSON object or a JSON string; check the Prometheus target page", "each service with a "
       "metrics path"),
    # Database
    _e("DB-01", "database", "P0", "connect and SELECT 1", 'psql -h HOST -U acgs -d acgs_production -c "SELECT 1;"',
       "Database Issues: {db_reach}; {db_status}; check pg_hba.conf and credentials", "each database"),
    _e("DB-02", "database", "P0", "PostgreSQL server is running", "sudo systemctl status postgresql",
       "Database Issues: {db_start}; read the PostgreSQL log", "each database host"),
    _e("DB-03", "database", "P1", "connection count below max_connections limit",
       'psql -c "SELECT count(*) FROM pg_stat_activity;"',
       "Database Issues: find idle sessions in pg_stat_activity; check the services' connection pools",
       "each database"),
    _e("DB-04", "database", "P2", "no long-running queries",
       "SELECT pid, now() - query_start ... WHERE (now() - query_start) > interval '5 minutes'",
       "Database Issues: review the query; pg_cancel_backend(pid) if it must go", "each database"),
    _e("DB-05", "database", "P1", "no blocked locks", "the runbook's blocked/blocking pg_locks query",
       "Database Issues: inspect the blocking pid; pg_terminate_backend(blocking_pid) if it is stuck",
       "each database"),
    _e("DB-06", "database", "P2", "no slow statements in pg_stat_statements",
       "SELECT query, mean_time, calls FROM pg_stat_statements ORDER BY mean_time DESC LIMIT 10",
       "High Latency / Performance Optimization: EXPLAIN the slow statements, check index usage", "each database"),
    _e("DB-07", "database", "P1", "replication lag within limit", "SELECT ... FROM pg_stat_replication",
       "Database Issues: check the replica's WAL receiver and network", "each primary"),
    _e("DB-08", "database", "P3", "buffer cache hit ratio", "SELECT blks_hit, blks_read FROM pg_stat_database",
       "Performance Optimization: review shared_buffers and the queries reading from disk", "each database"),
    _e("DB-09", "database", "P3", "table statistics are fresh",
       "SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables",
       "Database Maintenance: run ANALYZE (weekly maintenance)", "each database"),
    _e("DB-10", "database", "P3", "audit log retention",
       "DELETE FROM audit_logs WHERE created_at < NOW() - INTERVAL '90 days'",
       "Database Maintenance: run the weekly audit_logs clean-up", "each database"),
    # Cache
    _e("RD-01", "cache", "P0", "PING answers PONG", "redis-cli ping",
       "Initial Assessment: check the Redis server is running and reachable: {redis_ping}", "each Redis"),
    _e("RD-02", "cache", "P2", "command latency p99 within limit", "redis-cli --latency-history",
       "High Latency: check Redis CPU, slowlog and memory", "each Redis"),
    _e("RD-03", "cache", "P3", "keyspace hit rate", "redis-cli info stats | grep keyspace_hits",
       "Application Optimization: review cache keys and TTLs", "each Redis"),
    # Constitutional compliance
    _e("CC-01", "constitution", "P0", "expected constitutional hash in recent log lines",
       'grep "HASH" /var/log/acgs/*.log | tail -10',
       "Constitutional Compliance Failure: verify the service loaded the constitution; restart it", "each service log"),
    _e("CC-02", "constitution", "P0", "no log line names a different constitutional hash",
       'grep -i "constitutional" /var/log/acgs/*.log',
       "Constitutional Compliance Failure: find which deploy carries the other hash; roll it back", "each service log"),
    _e("CC-03", "constitution", "P1", "policy files validate", "python scripts/validate_constitutional_policies.py",
       "Constitutional Compliance Failure: fix or restore the policy file from backup", "each policy file"),
    _e("CC-04", "constitution", "P0", "compliance rate of recent decisions", "python scripts/compliance_report.py",
       "Constitutional Compliance Failure: {health}; review denials",
       "each environment"),
    _e("CC-05", "constitution", "P0", "audit hash chain unbroken", "python scripts/security_audit.py",
       "Security Incident Response: preserve evidence (`cp -r {logs} ...`), then escalate", "each database"),
    _e("CC-06", "constitution", "P1", "cache holds the expected hash", "redis-cli get acgs:constitutional_hash",
       "Constitutional Compliance Failure: reload the constitution into the cache", "each Redis"),
    # System resources
    _e("SYS-01", "system", "P2", "1-minute load average", "cat /proc/loadavg",
       "Root Cause Investigation: top; iostat -x 1 5; vmstat 1 5", "each host"),
    _e("SYS-02", "system", "P2", "CPU utilization", "top / vmstat 1 5",
       "Root Cause Investigation: find the busy process with top", "each host"),
    _e("SYS-03", "system", "P2", "memory usage", "free -m", "Root Cause Investigation: cat /proc/meminfo; "
       "`ps aux --sort=-rss | head`", "each host"),
    _e("SYS-04", "system", "P1", "disk usage of each mount", "df -h",
       "Root Cause Investigation: find what grew (logs, backups) and free space", "each host and mount"),
    _e("SYS-05", "system", "P1", "no recent OOM kills", 'dmesg | grep -i "killed process"',
       "Root Cause Investigation: find which process was killed; check memory limits", "each host"),
    # Backups
    _e("BK-01", "backups", "P1", "a recent backup exists", "ls /var/backups/acgs/YYYYMMDD",
       "Backup and Recovery: run `{scripts}/backup_full_system.sh`; check the backup timer", "each backup location"),
    _e("BK-02", "backups", "P1", "backup files present and not empty", "ls -l /var/backups/acgs/latest/",
       "Backup and Recovery: re-run the daily backup and read its output", "latest backup"),
    _e("BK-03", "backups", "P1", "every archive reads to its end", "gzip -t; tar -tzf",
       "Backup and Recovery: the backup is unusable; take a new one now", "latest backup"),
    _e("BK-04", "backups", "P1", "database dump is complete", "zcat database.sql.gz | tail -1",
       "Backup and Recovery: pg_dump stopped early; check disk space and the dump log", "latest backup"),
    _e("BK-05", "backups", "P3", "backup retention", "find /var/backups/acgs/ -type d -mtime +30",
       "Backup and Recovery: check the clean-up step of `{scripts}/daily_backup.sh`", "each backup location"),
    _e("BK-06", "backups", "P2", "latest dump is not much smaller than the previous", "ls -l */database.sql.gz",
       "Backup and Recovery: compare table counts; data may have been lost", "latest backup"),
    _e("BK-07", "backups", "P1", "restore drill", "gunzip -c database.sql.gz | psql -d scratch",
       "Recovery Procedures: the latest dump does not restore; take a new backup and investigate", "latest backup"),
    # Certificates
    _e("TLS-01", "certificates", "P1", "certificate file not expiring", "openssl x509 -in cert.pem -noout -enddate",
       "Key Rotation: sudo certbot renew --nginx", "each certificate file"),
    _e("TLS-02", "certificates", "P1", "live TLS endpoint verifies", "openssl s_client -connect HOST:443",
       "Key Rotation: sudo certbot renew --nginx; check the served chain", "each TLS endpoint"),
    # Security
    _e("SEC-01", "security", "P1", "no world-writable files in the application tree",
       "find /home/acgs/ACGS -type f -perm /o+w -ls", "Security: chmod o-w the listed files and find who changed them",
       "each app host"),
    _e("SEC-02", "security", "P1", "secret files are private", "ls -l config/production.env",
       "Security: chmod 0600 and chown the file; rotate what it holds if it was exposed", "each secret file"),
    _e("SEC-03", "security", "P1", "failed logins below limit",
       'grep -i "failed login\\|unauthorized" /var/log/acgs/*.log',
       "Security Incident Response: check the source addresses; `sudo ufw deny from` each one that attacks",
       "each host's logs"),
    _e("SEC-04", "security", "P1", "user accounts match the allow-list", "cut -d: -f1 /etc/passwd | sort",
       "Security Incident Response: find who created the account; lock it", "each host"),
    _e("SEC-05", "security", "P2", "keys rotated in time", "python scripts/rotate_application_keys.py",
       "Key Rotation: `python {scripts}/rotate_application_keys.py` / "
       "`python {scripts}/rotate_database_credentials.py`", "each key"),
    _e("SEC-06", "security", "P0", "no breach indicators in logs", 'grep -i "breach" /var/log/acgs/*.log',
       "Security Incident Response: isolate, preserve evidence, notify the security team", "each host's logs"),
    # Monitoring
    _e("MON-01", "monitoring", "P2", "no unresolved critical alert", "tail -f /var/log/acgs/alerts.log",
       "Incident Detection: acknowledge and work the alert", "each host"),
    # Added from the runbook's remaining steps (Application/Database Optimization, High Latency, Key Metrics)
    _e("SVC-11", "services", "P2", "memory of the service's processes",
       "ps aux | grep uvicorn | awk '{print $2, $4, $11}' | sort -k2 -nr",
       "Application Optimization: find what the service holds (caches, leaks); restart it in a quiet window "
       "({restart})", "each service on each app host"),
    _e("SVC-12", "services", "P1", "latency not degraded against the baseline",
       "python scripts/latency_check.py (Incident Classification P1: performance degradation >500% of baseline)",
       "High Latency: compare with the last good run; check database (pg_stat_statements), Redis "
       "(--latency-history), load (/proc/loadavg) and the latest deploy", "each service"),
    _e("DB-11", "database", "P3", "table bloat (dead tuples) below limit",
       "SELECT schemaname, tablename, pg_size_pretty(pg_total_relation_size(...)) FROM pg_tables ...",
       "Database Optimization: VACUUM (ANALYZE) the table; check that autovacuum runs on it", "each database"),
    _e("DB-12", "database", "P3", "indexes used, large tables not read by sequential scans",
       "SELECT schemaname, tablename, attname, n_distinct, correlation FROM pg_stats ...",
       "Database Optimization: drop indexes nothing uses; add an index for the queries that scan large tables",
       "each database"),
    _e("DB-13", "database", "P2", "connection pools: no session idle in transaction, pools within size",
       "python scripts/connection_pool_stats.py",
       "Application Optimization: find the application holding the open transaction (pg_stat_activity); "
       "pg_terminate_backend(pid) if it is stuck; check the pool's size and leaks", "each database"),
    _e("SYS-06", "system", "P2", "network latency to the host", "ping -c 10 localhost",
       "High Latency: check the network path (mtr, interface errors: ip -s link) and the host's load",
       "each host"),
    _e("MON-02", "monitoring", "P2", "service availability over the window",
       "Key Metrics: service availability > 99.9 %",
       "Incident Response: read the failed runs' SVC-01 messages in history.jsonl in the report directory and "
       "their reports; "
       "work the outages' causes", "each service"),
]

CATALOG: dict[str, CatalogEntry] = {e.id: e for e in _ENTRIES}

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


# What a PASS needs to have seen, one sentence per ID (rule of the house: no pass without positive evidence).
# Kept apart from _ENTRIES so that the entries stay one call each; tests pin that every catalog ID has one.
EVIDENCE: dict[str, str] = {
    "SVC-01": "an HTTP answer from the health endpoint with a 2xx status within the timeout; no answer "
              "(refused, timed out, reset) is a failure",
    "SVC-02": "a health body that parses as a JSON object with a healthy `status` and the expected "
              "`constitutional_hash`; an empty or non-JSON body is a failure",
    "SVC-03": "a process on the service's host that owns the service's listening socket, whose command line "
              "matches the profile's pattern when one is given; a pattern that matches only other processes "
              "is a failure; where the owner is hidden (no root), the one process of the socket's user that "
              "matches and names the port, warned as that fallback",
    "SVC-04": "the service's port in the LISTEN state in the host's socket table (ss or /proc/net/tcp*); a "
              "table that could not be read is a failure",
    "SVC-05": "`systemctl` reporting the unit `active`; skipped, with the reason, where the profile names no unit "
              "or the host does not run systemd",
    "SVC-06": "every one of the N health samples answered (any HTTP status), so that the p99 is over N real "
              "round trips; a sample without an answer is a failure",
    "SVC-07": "at least one request line in the log tail (or window), or a non-zero acgs_http_requests_total; "
              "an empty window is not a pass (skipped, saying what was read), an unreadable log is a failure",
    "SVC-08": "an answer from the health endpoint whose X-Constitutional-Hash header equals the expected hash; "
              "no answer or no header is a failure",
    "SVC-09": "each readiness/liveness path the profile names answering 2xx with a JSON body holding "
              "`ready: true` / `alive: true`; an empty body is a failure",
    "SVC-10": "/metrics parses as Prometheus text exposition with at least one sample; JSON, or text inside a "
              "JSON string, is a failure showing the first 80 bytes",
    "DB-01": "a session opened as the profile's role answering `SELECT 1` within the timeout",
    "DB-02": "the PostgreSQL server that listens on the database's port on its host (postmaster PID, data "
             "directory, version), and its unit active where systemd runs it; processes of other clusters "
             "are not evidence: the server is asked (data_directory, session pid, start time) and matched with "
             "ps (-D, parent, elapsed time)",
    "DB-03": "a row count from pg_stat_activity and a max_connections setting read from the server",
    "DB-04": "pg_stat_activity read by a role that can see other sessions' rows (superuser or "
             "pg_read_all_stats); a role that sees only its own session cannot say that none is slow",
    "DB-05": "pg_locks and pg_stat_activity read by a role that can see other sessions; the blocked/blocking "
             "query answered",
    "DB-06": "pg_stat_statements readable by the role, with at least one statement recorded; skipped, with the "
             "reason, when the extension is absent",
    "DB-07": "pg_stat_replication read on the primary and each replica answering its replay lag; skipped, with "
             "the reason, when the profile names no replica",
    "DB-08": "pg_stat_database with blocks read or hit (a non-zero denominator) for the database",
    "DB-09": "at least one user table visible in pg_stat_user_tables, each with a last (auto)analyze time",
    "DB-10": "the audit table visible to the role, with at least one row it can see (row-level security "
             "hiding every row is not a pass), and its oldest creation time",
    "RD-01": "PONG from the server within the timeout",
    "RD-02": "every one of the N PINGs answered, so that the p99 is over real round trips",
    "RD-03": "keyspace hits + misses at least redis_hit_rate_min_lookups since the statistics were reset; "
             "fewer lookups skip, saying how many there were",
    "CC-01": "at least one line in the service log's tail (or window) naming the expected hash; an empty, "
             "missing or unreadable log is a failure",
    "CC-02": "at least one line read from the service log's tail (or window), none naming another hash; "
             "an empty, missing or unreadable log is a failure, never '0 mismatches in 0 lines'",
    "CC-03": "a policy file (by extension, or the profile's include/exclude globs) that parses and names the "
             "expected hash; an empty policy directory is a failure",
    "CC-04": "at least one recent governance decision (audit rows visible to the role) or the compliance "
             "metric answered; skipped, with the reason, when no source is named",
    "CC-05": "at least one audit row visible to the role, every chain (per tenant or whatever partitioning) "
             "followed link by link; 0 rows visible (row-level security) is a failure, never '0 broken links'",
    "CC-06": "the key read from the cache, holding the expected hash; a missing key is a failure",
    "SYS-01": "/proc/loadavg read on the host",
    "SYS-02": "two /proc/stat samples on the host with CPU time elapsed between them",
    "SYS-03": "/proc/meminfo read on the host with a non-zero MemTotal",
    "SYS-04": "df output for the mount on the host; a mount that does not exist or that df cannot read is a "
              "failure",
    "SYS-05": "at least one line read from the kernel log (paths.kernel_log) or dmesg; an empty, missing or "
              "unreadable source is a failure that says which and why",
    "BK-01": "at least one backup folder recognised under the backup root (YYYYMMDD, YYYYMMDD_HHMMSS, "
             "YYYY-MM-DD, YYYY-MM-DDTHHMMSS or `latest`), the newest within the age limit; the message lists "
             "the folders considered",
    "BK-02": "the latest backup folder found, and each expected file in it present with a non-zero size",
    "BK-03": "every archive of the latest backup read to its end (gzip stream and tar members)",
    "BK-04": "the dump of the latest backup (database.sql.gz or database.sql) read to pg_dump's closing line",
    "BK-05": "the backup folders listed and counted (the count kept, the oldest age)",
    "BK-06": "the latest and the previous dump both found, with their sizes",
    "BK-07": "the latest dump restored into a scratch database and every restore table holding rows; "
             "skipped, with the reason, when the drill is off or no admin credential is given",
    "TLS-01": "at least one PEM certificate read from the file, with its Not After; a missing or empty file "
              "is a failure",
    "TLS-02": "a TLS handshake with the endpoint whose chain verifies for the name, and the served leaf's "
              "Not After",
    "SEC-01": "a find over an application tree that exists and is readable, with at least one file examined; "
              "a missing, unreadable or empty tree is a failure",
    "SEC-02": "stat of the secret file (mode and owner); a file that does not exist is a failure",
    "SEC-03": "every log the pattern names read, at least one line in their tails in all; no log, only empty "
              "logs or an unreadable log is a failure, never '0 failed logins in 0 lines'",
    "SEC-04": "at least one account name read from the passwd file; an empty or unreadable file is a failure",
    "SEC-05": "the key's rotation time, from its rotation record or the key file's mtime; a missing key file "
              "or an unreadable record is a failure",
    "SEC-06": "every log the pattern names read, at least one line in their tails in all; no log, only empty "
              "logs or an unreadable log is a failure, never '0 breach indicators in 0 lines'",
    "MON-01": "the alerts log read (its lines in the window); skipped, with the reason, where the profile "
              "says there is no alerts log (paths.alerts_log: null)",
    "SVC-11": "the processes that own the service's listening port (ss -p), or the one SVC-03 identified where "
              "that owner is hidden, and their children, each with its RSS and %MEM from ps; a port whose owner "
              "can be neither seen nor identified is a failure",
    "SVC-12": "this run's p99 from SVC-06's samples (every sample answered) and at least baseline_runs earlier "
              "runs of the profile in history.jsonl whose SVC-06 passed for the service; fewer skip, saying how "
              "many there are",
    "DB-11": "pg_stat_user_tables read with at least one user table visible, with its live and dead tuple "
             "counts and its size (the runbook's size query)",
    "DB-12": "pg_stat_user_tables and pg_stat_user_indexes read with at least one user table visible; findings "
             "only warn",
    "DB-13": "pg_stat_activity read by a role that can see other sessions (superuser or pg_read_all_stats), "
             "with at least one other client session's row; a role that sees only its own cannot judge pools",
    "SYS-06": "N round trips from the checker to every endpoint of the host (its ssh port, its services' "
              "ports): TCP connect time (ICMP echo where the checker may send it); an endpoint that does "
              "not answer at all is a failure",
    "MON-02": "at least availability_min_runs runs of the profile within the window in history.jsonl that "
              "recorded the service's SVC-01 outcome; fewer skip, saying how many there are",
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
KIND: dict[str, str] = {
    **dict.fromkeys(("SVC-01", "SVC-04", "SVC-05", "SVC-09", "DB-01", "RD-01"), "availability"),
    **dict.fromkeys(("SVC-03", "DB-02", "SVC-11"), "identity"),
    **dict.fromkeys(("SVC-02", "SVC-08", "CC-01", "CC-02", "CC-03", "CC-06"), "hash"),
    **dict.fromkeys(("BK-02", "BK-03", "BK-04", "BK-06", "BK-07", "CC-05", "SVC-10"), "integrity"),
    **dict.fromkeys(("TLS-01", "TLS-02", "SEC-05"), "expiry"),
    **dict.fromkeys(("SEC-01", "SEC-02", "SEC-04"), "access"),
    **dict.fromkeys(("SYS-05", "SEC-06", "MON-01", "DB-05"), "incident"),
    **dict.fromkeys(("SVC-06", "SVC-07", "SVC-12", "DB-03", "DB-04", "DB-06", "DB-07", "DB-08", "DB-09", "DB-10",
                     "DB-11", "DB-12", "DB-13", "RD-02", "RD-03", "CC-04", "SYS-01", "SYS-02", "SYS-03", "SYS-04",
                     "SYS-06", "BK-01", "BK-05", "SEC-03", "MON-02"), "threshold"),
}
