"""`acgs-verify discover` against a real sandbox on a shared host (other sandboxes, the machine's own PostgreSQL and
Redis beside it), a plain uvicorn service that is not ACGS, and secrets planted in process environments.

The sandbox is started with DATABASE_URL and REDIS_URL (passwords inside) in its services' environment, as the real
services carry them; discover must write those DSNs without the password and never show a secret anywhere.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from acgs_verify.discover.writer import MARK, merge
from acgs_verify.profile import load_profile
from tests.conftest import SHARED_MACHINE, free_port_offset, host_services_lock, run_cli
from tests.servers import closed_port, server

SERVICES = {"auth": 8016, "constitutional-ai": 8002, "policy-governance": 8003, "governance-synthesis": 8004,
            "formal-verification": 8005, "evolutionary-computation": 8010}
PLAIN_APP = '''
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b'{"status": "ok", "service": "inventory"}'})
'''


def _listens(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A sandbox whose services carry DSNs with passwords, plus a plain uvicorn service; always taken down."""
    work = tmp_path_factory.mktemp("discover")
    offset = free_port_offset()
    planted = "planted-" + secrets.token_hex(12)
    db_pw, redis_pw = "db" + secrets.token_hex(10), "rd" + secrets.token_hex(10)
    env = {"ACGS_SANDBOX_DB_PASSWORD": db_pw, "ACGS_SANDBOX_REDIS_PASSWORD": redis_pw, "ACGS_PLANTED": planted,
           "DATABASE_URL": f"postgresql+asyncpg://acgs:{db_pw}@127.0.0.1:{5432 + offset}/acgs_production",
           "REDIS_URL": f"redis://:{redis_pw}@127.0.0.1:{6379 + offset}/0"}
    sb_dir = work / "sb"
    (work / "plainapp.py").write_text(PLAIN_APP)

    def plain_app(port: int) -> list[str]:
        return [sys.executable, "-m", "uvicorn", "plainapp:app", "--host", "127.0.0.1", "--port", str(port),
                "--log-level", "warning"]

    # the plain service answers without a constitutional hash: another module's discover leaves it a candidate,
    # so it starts before the host's services lock is taken, and the sandbox's services after
    plain_env = {**os.environ, "ACGS_PLANTED": planted, "DATABASE_URL": env["DATABASE_URL"]}
    with server("the plain uvicorn service", plain_app, _listens, work / "plainapp.log", timeout=15, cwd=work,
                env=plain_env) as (plain_port, _), host_services_lock():
        try:
            up = run_cli("sandbox", "up", "--dir", str(sb_dir), "--port-offset", str(offset), env=env)
            assert up.returncode == 0, up.stderr
            yield {"dir": sb_dir, "offset": offset, "work": work, "plain_port": plain_port,
                   "secrets": [planted, db_pw, redis_pw],
                   "run_env": {"ACGS_DB_PASSWORD": db_pw, "ACGS_REDIS_PASSWORD": redis_pw},
                   "profile": yaml.safe_load((sb_dir / "profile.yaml").read_text())}
        finally:
            run_cli("sandbox", "down", "--dir", str(sb_dir))


def _no_secret(stack, *texts: str) -> None:
    for text in texts:
        for secret in stack["secrets"]:
            assert secret not in text


def _discover(stack, out: Path, *extra: str, env: dict | None = None):
    return run_cli("discover", "--port-offset", str(stack["offset"]), "-o", str(out), *extra, timeout=120, env=env)


def _owner_pid(port: int) -> int:
    out = subprocess.run(["ss", "-Htlnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    return int(re.search(r"pid=(\d+)", out).group(1))


def _ids(report_dir: Path) -> set[str]:
    summary = json.loads((report_dir / "latest" / "summary.json").read_text())
    assert summary["totals"]["failed"] == 0, [c["name"] + ": " + c["message"] for c in summary["checks"]
                                              if c["outcome"] == "failed"]
    return {c["id"] for c in summary["checks"] if "ops-1" not in c["target"]}


def test_discovered_profile_finds_the_sandbox_and_runs_clean_with_the_same_coverage(stack, tmp_path):
    out = tmp_path / "discovered.yaml"
    res = _discover(stack, out, "--name", "app-1", env={"ACGS_SANDBOX_DIR": str(stack["dir"])})
    assert res.returncode == 0, res.stderr
    summary, after = res.stderr.splitlines()
    assert summary.startswith("discovered 6 services, 1 database, 1 cache, backups, 1 certificate"), res.stderr
    # what to export before a run, and where the sandbox that runs keeps those passwords
    assert after.startswith("next: export ACGS_DB_PASSWORD ACGS_REDIS_PASSWORD (the profile names them; it holds "
                            f"no secret), then acgs-verify run --profile {out}; a sandbox runs in {stack['dir']}: "
                            f"its passwords are in {stack['dir'] / 'secrets'} (db.password, redis.password)"), after
    text = out.read_text()
    profile = load_profile(str(out), resolve_secrets=False)
    off, sb = stack["offset"], stack["profile"]
    assert {s.name: s.port for s in profile.services} == {n: p + off for n, p in SERVICES.items()}
    ps = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True).stdout.splitlines()
    for s in profile.services:  # each pattern matches its port's owner and no other process on this shared host
        matching = [int(line.split()[0]) for line in ps if re.search(s.process, line.split(None, 1)[1])]
        assert matching == [_owner_pid(s.port)], (s.name, s.process)
    (db,) = profile.databases
    assert db.dsn == f"postgresql://acgs@127.0.0.1:{5432 + off}/acgs_production" and db.password_env == \
        "ACGS_DB_PASSWORD"
    assert db.replicas == [f"postgresql://acgs@127.0.0.1:{5433 + off}/acgs_production"]
    assert "DATABASE_URL in the environment of pid" in text and "no password" in text
    assert [r.url for r in profile.redis] == [f"redis://127.0.0.1:{6379 + off}/0"]
    for key in ("logs", "app_root", "backups", "policies", "alerts_log"):
        assert getattr(profile.paths, key) == sb["paths"][key], key
    # discover reads this host: ops-1's own certificate (the sandbox's ssh host) is not on it
    assert [c.path for c in profile.certificates] == [c for c in sb["certificates"] if isinstance(c, str)]
    assert profile.tls_endpoints == sb["tls_endpoints"]
    assert profile.tls.ca_file == sb["tls"]["ca_file"]
    assert sorted(profile.security.secret_files) == sorted(sb["security"]["secret_files"])
    # the plain service: there, commented out, not checked
    assert re.search(rf"^  #   port: {stack['plain_port']}$", text, re.M)
    assert stack["plain_port"] not in {s.port for s in profile.services}
    _no_secret(stack, text, res.stdout, res.stderr)

    env = {**stack["run_env"]}
    ran = run_cli("run", "--profile", str(out), "--report-dir", str(tmp_path / "r1"), *SHARED_MACHINE, env=env)
    assert ran.returncode == 0, ran.stdout[-2000:]
    base = run_cli("run", "--profile", str(stack["dir"] / "profile.yaml"), "--report-dir", str(tmp_path / "r2"),
                   *SHARED_MACHINE)
    assert base.returncode in (0, 1), base.stdout[-2000:]
    assert _ids(tmp_path / "r2") <= _ids(tmp_path / "r1")
    logs = "".join(p.read_text(errors="replace") for p in (tmp_path / "r1").rglob("*") if p.is_file())
    _no_secret(stack, ran.stdout, ran.stderr, logs)


@contextlib.contextmanager
def recording_discoveries() -> Iterator[list]:
    """The findings of every `acgs-verify discover` run in this process inside the block (run_cli runs it here),
    so that a test can read what a CLI run found without reading the whole host a second time."""
    import acgs_verify.discover as discover

    seen, real = [], discover.discover

    def recording(*args, **kw):
        text, summary, found = real(*args, **kw)
        seen.append(found)
        return text, summary, found

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(discover, "discover", recording)
        yield seen


def test_merge_adds_what_is_new_and_keeps_every_line_the_user_wrote(stack, tmp_path):
    off = stack["offset"]
    user = tmp_path / "mine.yaml"
    user.write_text(f"""# my profile: hand-written
hosts:
  - {{name: app-1, address: 127.0.0.1, backend: local}}   # this box

services:
  # auth, as I wrote it
  - name: auth
    port: {8016 + off}
    process: 'uvicorn .*service_app:auth .*--port {8016 + off}( |$)'

paths:
  logs: {stack['dir']}/var/log/acgs   # mine
thresholds: {{db_long_query_seconds: 60}}
""")
    before = user.read_text()
    out = tmp_path / "merged.yaml"
    with recording_discoveries() as discovered:
        res = _discover(stack, out, "--name", "app-1", "--merge", str(user))
    assert res.returncode == 0, res.stderr
    (found,) = discovered
    merged = out.read_text()
    kept = iter(merged.splitlines())
    assert all(line in kept for line in before.splitlines()), merged  # every user line, in order
    assert MARK in merged and user.read_text() == before
    profile = load_profile(str(out), resolve_secrets=False)
    assert [s.name for s in profile.services][0] == "auth"
    assert profile.services[0].process == f"uvicorn .*service_app:auth .*--port {8016 + off}( |$)"
    assert {s.name for s in profile.services} == set(SERVICES) and len(profile.hosts) == 1
    assert profile.paths.backups == stack["profile"]["paths"]["backups"]
    assert profile.thresholds.db_long_query_seconds == 60 and len(profile.databases) == 1
    # merging again what was found adds nothing new (the same findings: the host need not be read again)
    again, added = merge(merged, found)
    assert added == [], added
    # an existing file is never overwritten without --force
    refused = _discover(stack, out, "--name", "app-1")
    assert refused.returncode == 3 and "--force" in refused.stderr and out.read_text() == merged
    _no_secret(stack, merged, res.stderr, again)


def test_discover_over_ssh_reads_the_second_host(stack, tmp_path):
    ops = next((h for h in stack["profile"]["hosts"] if h["name"] == "ops-1"), None)
    if ops is None:
        pytest.skip("sshd is not installed: the sandbox has no second host")
    out = tmp_path / "ops.yaml"
    res = _discover(stack, out, "--host", ops["address"], "--backend", "ssh", "--port", str(ops["port"]),
                    "--identity-file", ops["identity_file"], "--known-hosts", ops["known_hosts"], "--name", "ops-1")
    assert res.returncode == 0, res.stderr
    profile = load_profile(str(out), resolve_secrets=False)
    (host,) = profile.hosts
    assert (host.name, host.address, host.backend, host.port, host.identity_file, host.known_hosts) == (
        "ops-1", ops["address"], "ssh", ops["port"], ops["identity_file"], ops["known_hosts"])
    assert {s.name for s in profile.services} == set(SERVICES)
    assert profile.paths.backups == stack["profile"]["paths"]["backups"]
    _no_secret(stack, out.read_text(), res.stdout, res.stderr)
    with closed_port(ops["address"]) as refused:
        down = run_cli("discover", "--host", ops["address"], "--backend", "ssh", "--port", str(refused),
                       "--identity-file", ops["identity_file"], "--known-hosts", ops["known_hosts"])
    assert down.returncode == 3 and down.stderr.count("\n") == 1 and "unreachable" in down.stderr, down.stderr
    assert down.stdout == ""


SYSTEM_PYTHON = "/usr/bin/python3.11"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("runuser") or not Path(SYSTEM_PYTHON).is_file(),
                    reason="needs root, runuser and /usr/bin/python3.11 to run discover as nobody")
def test_as_nobody_environments_cannot_be_read_and_say_so(stack, tmp_path, importable_by_others):
    """`nobody` may not read root's /proc/PID/environ, cwd or fd (nor see who owns root's sockets): discover still
    finds the services by their command lines and health answers, names what it could not read, and leaks nothing."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/tmp", "LANG": "C.UTF-8",
           "PYTHONPATH": os.pathsep.join(importable_by_others)}
    res = subprocess.run(["runuser", "-u", "nobody", "--", SYSTEM_PYTHON, "-m", "acgs_verify.cli", "discover",
                          "--port-offset", str(stack["offset"]), "--name", "app-1"],
                         capture_output=True, text=True, env=env, cwd="/tmp", timeout=120)
    assert res.returncode == 0, res.stderr
    out = tmp_path / "nobody.yaml"
    out.write_text(res.stdout)
    profile = load_profile(str(out), resolve_secrets=False)
    assert {s.name for s in profile.services} == set(SERVICES)
    assert "not readable by nobody" in res.stdout and "hidden from nobody" in res.stdout
    assert "DATABASE_URL" not in res.stdout
    _no_secret(stack, res.stdout, res.stderr)
