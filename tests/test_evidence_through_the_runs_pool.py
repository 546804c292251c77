"""--gate security-incident copies its evidence through the connections the checks used (the plugin's HostPool,
handed to the gate stage), not through a pool of its own: one HostPool per run, closed when the run ends."""

from __future__ import annotations

import json

from acgs_verify import cli
from acgs_verify.hosts import pool as hostmod


def test_the_evidence_gate_uses_the_runs_own_pool(tmp_path, monkeypatch):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "security.log").write_text("2026-12-07 10:00:00,000 - auth - WARNING - login failed for admin\n")
    profile = tmp_path / "p.yaml"
    profile.write_text(f"hosts: [{{name: here, roles: [app]}}]\npaths: {{logs: '{logs}'}}\n")
    made, closed = [], []
    real_init, real_close = hostmod.HostPool.__init__, hostmod.HostPool.close

    def counted_init(self, *args, **kwargs):
        made.append(self)
        real_init(self, *args, **kwargs)

    def counted_close(self):
        closed.append(self)
        real_close(self)

    monkeypatch.setattr(hostmod.HostPool, "__init__", counted_init)
    monkeypatch.setattr(hostmod.HostPool, "close", counted_close)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # what the CLI sets for its own run, scoped here
    reports = tmp_path / "reports"
    cli.main(["run", "--profile", str(profile), "--gate", "security-incident", "--report-dir", str(reports),
              "--workers", "0", "--", "-p", "no:cacheprovider"])
    summary = json.loads((reports / "latest" / "summary.json").read_text())
    assert summary["checks"], summary["notes"]
    assert summary["evidence"]["files"] >= 1 and summary["evidence"]["hosts"] == ["here"], summary["evidence"]
    assert len(made) == 1, f"{len(made)} HostPools for one run: the evidence opened its own"
    assert closed and all(p is made[0] for p in closed)  # and the one pool is closed once the evidence is in
