"""The whole catalog against the sandbox as an unprivileged user (`nobody`), as production checkers run.

Such a user cannot see which process owns another user's socket. Every check must then either pass on evidence it
could see, or say in its message what it could not see; a blind pass or a traceback fails this test.

The checker's inputs (profile, logs, backups, policies, password files) are copied into a directory of this test
that `nobody` can read, with the password files owned by `nobody` as a monitoring user's would be: the sandbox itself
is not loosened. The ssh host is left out: the sandbox's sshd admits only the user who started it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from acgs_verify.sandbox.constants import SECRET_FILES
from tests.conftest import SHARED_MACHINE, keep_hosts

USER = "nobody"
SYSTEM_PYTHON = "/usr/bin/python3.11"  # the venv's interpreter lives under /root (0700); same ABI
# what a message must say when a check could not see something (one of these words)
COULD_NOT_SEE = ("not visible", "could not", "cannot", "permission denied", "not readable", "unreadable")


def _can_switch_user() -> str | None:
    if os.geteuid() != 0:
        return "needs root to run the checks as another user (runuser)"
    if not shutil.which("runuser"):
        return "needs runuser (util-linux)"
    if not Path(SYSTEM_PYTHON).is_file() or sys.version_info[:2] != (3, 11):
        return f"needs {SYSTEM_PYTHON} with the same ABI as the test's Python (3.11)"
    return None


pytestmark = pytest.mark.skipif(_can_switch_user() is not None, reason=_can_switch_user() or "")


@pytest.fixture
def readable_copy(sandbox):
    """DIR/sandbox: a copy of what the checker reads, reachable by USER; DIR/profile.yaml points at it."""
    import pwd

    work = Path(tempfile.mkdtemp(prefix="acgs-unprivileged-", dir="/tmp"))
    try:
        work.chmod(0o755)
        copy = work / "sandbox"
        shutil.copytree(sandbox.dir, copy, symlinks=True, ignore=shutil.ignore_patterns("postgres", "run", "ssh"))
        for d in [copy, *(p for p in copy.rglob("*") if p.is_dir() and not p.is_symlink())]:
            d.chmod(d.stat().st_mode | 0o055)  # pytest's tmp dirs are 0700; the files keep their own modes
        nobody = pwd.getpwnam(USER)
        # the monitoring user's own credentials, still 0600: the sandbox's passwords (not its CA key), where the
        # sandbox says they are, in the copy
        passwords = [copy / path.relative_to(sandbox.dir) for path in map(sandbox.secret_file, SECRET_FILES)
                     if path.suffix == ".password"]
        for secret in [passwords[0].parent, *passwords]:
            os.chown(secret, nobody.pw_uid, nobody.pw_gid)
        data = yaml.safe_load(sandbox.profile_path.read_text().replace(str(sandbox.dir), str(copy)))
        keep_hosts(data, lambda h: h.get("backend", "local") == "local")
        (work / "profile.yaml").write_text(yaml.safe_dump(data))
        # redis-py imports async_timeout on Python < 3.11.3 (the system's 3.11.2), which the venv (a newer 3.11)
        # never installed; the synchronous client the checks use never enters it: asyncio's own timeout stands in
        shim = work / "pythonpath"
        shim.mkdir()
        (shim / "async_timeout.py").write_text("from asyncio import timeout  # noqa: F401\n")
        reports = work / "reports"
        reports.mkdir()
        os.chown(reports, nobody.pw_uid, nobody.pw_gid)
        yield work
    finally:
        if not os.environ.get("ACGS_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


def _run_as_user(work: Path, importable: list[str], *args: str) -> dict:
    """`acgs-verify run` as USER on WORK/profile.yaml: its summary.json, after checking it ran (no traceback)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(work), "LANG": "C.UTF-8",
           "PYTHONPATH": os.pathsep.join([*importable, str(work / "pythonpath")]), "PYTHONDONTWRITEBYTECODE": "1"}
    res = subprocess.run(["runuser", "-u", USER, "--", SYSTEM_PYTHON, "-m", "acgs_verify.cli", "run",
                          "--profile", str(work / "profile.yaml"), "--report-dir", str(work / "reports"),
                          *SHARED_MACHINE, *args],
                         cwd=work, env=env, capture_output=True, text=True, timeout=120)
    output = res.stdout + res.stderr
    assert res.returncode in (0, 1, 2) and "Traceback" not in output, output[-3000:]
    return json.loads((work / "reports" / "latest" / "summary.json").read_text())


def test_every_check_passes_on_what_it_saw_or_says_what_it_could_not_see(readable_copy, importable_by_others):
    summary = _run_as_user(readable_copy, importable_by_others)
    assert len(summary["checks"]) > 50
    for c in summary["checks"]:
        said = " ".join(str(c.get(k) or "") for k in ("message", "measured", "warning")).lower()
        if c["outcome"] == "passed":
            assert c["measured"], c  # a pass names its evidence
        else:  # a failure here is the sandbox being healthy but hidden: the message must say what was hidden
            # SVC-12 and MON-02 find no earlier runs in a fresh report directory: a history it cannot have yet,
            # said as a skip
            assert any(w in said for w in COULD_NOT_SEE) or c["id"] in ("SVC-05", "BK-07") or (
                c["id"] in ("SVC-12", "MON-02") and c["outcome"] == "skipped"), c
    by_id = {}
    for c in summary["checks"]:
        by_id.setdefault(c["id"], []).append(c)
    # the sandbox's servers run as root and postgres: their sockets' owners are hidden from nobody. A service is
    # then identified by what nobody can read (the socket's user, the port in a command line), named as that
    # fallback and warned; the database server by asking it (a pg_monitor role), which needs no warning
    sys05 = by_id["SYS-05"][0]  # the kernel log is 0640, as on a real host: could not measure, said, not passed
    assert sys05["outcome"] == "error" and "cannot read" in sys05["message"], sys05
    for c in by_id["SVC-03"]:
        assert c["outcome"] == "passed", c
        assert f"not visible to user {USER}" in c["warning"] and "identified without seeing" in c["measured"], c
    for c in by_id["DB-02"]:
        assert c["outcome"] == "passed" and "identified by asking it" in c["measured"], c
    for c in by_id["SVC-11"]:  # from the process so identified: ss shows nobody no owner
        assert c["outcome"] == "passed", c


# --------------------------------------------------------------------------- identity with a monitoring user's grants
IDENTITY = ("--", "-k", "process_is_running or postgresql_server or service_memory")


@pytest.fixture
def decoys():
    """Start impostors: a process of `user` whose command line is `argv0 ...` (sleep under another name), as
    a stray worker or a copy of a server left behind looks in `ps`. Each is ended when the test ends."""
    started: list[subprocess.Popen] = []

    def start(user: str, argv0: str) -> int:
        proc = subprocess.Popen([argv0, "600"], executable="/bin/sleep", user=user, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(proc)
        return proc.pid

    yield start
    for proc in started:
        proc.kill()
        proc.wait(timeout=10)


def _identity_profile(work: Path, auth_pattern: str | None, db_pattern: str | None) -> None:
    data = yaml.safe_load((work / "profile.yaml").read_text())
    keep_hosts(data, lambda h: h["name"] == "app-1")
    for s in data["services"]:
        if s["name"] == "auth" and auth_pattern:
            s["process"] = auth_pattern
    if db_pattern:
        data["databases"][0]["process"] = db_pattern
    (work / "profile.yaml").write_text(yaml.safe_dump(data))


def _checks(summary: dict, check_id: str) -> dict[str, dict]:
    return {c["target"]: c for c in summary["checks"] if c["id"] == check_id}


def test_identity_as_a_monitoring_user_judges_the_right_server_and_service_beside_decoys(
        healthy_sandbox, readable_copy, importable_by_others, decoys):
    """As nobody, with a pg_monitor role: the sandbox's replica (a second PostgreSQL cluster) and two impostors
    matching the patterns run beside the real servers. DB-02 names the primary's postmaster (asked: its data
    directory, its session's parent, its start time), SVC-03 the auth service's uvicorn (the socket's user and
    the port in its command line), SVC-11 measures that process's tree: none of them judges a decoy."""
    sb = healthy_sandbox
    state = json.loads((sb.dir / "state.json").read_text())["components"]
    primary = state["postgres"]["processes"]["primary"]["pid"]
    auth = state["services"]["processes"]["auth"]["pid"]
    pg_port, auth_port = 5432 + sb.port_offset, 8016 + sb.port_offset
    # a copy of a postmaster's command line naming the primary's port, of the user that owns its socket; a stray
    # uvicorn naming the auth port, of another user
    pg_decoy = decoys(state["postgres"]["user"], f"/usr/lib/postgresql/bin/postgres -D /tmp/acgs-decoy -p {pg_port}")
    svc_decoy = decoys("daemon", f"python -m uvicorn --factory acgs_verify.sandbox.service_app:auth --port {auth_port}")
    _identity_profile(readable_copy, None, "postgres")  # every cluster and the decoy match /postgres/
    summary = _run_as_user(readable_copy, importable_by_others, *IDENTITY)

    db = _checks(summary, "DB-02")["primary@app-1"]
    assert db["outcome"] == "passed" and db["value"] == [primary], db
    assert "identified by asking it" in db["measured"] and "-D is the data_directory" in db["measured"], db
    assert "/primary" in db["measured"] and str(pg_decoy) not in db["measured"], db
    svc = _checks(summary, "SVC-03")["auth@app-1"]
    assert svc["outcome"] == "passed" and svc["value"] == [auth], svc
    assert f"pid {auth} " in svc["measured"] and "the port" in svc["warning"], svc
    mem = _checks(summary, "SVC-11")
    assert len(mem) == 6 and all(c["outcome"] == "passed" for c in mem.values()), mem
    assert str(auth) in mem["auth@app-1"]["measured"] and str(svc_decoy) not in mem["auth@app-1"]["measured"]

    # the patterns now match only the decoys: each check fails, naming what it identified and the impostor
    _identity_profile(readable_copy, r"service_app:auth --port \d+ 600", r"-D /tmp/acgs-decoy")
    summary = _run_as_user(readable_copy, importable_by_others, *IDENTITY)
    db = _checks(summary, "DB-02")["primary@app-1"]
    assert db["outcome"] == "failed" and db["value"] == [primary, pg_decoy], db
    assert "does not match" in db["message"] and f"pid {primary} " in db["message"], db
    svc = _checks(summary, "SVC-03")["auth@app-1"]
    assert svc["outcome"] == "failed" and svc["value"] == [svc_decoy], svc
    assert "no process of user root matches" in svc["message"] and f"pid {svc_decoy} " in svc["message"], svc
