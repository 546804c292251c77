"""Secrets: with a database password, a Redis password and an ssh key passphrase set to distinctive values, no
byte the run produced holds any of them: terminal, every report file, Allure attachments, JUnit, the history
line, the snapshot."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from tests.conftest import run_cli, sandbox_admin

DB_PW = "Db-Pw-Zq7Kx4Vt9Rw2"
REDIS_PW = "Redis-Pw-Mn3Hb8Lc5Fj1"
PASSPHRASE = "Ssh-Pp-Wy6Gd2Ns0Tk4"
WRONG_DB_PW = "Db-Wrong-Hh5Qa1Ue8Pz"
WRONG_REDIS_PW = "Redis-Wrong-Xc9Vb2Nm7L"
SECRETS = (DB_PW, REDIS_PW, PASSPHRASE, WRONG_DB_PW, WRONG_REDIS_PW)


@pytest.fixture
def distinctive_passwords(healthy_sandbox):
    """The sandbox's acgs role and Redis take the distinctive passwords for the test, and get theirs back after."""
    import redis

    old_db = healthy_sandbox.secret("db")
    old_redis = healthy_sandbox.secret("redis")
    prof = yaml.safe_load(healthy_sandbox.profile_path.read_text())
    url = prof["redis"][0]["url"]
    with sandbox_admin(healthy_sandbox) as admin:
        admin.execute(f"ALTER ROLE acgs PASSWORD '{DB_PW}'")
    r = redis.Redis.from_url(url, password=old_redis, socket_timeout=5)
    r.config_set("requirepass", REDIS_PW)
    try:
        yield prof
    finally:
        with sandbox_admin(healthy_sandbox) as admin:
            admin.execute(f"ALTER ROLE acgs PASSWORD '{old_db}'")
        redis.Redis.from_url(url, password=REDIS_PW, socket_timeout=5).config_set("requirepass", old_redis)


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen (openssh-client)")
def test_no_secret_in_any_byte_the_run_produced(healthy_sandbox, distinctive_passwords, tmp_path):
    prof = distinctive_passwords
    ssh_hosts = [h for h in prof["hosts"] if h.get("backend") == "ssh"]
    if not ssh_hosts:
        pytest.skip("the sandbox has no ssh host (sshd not installed)")
    key = tmp_path / "id_passphrase"
    shutil.copy(ssh_hosts[0]["identity_file"], key)
    key.chmod(0o600)
    subprocess.run(["ssh-keygen", "-p", "-q", "-P", "", "-N", PASSPHRASE, "-f", str(key)], check=True,
                   capture_output=True)
    ssh_hosts[0].update(backend="paramiko", identity_file=str(key), identity_passphrase_env="T_SSH_PASSPHRASE")

    db = prof["databases"][0]
    db.pop("password_file"), db.update(password_env="T_DB_PW")
    stale_db = {**db, "name": "stale-credentials", "password_env": "T_WRONG_DB_PW", "replicas": []}
    cache = prof["redis"][0]
    cache.pop("password_file"), cache.update(password_env="T_REDIS_PW")
    stale_cache = {**cache, "name": "stale-cache", "password_env": "T_WRONG_REDIS_PW"}
    prof["databases"].append(stale_db)
    prof["redis"].append(stale_cache)
    profile = tmp_path / "secrets.yaml"
    profile.write_text(yaml.safe_dump(prof))

    healthy_sandbox.break_fault("wrong-hash:auth")  # failures with evidence in every report
    # a service that logs its connection string: the line names another hash, so CC-02 fails and attaches it as
    # evidence to every report; breaking the log fault first makes the fixture's heal start a clean log after
    healthy_sandbox.break_fault("log-hash-mismatch:auth")
    auth_log = next(s["log"] for s in prof["services"] if s["name"] == "auth")
    with open(auth_log, "a") as f:
        f.write(f"2026-11-27 10:00:00,000 - auth_service - ERROR - reconnect postgresql://acgs:{DB_PW}@db/acgs "
                f"redis=:{REDIS_PW} key passphrase {PASSPHRASE} Constitutional Hash: 3f2a9c1b7e4d6a05\n")
    env = {"T_DB_PW": DB_PW, "T_REDIS_PW": REDIS_PW, "T_SSH_PASSPHRASE": PASSPHRASE,
           "T_WRONG_DB_PW": WRONG_DB_PW, "T_WRONG_REDIS_PW": WRONG_REDIS_PW}
    reports = tmp_path / "reports"
    # a process: the terminal is what the entrypoint writes to its file descriptors, its children's lines included
    res = run_cli("run", "--profile", str(profile), "--report-dir", str(reports), "--gate", "pre-maintenance",
                  env=env, process=True)
    assert res.returncode == 2, res.stdout[-3000:] + res.stderr

    import json

    summary = json.loads((reports / "latest" / "summary.json").read_text())
    by = {(c["id"], c["target"]): c["outcome"] for c in summary["checks"]}
    # the distinctive credentials worked: the checks that use them ran and passed
    assert by[("DB-01", "primary")] == "passed" and by[("RD-01", "cache")] == "passed"
    assert by[("SYS-03", ssh_hosts[0]["name"])] == "passed"
    # and the wrong ones failed, with messages that would have been the place for a leak
    assert by[("DB-01", "stale-credentials")] == "failed" and by[("RD-01", "stale-cache")] == "failed"
    cc02 = next(c for c in summary["checks"] if c["id"] == "CC-02" and c["target"].startswith("auth@"))
    assert cc02["outcome"] == "failed" and "postgresql://acgs:***@db/acgs" in json.dumps(cc02["evidence"])

    produced = {"stdout": res.stdout.encode(), "stderr": res.stderr.encode()}
    for path in reports.rglob("*"):
        if path.is_file():
            produced[str(path.relative_to(reports))] = path.read_bytes()
    names = set(produced)
    assert any(n.endswith("junit.xml") for n in names) and any(n.endswith("snapshot.json") for n in names)
    assert any("allure-results" in n and "attachment" in n for n in names)
    assert "history.jsonl" in names
    leaks = [(name, s) for name, data in produced.items() for s in SECRETS if s.encode() in data]
    assert leaks == [], leaks
