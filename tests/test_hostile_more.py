"""More hostile conditions: a Redis that answers garbage, and an application tree of 100,000 files with symlink
loops under it. Each is a clear finding within a bounded time, never a hang or a traceback."""

from __future__ import annotations

import json
import os
import time

from tests.conftest import run_cli
from tests.hostile import HostileServer


def test_redis_answering_garbage_is_one_clear_failure(tmp_path):
    with HostileServer("garbage") as port:
        profile = tmp_path / "p.yaml"
        profile.write_text(f"hosts: [{{name: h}}]\nredis: [{{name: junk, url: 'redis://127.0.0.1:{port}/0'}}]\n"
                           "thresholds: {redis_timeout_seconds: 1}\n")
        start = time.monotonic()
        res = run_cli("run", "--profile", str(profile), "--report-dir", str(tmp_path / "r"), "--", "-k", "RD-01")
        took = time.monotonic() - start
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    (c,) = json.loads((tmp_path / "r" / "latest" / "summary.json").read_text())["checks"]
    assert c["id"] == "RD-01" and c["outcome"] == "failed"
    assert "junk" in c["message"] and len(c["message"].splitlines()) == 1, c["message"]
    assert c["duration"] < 3 and took < 15


def test_world_writable_scan_of_100k_files_with_symlink_loops_is_bounded(tmp_path):
    root = tmp_path / "ACGS"
    for d in range(100):
        sub = root / f"pkg{d:03d}"
        sub.mkdir(parents=True)
        for f in range(1000):
            (sub / f"m{f:04d}.py").touch()
    (root / "loop-a").symlink_to(root / "loop-b")
    (root / "loop-b").symlink_to(root / "loop-a")
    (root / "pkg000" / "up").symlink_to(root)  # a directory loop
    bad = [root / "pkg007" / "m0042.py", root / "pkg099" / "m0999.py"] + [root / "pkg050" / f"m{i:04d}.py"
                                                                          for i in range(30)]
    for p in bad:
        os.chmod(p, 0o666)
    profile = tmp_path / "p.yaml"
    profile.write_text(f"hosts: [{{name: h, roles: [app]}}]\npaths: {{app_root: '{root}'}}\n")
    start = time.monotonic()
    res = run_cli("run", "--profile", str(profile), "--report-dir", str(tmp_path / "r"), "--", "-k", "SEC-01")
    took = time.monotonic() - start
    assert res.returncode == 2, res.stdout + res.stderr
    (c,) = json.loads((tmp_path / "r" / "latest" / "summary.json").read_text())["checks"]
    assert c["outcome"] == "failed" and "32" in c["message"], c["message"]
    listed = [str(p) for p in bad if str(p) in json.dumps(c)]
    assert len(listed) == 20, listed  # the first 20 found, and the count of all of them
    assert took < 30, took


def test_tls_endpoint_whose_handshake_stalls_fails_within_the_timeout(tmp_path):
    with HostileServer("hang") as port:
        profile = tmp_path / "p.yaml"
        profile.write_text(f"hosts: [{{name: h}}]\ntls_endpoints: ['https://127.0.0.1:{port}']\n"
                           "thresholds: {connect_timeout_seconds: 1.5}\n")
        res = run_cli("run", "--profile", str(profile), "--report-dir", str(tmp_path / "r"), "--", "-k", "TLS-02")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    (c,) = json.loads((tmp_path / "r" / "latest" / "summary.json").read_text())["checks"]
    assert c["id"] == "TLS-02" and c["outcome"] == "failed"
    assert "timed out" in c["message"].lower(), c["message"]
    assert c["duration"] < 5, c["duration"]
