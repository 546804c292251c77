"""No pass without positive evidence: each check, pointed at a target where there is nothing to see (no answer, an
empty body, an empty or missing log, an empty passwd, a tree or certificate that is not there, a Redis without a
lookup, a database that refuses, no backup folder, a host that never answers), fails or skips and says what it could
not see; it never passes. Every catalog ID has at least one such case in the tables below
(test_every_catalog_id_has_a_saw_nothing_case).

Real things only: a local HTTP server answering 200 with an empty body, ports where nothing listens, a fresh
redis-server, empty files, an ssh host that refuses connections. One `acgs-verify run` per profile; each test then
reads its checks' verdicts from the run's summary.json.
"""

from __future__ import annotations

import contextlib
import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from acgs_verify.catalog import CATALOG
from acgs_verify.errors import ProbeError
from acgs_verify.probes import processes, system
from tests.conftest import run_cli
from tests.servers import closed_port, dead_listener, redis_server

HASH = "cdd01ef066bc6cf2"
DARK = "127.0.0.2"  # the address of the host that never answers


class _Empty(BaseHTTPRequestHandler):
    """200 with an empty body on every path: an answer, but nothing in it."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def empty_http():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Empty)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def fresh_redis(tmp_path_factory):
    """A redis-server that has served no lookup and holds no key."""
    with redis_server(tmp_path_factory.mktemp("redis")) as port:
        yield port


def _run(tmp_path: Path, text: str, *extra: str, env: dict | None = None) -> dict[tuple[str, str], dict]:
    profile = tmp_path / "p.yaml"
    profile.write_text(text)
    reports = tmp_path / "reports"
    res = run_cli("run", "--profile", str(profile), "--report-dir", str(reports), *extra, env=env, timeout=240)
    summary = reports / "latest" / "summary.json"
    assert summary.is_file(), res.stdout[-2000:] + res.stderr[-2000:]
    return {(c["id"], c["target"]): c for c in json.loads(summary.read_text())["checks"]}


def _verdicts(results, expected: dict[tuple[str, str], tuple[str, str]]) -> list[str]:
    """Every (ID, target) has the expected outcome and its message names what could not be seen."""
    wrong = []
    for key, (outcome, words) in expected.items():
        got = results.get(key)
        if got is None:
            wrong.append(f"{key}: not run")
        elif got["outcome"] != outcome or words.lower() not in (got["message"] or "").lower():
            wrong.append(f"{key}: {got['outcome']} {got['message']!r}; wanted {outcome} naming {words!r}")
    return wrong


@pytest.fixture(scope="module")
def nothing_there(tmp_path_factory, empty_http, fresh_redis):
    """One run against a profile whose every target has nothing to show."""
    d = tmp_path_factory.mktemp("nothing")
    for name in ("empty.log", "passwd", "kern.log", "empty.pem", "alerts.log"):
        (d / name).write_text("")
    (d / "logs").mkdir()  # no *.log in it
    with contextlib.ExitStack() as held:  # held while the run looks: nothing else can listen on them
        closed, closed_redis, closed_tls, closed_ssh, closed_pg = (held.enter_context(closed_port()) for _ in range(5))
        # a host that says nothing at all, not even a refusal, on an address of its own: what does not answer
        # there is not asked again for the run, and nothing else of this profile lives on it
        dark_ssh = held.enter_context(dead_listener(DARK))
        text = f"""
name: nothing
hosts:
  - {{name: app-1, backend: local, roles: [app, cache, db], mounts: ["{d}/no-such-mount"]}}
  - {{name: gone-1, address: 127.0.0.1, port: {closed_ssh}, backend: ssh, roles: [], mounts: ["/"]}}
  - {{name: dark-1, address: {DARK}, port: {dark_ssh}, backend: ssh, roles: [], mounts: ["/"]}}
services:
  - {{name: empty, port: {empty_http}, ready_path: /health/ready, live_path: /health/live, metrics_path: /metrics,
     log: "{d}/empty.log"}}
  - {{name: gone, port: {closed}, ready_path: /health/ready, log: "{d}/missing.log"}}
databases:
  - {{name: gone, dsn: "postgresql://acgs@127.0.0.1:{closed_pg}/acgs", unit: null, pools: {{acgs-auth-service: 5}},
     admin_dsn: "postgresql://postgres@127.0.0.1:{closed_pg}/postgres"}}
redis:
  - {{name: fresh, url: "redis://127.0.0.1:{fresh_redis}/0"}}
  - {{name: gone, url: "redis://127.0.0.1:{closed_redis}/0"}}
backups: {{restore_drill: true}}
paths: {{logs: "{d}/logs", alerts_log: "{d}/missing-alerts.log", app_root: "{d}/no-such-tree", backups: "{d}/backups",
         policies: "{d}/policies", passwd: "{d}/passwd", kernel_log: "{d}/kern.log"}}
certificates: ["{d}/empty.pem", "{d}/missing.pem"]
tls_endpoints: ["https://127.0.0.1:{closed_tls}"]
security:
  secret_files: ["{d}/missing.env"]
  allowed_users: [root]
  keys: [{{name: app, path: "{d}/missing.key"}}]
"""
        return d, closed_tls, _run(d, text)


# what each target of `nothing_there` must say, by what it looks at: (ID, target) -> (outcome, words its message
# holds); {d} is the profile's directory, {tls} the closed TLS port. Never passed: `error` where the check could not
# measure (nothing to read, nothing to reach), `failed` where it measured that something is wrong (a refused port is
# what SVC-01, RD-01 and TLS-02 are for; an empty body is an answer)
NOTHING_THERE: dict[str, dict[tuple[str, str], tuple[str, str]]] = {
    "services-that-answer-nothing": {
        ("SVC-01", "gone@app-1"): ("failed", "connection refused"),
        ("SVC-02", "empty@app-1"): ("failed", "body is not JSON"),
        ("SVC-02", "gone@app-1"): ("error", "connection refused"),
        ("SVC-06", "gone@app-1"): ("error", "got no answer"),
        ("SVC-07", "empty@app-1"): ("failed", "no request lines in the log and /metrics gives no error rate"),
        ("SVC-07", "gone@app-1"): ("error", "missing.log does not exist"),
        ("SVC-08", "empty@app-1"): ("failed", "X-Constitutional-Hash: None"),
        ("SVC-08", "gone@app-1"): ("error", "connection refused"),
        ("SVC-09", "empty@app-1"): ("failed", "body is not JSON"),
        ("SVC-09", "gone@app-1"): ("error", "connection refused"),
        ("SVC-11", "gone@app-1"): ("skipped", "nothing listens on TCP"),
        ("SVC-12", "gone@app-1"): ("skipped", "SVC-06 took no complete latency sample"),
        ("SVC-12", "empty@app-1"): ("skipped", "0 earlier runs with a passing SVC-06"),
        ("MON-02", "gone@app-1"): ("skipped", "0 runs in the last 30 days recorded SVC-01"),
    },
    "empty-or-missing-service-logs-for-the-hash-checks": {
        ("CC-01", "empty@app-1"): ("error", "empty.log on app-1 holds no line"),
        ("CC-01", "gone@app-1"): ("error", "missing.log does not exist"),
        ("CC-02", "empty@app-1"): ("error", "empty.log on app-1 holds no line"),
        ("CC-02", "gone@app-1"): ("error", "missing.log does not exist"),
    },
    "a-redis-with-nothing-to-show": {
        ("RD-01", "gone"): ("failed", "cannot reach"),
        ("RD-02", "gone"): ("error", "cannot reach"),
        ("RD-03", "gone"): ("error", "cannot reach"),
        ("RD-03", "fresh"): ("skipped", "only 0 lookups"),
        ("CC-06", "fresh"): ("failed", "acgs:constitutional_hash = None"),
        ("CC-06", "gone"): ("error", "cannot reach"),
    },
    "hosts-with-nothing-to-read": {
        **{(i, "gone-1"): ("error", "host unreachable")
           for i in ("SYS-01", "SYS-02", "SYS-03", "SYS-05", "SEC-03", "SEC-04", "SEC-06")},
        ("SYS-04", "gone-1:/"): ("error", "host unreachable"),
        ("SYS-04", "app-1:{d}/no-such-mount"): ("failed", "no such file or directory"),
        ("SYS-05", "app-1"): ("error", "kern.log holds no lines"),
        ("SEC-01", "app-1"): ("error", "no such directory"),
        ("SEC-02", "{d}/missing.env@app-1"): ("failed", "does not exist"),
        ("SEC-03", "app-1"): ("error", "no log file matches"),
        ("SEC-04", "app-1"): ("error", "names no account"),
        ("SEC-05", "app@app-1"): ("failed", "missing.key does not exist"),
        ("SEC-06", "app-1"): ("error", "no log file matches"),
    },
    "a-host-that-never-answers": {
        ("SYS-06", "dark-1"): ("error", "did not answer"),
        ("MON-01", "gone-1"): ("error", "host unreachable"),
    },
    "a-service-with-no-process-port-unit-or-metrics": {
        ("SVC-03", "gone@app-1"): ("failed", "nothing listens on TCP port"),
        ("SVC-04", "gone@app-1"): ("failed", "not listening"),
        ("SVC-05", "gone@app-1"): ("skipped", "names no systemd unit"),
        ("SVC-10", "empty@app-1"): ("failed", "empty body: no metric at all"),
    },
    "a-database-that-refuses": {
        ("DB-01", "gone"): ("failed", "connection refused"),
        ("DB-02", "gone@app-1"): ("failed", "nothing listens on TCP port"),
        **{(i, "gone"): ("error", "connection refused")
           for i in ("DB-03", "DB-04", "DB-05", "DB-06", "DB-07", "DB-08", "DB-09", "DB-10", "DB-11", "DB-12",
                     "DB-13", "CC-05")},
        ("CC-04", "nothing"): ("error", "connection refused"),
    },
    "no-backup-folder": {
        ("BK-01", "backups@app-1"): ("error", "backups does not exist"),
        **{(i, "backups/latest@app-1"): ("error", "backups does not exist")
           for i in ("BK-02", "BK-03", "BK-04", "BK-06", "BK-07")},
        ("BK-05", "backups@app-1"): ("error", "backups does not exist"),
    },
    "no-policy-and-no-alerts-log": {
        ("CC-03", "policies@app-1"): ("failed", "policies: the directory does not exist"),
        ("MON-01", "app-1"): ("error", "missing-alerts.log does not exist"),
    },
    "no-certificate-and-no-tls-answer": {
        ("TLS-01", "{d}/empty.pem@app-1"): ("error", "is empty"),
        ("TLS-01", "{d}/missing.pem@app-1"): ("error", "cannot read"),
        ("TLS-02", "127.0.0.1:{tls}"): ("failed", "cannot connect"),
    },
}


@pytest.mark.parametrize("what", NOTHING_THERE)
def test_targets_with_nothing_to_show_do_not_pass(nothing_there, what):
    d, closed_tls, results = nothing_there
    expected = {(check, target.format(d=d, tls=closed_tls)): verdict
                for (check, target), verdict in NOTHING_THERE[what].items()}
    assert _verdicts(results, expected) == []


def test_a_port_whose_owner_cannot_be_seen_is_not_a_memory_pass():
    """ss lists the socket but not its process (another user's, without root): SVC-11 cannot say what it uses."""
    init = processes.Proc(1, 0, "root", "2026-01-01 00:00:00", "init", rss_kib=1000, mem_percent=0.1)
    hidden = processes.Listener(8016, ("*",), (), "not visible to user nobody (socket of uid 0 root)")
    with pytest.raises(ProbeError, match="not which process owns it"):
        processes.service_processes(processes.PortOwners("nobody", {8016: hidden}, (init,)), 8016)
    with pytest.raises(ProbeError, match="nothing listens on TCP 8016"):
        processes.service_processes(processes.PortOwners("nobody", {}, (init,)), 8016)


@pytest.fixture(scope="module")
def nothing_visible(sandbox, tmp_path_factory):
    """One run of the database and constitution checks as a role that may connect and read audit_logs, but sees
    none of its rows (row-level security, no policy) and none of the other sessions (no pg_read_all_stats), in a
    scratch database on the sandbox's PostgreSQL that holds only that table (and one another role holds locked,
    with a session of that role waiting for it). The sandbox's replica streams from that server meanwhile."""
    import secrets

    from acgs_verify.sandbox.components.postgres import primary_port
    from tests.conftest import sandbox_admin
    from tests.waiting import wait_for

    token = secrets.token_hex(4)
    name, role, password = f"acgs_blind_{token}", f"acgs_blind_{token}", secrets.token_hex(12)
    with sandbox_admin(sandbox, "postgres") as admin:
        admin.execute(f"CREATE DATABASE {name}")
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        try:
            # held open while the run looks: a session of another role, whose state the blind role cannot see
            with sandbox_admin(sandbox, name) as other:
                other.execute("""CREATE TABLE audit_logs (id bigserial PRIMARY KEY, timestamp timestamptz DEFAULT now(),
                    created_at timestamptz DEFAULT now() - interval '200 days', event_data jsonb DEFAULT '{}',
                    prev_hash text, current_hash text, tenant_id text, user_id text, service_name text,
                    event_type text DEFAULT 'governance_decision', constitutional_hash text)""")
                other.execute(f"INSERT INTO audit_logs (current_hash, constitutional_hash) "
                              f"SELECT md5(i::text), '{HASH}' FROM generate_series(1, 50) i")
                other.execute("ANALYZE audit_logs")
                other.execute("ALTER TABLE audit_logs ENABLE ROW LEVEL SECURITY")
                other.execute(f"GRANT SELECT ON audit_logs TO {role}")
                other.execute("CREATE TABLE held (id int)")
                with sandbox_admin(sandbox, name) as holder, sandbox_admin(sandbox, name) as waiter:
                    holder.execute("BEGIN")
                    holder.execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
                    waiting = threading.Thread(target=waiter.execute, args=("SELECT count(*) FROM held",))
                    waiting.start()
                    wait_for("a session waiting on the held lock", lambda: other.execute(
                        "SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0] > 0, 10)
                    try:
                        d = tmp_path_factory.mktemp("blind")
                        results = _run(d, f"""
name: blind
hosts: [{{name: app-1, backend: local, roles: []}}]
databases:
  - {{name: blind, dsn: "postgresql://{role}@127.0.0.1:{primary_port(sandbox.port_offset)}/{name}", unit: null,
     password_env: ACGS_BLIND_PASSWORD}}
""", "--", "-m", "database or constitution", env={"ACGS_BLIND_PASSWORD": password})
                    finally:
                        holder.execute("ROLLBACK")
                        waiting.join(10)
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            admin.execute(f"DROP ROLE IF EXISTS {role}")
    return results


# what each database check says as a role that sees no row and no other session: (ID, target) -> (outcome, words)
NOTHING_VISIBLE: dict[tuple[str, str], tuple[str, str]] = {
    ("DB-04", "blind"): ("error", "cannot see the state or start of"),
    ("DB-06", "blind"): ("skipped", "pg_stat_statements extension is not installed"),
    ("DB-10", "blind"): ("error", "sees 0 of audit_logs' 50 rows (row-level security"),
    ("DB-13", "blind"): ("error", "this role sees only its own sessions"),
    # the replica streams, but the role sees only that a wal sender exists: not its state, address or lag
    ("DB-07", "blind"): ("error", "cannot see the state, address or lag of 1 replica in pg_stat_replication"),
    ("CC-04", "blind"): ("error", "sees 0 of audit_logs' 50 rows (row-level security"),
    ("CC-05", "blind"): ("error", "sees 0 of audit_logs' 50 rows (row-level security"),
}


def test_a_role_that_sees_nothing_does_not_pass(nothing_visible):
    assert _verdicts(nothing_visible, NOTHING_VISIBLE) == []
    assert "grant pg_monitor" in nothing_visible[("DB-07", "blind")]["message"]


def test_blocked_locks_are_seen_by_a_role_that_cannot_see_other_sessions(nothing_visible):
    """pg_blocking_pids() reads the lock manager, which no privilege hides: the blind role finds the other role's
    session waiting, though not its query or since when, so DB-05 judges rather than could-not-measure."""
    db05 = nothing_visible[("DB-05", "blind")]
    assert db05["outcome"] == "failed", db05
    assert "1 blocked session: pid" in db05["message"] and "<insufficient privilege>" in db05["message"], db05
    assert "waiting for a time hidden from this role" in db05["message"], db05


# what each target of the empty-files run says: files that exist and hold nothing, or nothing in the --since window
EMPTY_FILES: dict[tuple[str, str], tuple[str, str]] = {
    ("SEC-01", "app-1"): ("failed", "the tree holds no file"),
    ("SEC-03", "app-1"): ("error", "hold no lines"),
    ("SEC-06", "app-1"): ("error", "hold no lines"),
    ("SEC-04", "app-1"): ("error", "cannot read"),
    ("SYS-05", "app-1"): ("error", "cannot read"),
    ("TLS-01", "{d}/not.pem@app-1"): ("error", "no readable PEM certificate"),
    ("CC-01", "quiet@app-1"): ("error", "no lines since"),
    ("CC-02", "quiet@app-1"): ("error", "no lines since"),
    ("SVC-07", "quiet@app-1"): ("error", "no lines since"),
}


def test_every_catalog_id_has_a_saw_nothing_case():
    """docs/design.md promises one per check: a new catalog ID without a case here fails this test."""
    cases = [*(c for table in NOTHING_THERE.values() for c in table.items()), *EMPTY_FILES.items(),
             *NOTHING_VISIBLE.items()]
    covered = {check_id for (check_id, _), _ in cases}
    missing = [i for i in CATALOG if i not in covered]
    assert not missing, f"catalog IDs with no 'saw nothing' case in {__name__}: {missing}"
    assert covered <= set(CATALOG), covered - set(CATALOG)
    assert all(outcome in ("failed", "error", "skipped") for _, (outcome, _) in cases)  # never a pass


def test_empty_files_and_an_empty_log_window_do_not_pass(tmp_path, empty_http):
    """Files that exist but hold nothing: an empty application tree, empty logs, logs with only old lines under
    --since, a kernel log and passwd that are missing, a file that is not a certificate."""
    (tmp_path / "tree").mkdir()
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "a.log").write_text("")
    (tmp_path / "logs" / "b.log").write_text("")
    (tmp_path / "not.pem").write_text("this is not a certificate\n")
    old = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    (tmp_path / "old.log").write_text(f"{old:%Y-%m-%d %H:%M:%S},000 - acgs - INFO - Constitutional Hash: {HASH}\n"
                                      f'{old:%Y-%m-%d %H:%M:%S},001 - acgs - INFO - "GET /api HTTP/1.1" 200\n')
    d = tmp_path
    results = _run(tmp_path, f"""
name: empty
hosts: [{{name: app-1, backend: local, roles: [app]}}]
services:
  - {{name: quiet, port: {empty_http}, log: "{d}/old.log"}}
paths: {{logs: "{d}/logs", alerts_log: "{d}/logs/a.log", app_root: "{d}/tree", backups: "{d}/b", policies: "{d}/p",
         passwd: "{d}/no-passwd", kernel_log: "{d}/no-kern.log"}}
certificates: ["{d}/not.pem"]
security: {{allowed_users: [root]}}
""", "--since", "10m")
    assert _verdicts(results, {(check_id, target.format(d=d)): verdict
                               for (check_id, target), verdict in EMPTY_FILES.items()}) == []


def test_cpu_counters_that_do_not_advance_are_not_an_idle_cpu():
    """SYS-01..03 read /proc once; two identical /proc/stat samples measured no CPU time at all."""
    text = ("0.50 0.40 0.30 1/100 42\n@@acgs\ncpu  100 0 100 700 100 0 0 0 0 0\ncpu  100 0 100 700 100 0 0 0 0 0\n"
            "@@acgs\nMemTotal: 1000 kB\nMemAvailable: 250 kB\n")
    with pytest.raises(ProbeError, match="did not advance"):
        system.parse_snapshot(text, [])
    with pytest.raises(ProbeError, match="no MemTotal"):
        system.parse_snapshot(text.replace("MemTotal: 1000", "MemTotal: 0").replace("700 100 0 0 0 0 0\n@@",
                                                                                  "800 100 0 0 0 0 0\n@@"), [])
