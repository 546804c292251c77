"""`make demo` as a newcomer runs it: exit 0 when the run completed whatever its verdict, a last line saying what
the verdict means, a port offset of one's choosing, and sandbox thresholds that suit a shared machine."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, free_port_offset, run_cli


def make_demo(tmp_path: Path, *demo_args: str) -> tuple[subprocess.CompletedProcess, int]:
    offset = free_port_offset()
    venv = Path(sys.executable).parent.parent  # the environment running these tests: make does not build another
    cmd = ["make", "--no-print-directory", "-C", str(REPO), "demo", f"VENV={venv}",
           f"SANDBOX_DIR={tmp_path / 'sb'}", f"REPORT_DIR={tmp_path / 'reports'}", f"SANDBOX_PORT_OFFSET={offset}",
           f"DEMO_ARGS={' '.join(demo_args)}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600), offset


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("demo_args, code, meaning", [
    # a P2 check fails for sure (SYS-01 with a load limit no machine stays under): WARNING, exit 1
    (("--set", "thresholds.load_1m_max=0.0001", "--", "-k", "SYS-01"), 1, "WARNING, only P2/P3"),
    # P0 checks fail for sure (a constitutional hash no service has): CRITICAL, exit 2
    (("--set", "constitutional_hash=deadbeefdeadbeef", "--", "-k", "SVC-02"), 2, "CRITICAL, a P0/P1 check failed"),
])
def test_make_demo_exits_0_when_the_run_completed_and_says_what_the_verdict_means(tmp_path, demo_args, code,
                                                                                   meaning):
    res, offset = make_demo(tmp_path, *demo_args)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    lines = res.stdout.strip().splitlines()
    assert lines[-2].startswith(("ACGS WARNING", "ACGS CRITICAL")), lines[-5:]
    assert lines[-1].startswith(f"make demo: the run completed: {meaning}") and f"exit {code}" in lines[-1]
    assert (tmp_path / "reports" / "latest" / "report.html").is_file()
    profile = yaml.safe_load((tmp_path / "sb" / "profile.yaml").read_text())
    assert profile["services"][0]["port"] > offset  # the offset asked for
    down = run_cli("sandbox", "status", "--dir", str(tmp_path / "sb"), "--port-offset", str(offset))
    assert down.returncode == 3 and "not up" in down.stdout  # the demo took its sandbox down


def test_the_sandbox_profile_suits_a_shared_machine():
    from acgs_verify.profile import load_profile
    from acgs_verify.sandbox import Sandbox

    shipped = load_profile(str(REPO / "profiles" / "sandbox.yaml"), resolve_secrets=False).thresholds
    generated = Sandbox(REPO / ".no-such-sandbox").profile_data()["thresholds"]
    # a laptop or CI runner busy with other work: SYS-01/SYS-02 report its load and CPU, fail only when it is stuck
    for t in (shipped.load_1m_max, generated["load_1m_max"]):
        assert t >= 64
    assert shipped.cpu_percent_max == generated["cpu_percent_max"] == 100
    # the shared cores make a loaded Redis answer in 5-8 ms; redis-slow (200 ms sleeps) still fails RD-02
    assert shipped.redis_latency_p99_ms_max == generated["redis_latency_p99_ms_max"] == 25
