"""The sandbox itself: real uvicorn processes on loopback, real HTTP, real log files. No mocks.

These tests are about the services and the manager, so their sandboxes run the services only (PostgreSQL
and Redis have theirs in test_sandbox_data.py).

Most tests share one sandbox and leave it as they found it (each heals what it breaks), so they also hold
under pytest-xdist; the test of `down` brings up a sandbox of its own.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from acgs_verify.sandbox import FAULTS, Sandbox, SandboxError
from acgs_verify.sandbox.components.base import port_free
from acgs_verify.sandbox.components.services import Services
from acgs_verify.sandbox.service_app import DELAY_HEADER, OTHER_LOG_HASH, SERVICES, SLOW_SECONDS
from tests.conftest import free_port_offset
from tests.waiting import wait_for

HASH = "cdd01ef066bc6cf2"
PORTS = [s.port for s in SERVICES.values()]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    sb = Sandbox(tmp_path_factory.mktemp("sandbox"), port_offset=free_port_offset(), components=[Services()])
    try:
        sb.up()
        yield sb
    finally:
        sb.down()


def _procs(sb: Sandbox) -> dict[str, dict]:
    return {p["name"]: p for p in sb.status()["components"]["services"]}


def _url(sb: Sandbox, name: str, path: str = "/health") -> str:
    return f"http://127.0.0.1:{SERVICES[name].port + sb.port_offset}{path}"


def _get(sb: Sandbox, name: str, path: str = "/health") -> httpx.Response:
    return httpx.get(_url(sb, name, path), timeout=5)


def _log(sb: Sandbox, name: str) -> Path:
    return sb.dir / "var/log/acgs" / f"{SERVICES[name].service_field}.log"


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ").decode()


# ---------------------------------------------------------------------------------------- lifecycle


def test_up_again_changes_nothing(sandbox: Sandbox) -> None:
    before = {n: p["pid"] for n, p in _procs(sandbox).items()}
    mtime = sandbox.profile_path.stat().st_mtime_ns
    assert sandbox.up() == sandbox.profile_path
    assert {n: p["pid"] for n, p in _procs(sandbox).items()} == before
    assert sandbox.profile_path.stat().st_mtime_ns == mtime


def test_status_shows_every_service_running_on_its_offset_port(sandbox: Sandbox) -> None:
    status = sandbox.status()
    assert status["up"] is True and status["faults"] == []
    procs = _procs(sandbox)
    assert set(procs) == set(SERVICES)
    for name, p in procs.items():
        assert p["state"] == "running", p
        assert p["port"] == SERVICES[name].port + sandbox.port_offset
        assert (sandbox.dir / "run" / f"{name}.pid").read_text().strip() == str(p["pid"])


def test_profile_describes_the_running_services(sandbox: Sandbox) -> None:
    profile = yaml.safe_load(sandbox.profile_path.read_text())
    assert profile["constitutional_hash"] == HASH
    assert profile["hosts"][0]["address"] == "127.0.0.1"
    assert profile["paths"]["logs"] == str(sandbox.dir / "var/log/acgs")
    procs = _procs(sandbox)
    for svc in profile["services"]:
        spec = SERVICES[svc["name"]]
        assert svc["port"] == spec.port + sandbox.port_offset
        assert svc["unit"] == f"acgs-{spec.name}-service"
        assert re.search(svc["process"], _cmdline(procs[spec.name]["pid"]))
        # the pattern must not also match a service whose factory name extends this one's
        assert sum(bool(re.search(svc["process"], _cmdline(p["pid"]))) for p in procs.values()) == 1
        assert Path(svc["log"]).is_file()
        assert ("ready_path" in svc) == spec.probes and ("metrics_path" in svc) == spec.metrics


def test_shipped_sandbox_profile_is_the_generated_one_for_the_default_offset(tmp_path: Path) -> None:
    shipped_data = yaml.safe_load((Path(__file__).parents[1] / "profiles" / "sandbox.yaml").read_text())
    generated_data = Sandbox(tmp_path / "sb").profile_data()
    if len(generated_data["hosts"]) == 1:  # no sshd installed here: the sandbox has no ssh host
        shipped_data["hosts"] = shipped_data["hosts"][:1]
    generated = yaml.safe_dump(generated_data)
    assert yaml.safe_dump(shipped_data) == generated.replace(
        str(tmp_path / "sb"), "${ACGS_SANDBOX_DIR:-.sandbox}")


@pytest.mark.parametrize("name", list(SERVICES))
def test_health_probes_and_headers_look_like_acgs(sandbox: Sandbox, name: str) -> None:
    spec = SERVICES[name]
    r = _get(sandbox, name)
    assert r.status_code == 200
    assert r.headers["x-constitutional-hash"] == HASH
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["status"] == "healthy" and body["service"] == spec.service_field
    assert body["constitutional_hash"] == HASH and body["version"] == "4.0.0"
    assert body["timestamp"].endswith("Z") and body["uptime_seconds"] >= 0
    ready, live = _get(sandbox, name, "/health/ready"), _get(sandbox, name, "/health/live")
    if spec.probes:
        assert ready.json()["ready"] is True and live.json() == {"alive": True}
    else:
        assert ready.status_code == live.status_code == 404
    assert _get(sandbox, name, "/no/such/path").status_code == 404
    assert _get(sandbox, name, "/api/v1/anything/at/all").status_code == 200


@pytest.mark.parametrize("name", [n for n, s in SERVICES.items() if s.metrics])
def test_metrics_count_the_requests_really_served(sandbox: Sandbox, name: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    before = _get(sandbox, name, "/metrics")
    assert before.headers["content-type"].startswith("text/plain; version=0.0.4")
    _get(sandbox, name, "/api/v1/counted")
    families = {f.name: f for f in text_string_to_metric_families(_get(sandbox, name, "/metrics").text)}
    counted = [s for s in families["acgs_http_requests"].samples
               if s.labels == {"method": "GET", "endpoint": "/api/v1/counted", "status": "200"}]
    assert counted and counted[0].value == 1
    seeded = sum(s.value for s in families["acgs_http_requests"].samples
                 if s.labels["endpoint"].startswith("/api/v1/"))
    assert seeded >= 40
    assert {s.name for s in families["acgs_http_request_duration_seconds"].samples} >= {
        "acgs_http_request_duration_seconds_bucket", "acgs_http_request_duration_seconds_count"}
    assert families["acgs_constitutional_compliance"].samples[0].value == pytest.approx(0.998)


@pytest.mark.parametrize("name", list(SERVICES))
def test_logs_hold_the_banner_and_request_lines(sandbox: Sandbox, name: str) -> None:
    lines = _log(sandbox, name).read_text().splitlines()
    assert any(f"Constitutional Hash: {HASH}" in ln for ln in lines)
    if SERVICES[name].log_format == "json":
        records = [json.loads(ln) for ln in lines]
        assert any(r.get("constitutional_hash") == HASH for r in records)
        assert sum(r.get("status") == 200 and r["path"].startswith("/api/v1/") for r in records) >= 40
    else:
        pattern = rf"^\S+ \S+ - {SERVICES[name].service_field} - INFO - request method=GET path=/api/v1/\S+ "
        assert sum(bool(re.match(pattern + r"status=200 duration_ms=[\d.]+$", ln)) for ln in lines) >= 40


# ------------------------------------------------------------------------------------------- faults


def test_service_down_stops_the_process_and_heal_starts_it(sandbox: Sandbox) -> None:
    old_pid = _procs(sandbox)["governance-synthesis"]["pid"]
    sandbox.break_fault("service-down:governance-synthesis")
    p = _procs(sandbox)["governance-synthesis"]
    assert p["state"] == "down (fault)" and p["pid"] is None
    assert not Path(f"/proc/{old_pid}").exists()
    with pytest.raises(httpx.ConnectError):
        _get(sandbox, "governance-synthesis")
    sandbox.heal_fault("service-down:governance-synthesis")
    p = _procs(sandbox)["governance-synthesis"]
    assert p["state"] == "running" and p["pid"] != old_pid
    assert _get(sandbox, "governance-synthesis").status_code == 200


def test_service_unhealthy_answers_503_with_the_right_hash(sandbox: Sandbox) -> None:
    sandbox.break_fault("service-unhealthy:auth")
    r = _get(sandbox, "auth")
    assert r.status_code == 503 and r.json()["status"] == "unhealthy"
    assert r.json()["constitutional_hash"] == HASH and r.headers["x-constitutional-hash"] == HASH
    assert _get(sandbox, "auth", "/health/ready").json()["ready"] is True
    sandbox.heal_fault("service-unhealthy:auth")
    assert _get(sandbox, "auth").json()["status"] == "healthy"


def test_wrong_hash_changes_body_and_every_header_but_not_logs(sandbox: Sandbox) -> None:
    sandbox.break_fault("wrong-hash:constitutional-ai")
    r = _get(sandbox, "constitutional-ai")
    wrong = r.json()["constitutional_hash"]
    assert re.fullmatch(r"[0-9a-f]{16}", wrong) and wrong != HASH
    assert r.headers["x-constitutional-hash"] == wrong
    assert _get(sandbox, "constitutional-ai", "/api/v1/x").headers["x-constitutional-hash"] == wrong
    assert _get(sandbox, "constitutional-ai", "/nope").headers["x-constitutional-hash"] == wrong
    assert wrong not in _log(sandbox, "constitutional-ai").read_text()
    sandbox.heal_fault("wrong-hash:constitutional-ai")
    r = _get(sandbox, "constitutional-ai")
    assert r.json()["constitutional_hash"] == HASH and r.headers["x-constitutional-hash"] == HASH


def _delay_ms(sb: Sandbox, name: str, path: str = "/health") -> int:
    """The delay the service says it waited before answering (0: none); how long that took is `make bench`'s."""
    return int(_get(sb, name, path).headers.get(DELAY_HEADER, 0))


def test_slow_delays_every_request_until_healed(sandbox: Sandbox) -> None:
    sandbox.break_fault("slow:formal-verification")
    assert [_delay_ms(sandbox, "formal-verification", p) for p in ("/health", "/api/v1/x", "/metrics")] == (
        [round(SLOW_SECONDS * 1000)] * 3)
    assert _delay_ms(sandbox, "auth") == 0  # the fault names one service
    sandbox.heal_fault("slow:formal-verification")
    # the delay is gone once the service has re-read its faults
    wait_for("a request without the delay", lambda: _delay_ms(sandbox, "formal-verification") == 0, 10)


def test_errors_fill_logs_and_metrics_with_500s_and_heal_starts_clean(sandbox: Sandbox) -> None:
    name = "policy-governance"  # a JSON-logging service
    sandbox.break_fault(f"errors:{name}")
    assert _get(sandbox, name, "/api/v1/policies").status_code == 500
    assert _get(sandbox, name).status_code == 200
    recent = [json.loads(ln) for ln in _log(sandbox, name).read_text().splitlines()[-40:]]
    errors = [r for r in recent if r.get("status") == 500]
    assert len(errors) >= 35 and all(r["level"] == "ERROR" for r in errors)
    assert 'status="500"' in _get(sandbox, name, "/metrics").text
    old_pid = _procs(sandbox)[name]["pid"]

    sandbox.heal_fault(f"errors:{name}")
    assert _get(sandbox, name, "/api/v1/policies").status_code == 200
    assert _procs(sandbox)[name]["pid"] != old_pid
    assert '"status": 500' in Path(f"{_log(sandbox, name)}.1").read_text()
    fresh = _log(sandbox, name).read_text()
    assert '"status": 500' not in fresh and f"Constitutional Hash: {HASH}" in fresh
    assert 'status="500"' not in _get(sandbox, name, "/metrics").text


@pytest.mark.parametrize("name", ["auth", "formal-verification"])  # plain and JSON logs
def test_log_hash_mismatch_names_another_hash_and_heal_rotates(sandbox: Sandbox, name: str) -> None:
    sandbox.break_fault(f"log-hash-mismatch:{name}")
    recent = _log(sandbox, name).read_text().splitlines()[-50:]
    bad = [ln for ln in recent if OTHER_LOG_HASH in ln]
    assert bad and all(OTHER_LOG_HASH != HASH for _ in bad)
    if SERVICES[name].log_format == "json":
        assert json.loads(bad[0])["constitutional_hash"] == OTHER_LOG_HASH
    else:
        assert f" - WARNING - Policy evaluated under Constitutional Hash: {OTHER_LOG_HASH}" in bad[0]
    sandbox.heal_fault(f"log-hash-mismatch:{name}")
    _get(sandbox, name, "/api/v1/after-heal")
    fresh = _log(sandbox, name).read_text()
    assert OTHER_LOG_HASH not in fresh and f"Constitutional Hash: {HASH}" in fresh


def test_log_no_banner_leaves_no_hash_in_the_log(sandbox: Sandbox) -> None:
    name = "evolutionary-computation"
    sandbox.break_fault(f"log-no-banner:{name}")
    text = _log(sandbox, name).read_text()
    assert HASH not in text and text.count("request method=GET path=/api/v1/") >= 40
    assert _get(sandbox, name).json()["constitutional_hash"] == HASH  # only the log is affected
    sandbox.heal_fault(f"log-no-banner:{name}")
    assert f"Constitutional Hash: {HASH}" in _log(sandbox, name).read_text()


def test_faults_combine_per_service_and_heal_independently(sandbox: Sandbox) -> None:
    sandbox.break_fault("wrong-hash:auth")
    sandbox.break_fault("service-unhealthy:auth")
    sandbox.break_fault("slow:constitutional-ai")
    assert sorted(sandbox.faults()) == ["service-unhealthy:auth", "slow:constitutional-ai", "wrong-hash:auth"]
    r = _get(sandbox, "auth")
    assert r.status_code == 503 and r.headers["x-constitutional-hash"] != HASH
    sandbox.heal_fault("service-unhealthy:auth")
    r = _get(sandbox, "auth")
    assert r.status_code == 200 and r.headers["x-constitutional-hash"] != HASH
    assert _delay_ms(sandbox, "constitutional-ai") == round(SLOW_SECONDS * 1000)
    sandbox.heal_fault("wrong-hash:auth")
    sandbox.heal_fault("slow:constitutional-ai")
    assert sandbox.faults() == []
    assert _get(sandbox, "auth").headers["x-constitutional-hash"] == HASH


@pytest.mark.parametrize("spec", ["melt:auth", "slow:nosuch", "slow", "", "slow:"])
def test_unknown_fault_or_service_is_one_clear_line(sandbox: Sandbox, spec: str) -> None:
    with pytest.raises(SandboxError) as exc:
        sandbox.break_fault(spec)
    msg = str(exc.value)
    assert "\n" not in msg
    listed = "slow, errors" if spec.startswith("melt") or not spec else "auth, constitutional-ai"
    assert listed in msg


def test_faults_need_a_running_sandbox(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="not up"):
        Sandbox(tmp_path / "never-up").break_fault("slow:auth")
    assert set(FAULTS) >= {"service-down", "service-unhealthy", "wrong-hash", "slow", "errors",
                           "log-hash-mismatch", "log-no-banner"}


def test_up_refuses_a_taken_port_and_leaves_nothing_running(tmp_path: Path) -> None:
    offset = free_port_offset()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", SERVICES["policy-governance"].port + offset))
        holder.listen()
        sb = Sandbox(tmp_path / "sb", port_offset=offset, components=[Services()])
        with pytest.raises(SandboxError, match=rf"port {8003 + offset} \(policy-governance\)"):
            sb.up()
    status = sb.status()
    assert status["up"] is False
    assert all(p["state"] == "stopped" for p in status["components"]["services"])


def test_a_service_that_cannot_start_fails_up_with_its_stderr(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONHOME", str(tmp_path / "no-python-here"))  # inherited: every service dies
    sb = Sandbox(tmp_path / "sb", port_offset=free_port_offset(), components=[Services()])
    with pytest.raises(SandboxError, match=r"exited during start-up: .*encoding") as exc:
        sb.up()
    assert "\n" not in str(exc.value)
    assert sb.status()["up"] is False and sb.faults() == []
    assert all(p["state"] == "stopped" for p in sb.status()["components"]["services"])


# ------------------------------------------------------------------------------------- crash, down


def test_a_killed_service_shows_as_crashed(sandbox: Sandbox) -> None:
    pid = _procs(sandbox)["auth"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for("auth shown as crashed", lambda: _procs(sandbox)["auth"]["state"] == "crashed", 10)
    assert _procs(sandbox)["constitutional-ai"]["state"] == "running"
    # the way back without a full restart: down-and-heal the one service
    sandbox.break_fault("service-down:auth")
    sandbox.heal_fault("service-down:auth")
    assert _procs(sandbox)["auth"]["state"] == "running"


def test_down_stops_every_process_and_is_safe_twice(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "sb", port_offset=free_port_offset(), components=[Services()])
    try:
        sandbox.up()
        sandbox.break_fault("slow:auth")
        pids = [p["pid"] for p in _procs(sandbox).values()]
        stopped = sandbox.down()
        assert len(stopped) == len(SERVICES)  # this sandbox runs the services only
        for pid in pids:
            assert not Path(f"/proc/{pid}").exists() or "service_app" not in _cmdline(pid)
        assert sandbox.down() == []
        status = sandbox.status()
        assert status["up"] is False and status["faults"] == []
        assert all(p["state"] == "stopped" and p["pid"] is None for p in status["components"]["services"])
        assert all(port_free(p + sandbox.port_offset) for p in PORTS)
    finally:
        sandbox.down()


def test_down_never_signals_a_reused_pid(tmp_path: Path) -> None:
    sb = Sandbox(tmp_path / "sb", port_offset=free_port_offset())
    sb.dir.mkdir()
    me = os.getpid()  # pretend our own pid now belongs to a sandbox service
    record = {"pid": me, "argv": ["python", "-m", "uvicorn", "gone"], "start_ticks": None}
    state = {"version": 1, "up": True, "port_offset": sb.port_offset, "python": "python",
             "components": {"services": {"processes": {"auth": record}, "faults": {}}}}
    (sb.dir / "state.json").write_text(json.dumps(state))
    assert _procs(sb)["auth"]["state"] == "crashed"
    assert sb.down() == []  # and we are still alive to assert it
