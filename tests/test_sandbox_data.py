"""The sandbox's PostgreSQL (primary + streaming replica) and Redis: real servers, real faults, clean `down`."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from acgs_verify.sandbox import Sandbox, SandboxError
from acgs_verify.sandbox.components.base import port_free
from acgs_verify.sandbox.components.postgres import Postgres, primary_port, replica_port
from acgs_verify.sandbox.components.redis import Redis, redis_port
from acgs_verify.sandbox.pg_seed import GENESIS, audit_rows, chain_hash
from tests.conftest import free_port_offset, sandbox_admin
from tests.waiting import wait_for


def _uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")


def _state(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()[0]


def _data_procs(sb: Sandbox) -> dict[str, dict]:
    comps = sb.status()["components"]
    return {p["name"]: p for p in comps["postgres"] + comps["redis"]}


def test_servers_run_on_their_offset_ports_and_postgres_never_as_root(sandbox):
    procs = _data_procs(sandbox)
    assert {n: p["state"] for n, p in procs.items()} == {"postgres primary": "running", "postgres replica": "running",
                                                        "redis": "running"}
    assert procs["postgres primary"]["port"] == primary_port(sandbox.port_offset)
    assert procs["postgres replica"]["port"] == replica_port(sandbox.port_offset)
    assert procs["redis"]["port"] == redis_port(sandbox.port_offset)
    for name in ("postgres primary", "postgres replica"):
        assert _uid(procs[name]["pid"]) != 0 or os.geteuid() != 0
    for name in ("db", "redis", "pg-admin"):
        assert oct(sandbox.secret_file(name).stat().st_mode & 0o777) == "0o600"


def test_the_cluster_is_what_the_real_system_has(sandbox):
    with sandbox_admin(sandbox) as admin:
        cols = [r[0] for r in admin.execute("SELECT column_name FROM information_schema.columns"
                                            " WHERE table_name = 'audit_logs' ORDER BY ordinal_position")]
        assert cols == ["id", "timestamp", "created_at", "event_data", "prev_hash", "current_hash", "tenant_id",
                        "user_id", "service_name", "event_type", "constitutional_hash"]
        assert admin.execute("SELECT count(*) FROM audit_logs").fetchone()[0] == 3000
        assert admin.execute("SELECT current_setting('shared_preload_libraries')").fetchone()[0] == "pg_stat_statements"
        owner = admin.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'policies'").fetchone()[0]
        assert owner == "acgs"  # the application role owns its data: only the session settings keep checks read-only
        assert admin.execute("SELECT state FROM pg_stat_replication").fetchone()[0] == "streaming"


def test_seeded_audit_chain_links_every_row():
    import datetime as dt

    rows = audit_rows(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), n=700)
    assert rows[0][3] == GENESIS
    for before, row in zip(rows, rows[1:], strict=False):
        assert row[3] == before[4]
    ts, _, data, prev, current, *_rest, event_type, _hash = rows[10]
    assert current == chain_hash(prev, ts, event_type, data)


def _audit_table(sandbox) -> tuple:
    with sandbox_admin(sandbox) as admin:
        content = admin.execute("SELECT md5(string_agg(t::text, '|' ORDER BY id)) FROM audit_logs t").fetchone()[0]
        meta = admin.execute("SELECT pg_get_userbyid(relowner), relrowsecurity, relforcerowsecurity,"
                             " coalesce(relacl::text, 'default') FROM pg_class WHERE oid = 'audit_logs'::regclass"
                             ).fetchone()
        policies = admin.execute("SELECT count(*) FROM pg_policy").fetchone()[0]
        roles = sorted(r[0] for r in admin.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE 'acgs%'"))
    return content, meta, policies, roles


def test_field_layout_faults_heal_to_exactly_what_was_there(healthy_sandbox):
    before = _audit_table(healthy_sandbox)
    assert before[1] == ("acgs", False, False, "default") and before[2] == 0
    for fault in ("field-audit", "audit-tenant-break", "audit-rls-hidden"):
        healthy_sandbox.break_fault(fault)
        assert _audit_table(healthy_sandbox) != before
        healthy_sandbox.heal_fault(fault)
        after = _audit_table(healthy_sandbox)
        assert after == before, fault


def test_per_tenant_chains_start_at_each_tenants_genesis(healthy_sandbox):
    healthy_sandbox.break_fault("field-audit")
    with sandbox_admin(healthy_sandbox) as admin:
        firsts = dict(admin.execute("SELECT DISTINCT ON (tenant_id) tenant_id, prev_hash FROM audit_logs"
                                    " ORDER BY tenant_id, timestamp, id").fetchall())
        unlinked = admin.execute("SELECT count(*) FROM audit_logs r WHERE NOT EXISTS (SELECT 1 FROM audit_logs p"
                                 " WHERE p.current_hash = r.prev_hash AND p.tenant_id = r.tenant_id)").fetchone()[0]
    assert firsts == {"tenant-0": None, "tenant-1": "", "tenant-2": GENESIS, "tenant-3": "genesis",
                      "tenant-4": GENESIS}
    assert unlinked == 5  # every row links to the one before it in its own tenant's chain, but each first row


def test_the_two_audit_layouts_refuse_to_stack(healthy_sandbox):
    healthy_sandbox.break_fault("field-audit")
    with pytest.raises(SandboxError, match="heal field-audit first"):
        healthy_sandbox.break_fault("audit-tenant-break")


def test_heal_ends_every_session_a_fault_opened(healthy_sandbox):
    with sandbox_admin(healthy_sandbox) as admin:
        def sessions() -> int:
            return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE"
                                 " 'acgs-sandbox:%'").fetchone()[0]

        for fault in ("db-saturation", "db-lock", "db-long-query"):
            healthy_sandbox.break_fault(fault)
            assert sessions() >= 1
            healthy_sandbox.heal_fault(fault)
            wait_for(f"no session of {fault} left after heal", lambda: sessions() == 0, 10, 0.1)


def test_up_refuses_a_taken_postgres_port_and_leaves_nothing_running(tmp_path):
    offset = free_port_offset()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", primary_port(offset)))
        holder.listen()
        sb = Sandbox(tmp_path / "sb", port_offset=offset, components=[Postgres(), Redis()])
        with pytest.raises(SandboxError, match=rf"port {primary_port(offset)} \(PostgreSQL\)"):
            sb.up()
    assert sb.status()["up"] is False
    assert all(p["state"] == "stopped" for p in _data_procs(sb).values())


def test_down_leaves_no_server_behind(tmp_path):
    offset = free_port_offset()
    sb = Sandbox(tmp_path / "sb", port_offset=offset, components=[Postgres(), Redis()])
    try:
        sb.up()
        sb.break_fault("db-long-query")
        sb.break_fault("redis-slow")
        root = (sb.dir / "postgres").resolve()
        pids = [p["pid"] for p in _data_procs(sb).values()]
        stopped = sb.down()
        assert len(stopped) == 5, stopped  # primary, replica, redis and the two holders
        for pid in pids:  # gone, or a zombie its parent (not us: pg_ctl's postmasters are not our children) reaps
            assert _state(pid) in (None, "Z", "X"), (pid, _state(pid))
        assert all(port_free(p) for p in (primary_port(offset), replica_port(offset), redis_port(offset)))
        assert not root.exists() and sb.faults() == []
        assert sb.down() == []
    finally:
        sb.down()


def test_rewriting_the_audit_chain_leaves_no_pile_of_dead_rows(healthy_sandbox):
    # each layout fault rewrites every audit row; with the replica's hot_standby_feedback a VACUUM run straight
    # after could remove nothing, and DB-11 (bloat) then failed in whatever test came next
    for _ in range(3):
        healthy_sandbox.break_fault("field-audit")
        healthy_sandbox.heal_fault("field-audit")
    with sandbox_admin(healthy_sandbox) as admin:
        live, dead = admin.execute("SELECT n_live_tup, n_dead_tup FROM pg_stat_user_tables"
                                   " WHERE relname = 'audit_logs'").fetchone()
    assert dead < 0.2 * live, (live, dead)
