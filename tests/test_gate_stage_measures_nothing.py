"""The gate stage judges what the run measured: the maintenance snapshot's Redis keys are read over RD-01's own
connection while the run goes on (run_state.py), and gates.finish connects to nothing. Counted by the server
itself: Redis's INFO `total_connections_received`."""

from __future__ import annotations

import json

import redis

from acgs_verify.gates import GatePlan, finish
from acgs_verify.profile import load_profile
from acgs_verify.results import RunResult
from tests.conftest import run_cli
from tests.servers import redis_server


def connections_received(port: int) -> int:
    with redis.Redis(host="127.0.0.1", port=port) as admin:
        # the admin's own connection is counted before INFO answers: leave it out
        return int(admin.info("stats")["total_connections_received"]) - 1


def test_the_gate_stage_opens_no_connection(tmp_path, write_profile):
    with redis_server(tmp_path) as port:
        url = f"redis://127.0.0.1:{port}/0"
        profile = load_profile(str(write_profile(f"redis:\n  - {{name: cache, url: '{url}'}}\n")))
        result = RunResult(run_id="r1", profile=profile.name, gate="pre-maintenance",
                           started="2026-01-01T00:00:00+00:00", duration=1.0, constitutional_hash="", checks=[])
        before = connections_received(port)
        finish(result, GatePlan("pre-maintenance"), profile)
        assert connections_received(port) == before + 1  # the count's own second connection, nothing else
        # nothing recorded it during the run: the gate says so rather than asking now
        assert result.extra["state"]["redis"] == {}
        assert "redis cache: not compared: RD-01 did not run on it in this run" in result.notes


def test_the_snapshot_holds_what_rd01_read_over_its_own_connection(tmp_path, write_profile):
    with redis_server(tmp_path) as port:
        with redis.Redis(host="127.0.0.1", port=port) as admin:
            admin.mset({"acgs:constitutional_hash": "cdd01ef066bc6cf2", "acgs:x": "1"})
        profile = write_profile(f"redis:\n  - {{name: cache, url: 'redis://127.0.0.1:{port}/0'}}\n")
        opened = {}
        for gate in ("compliance", "pre-maintenance"):  # the first keeps no snapshot: what RD-01 alone opens
            before = connections_received(port)
            res = run_cli("run", "--profile", str(profile), "--report-dir", str(tmp_path / gate), "--gate", gate,
                          "--", "-k", "RD-01")
            opened[gate] = connections_received(port) - before - 1
        summary = json.loads((tmp_path / "pre-maintenance" / "latest" / "summary.json").read_text())
        assert [c["outcome"] for c in summary["checks"]] == ["passed"], res.stdout[-2000:]
        assert summary["state"]["redis"] == {"cache": {"keys": 2, "names": ["acgs:constitutional_hash", "acgs:x"]}}
        snapshot = json.loads((tmp_path / "pre-maintenance" / "latest" / "snapshot.json").read_text())
        assert snapshot["redis"]["cache"]["keys"] == 2
        # the reach test and RD-01's session (reach.py, probes/redis.py), the same with a snapshot as without
        assert opened["pre-maintenance"] == opened["compliance"] <= 2, opened
