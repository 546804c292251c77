"""Evidence is copied, never followed (issue 21, item 5): the security-incident gate's copy of the logs refuses a
symlink (to a shadow-like file, to /etc/shadow, to a secret the profile names), a FIFO, and a secret reached by
another name (a hard link, a symlinked directory, the profile naming it through a link), on a local host and over
ssh; a host named `..` writes nothing; copies are 0600 in 0700 folders whatever the umask; every refusal is one line
saying which file and why; and no byte of any secret is written anywhere."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from acgs_verify.evidence import EvidenceFolder, preserve
from acgs_verify.profile import Host, load_profile
from acgs_verify.sandbox.components.sshd import sshd_binary
from tests.conftest import run_cli
from tests.servers import lone_sshd

HAS_SSHD = sshd_binary() is not None
SSH_ADDRESS = "127.0.0.3"  # the address tests/test_host_layer.py's sshd uses too; the port offset keeps them apart
# what each secret holds: no byte of any of these may appear under evidence/ (or anywhere a run writes)
SHADOW_LIKE = "root:$6$SHADOW-LIKE-c0ffee:19000:0:99999:7:::"
ENV_SECRET = "ACGS_DB_PASSWORD=ENV-SECRET-7f3a91"
KEY_SECRET = "KEY-SECRET-91c2d4"
PW_SECRET = "PW-SECRET-55d1e8"
SECRETS = (SHADOW_LIKE, ENV_SECRET, KEY_SECRET, PW_SECRET)
ORDINARY = "2026-12-07 10:00:00,000 - auth - INFO - ordinary line"
MARKER = "evidence-marker"
ODD = f"it's $(touch {MARKER}) `touch {MARKER}`; -x.log"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real sshd on loopback (the sandbox's component alone), logging in the user running the tests."""
    if not HAS_SSHD:
        yield None
        return
    with lone_sshd(tmp_path_factory.mktemp("sshd"), SSH_ADDRESS) as (_, host):
        yield Host.model_validate(host)


def make_tree(root: Path) -> dict[str, Path]:
    """A host's files as an attacker who can write in the log directory leaves them."""
    (root / "logs").mkdir(parents=True)
    (root / "config").mkdir()
    env = root / "config" / "production.env"
    env.write_text(ENV_SECRET + "\n")
    key = root / "config" / "app.key"
    key.write_text(KEY_SECRET + "\n")
    pw = root / "pw"
    pw.write_text(PW_SECRET + "\n")
    shadow_like = root / "shadow"
    shadow_like.write_text(SHADOW_LIKE + "\n")
    for p in (env, key, pw, shadow_like):
        p.chmod(0o600)
    (root / "config" / "current.env").symlink_to("production.env")  # the profile names the secret through a link
    (root / "cfglink").symlink_to("config")  # a directory link: config/app.key by another path
    logs = root / "logs"
    (logs / "ok.log").write_text(ORDINARY + "\n")
    (root / "kern.log").write_text("kernel: ordinary\n")
    (logs / "x.log").symlink_to(shadow_like)
    (logs / "y.log").symlink_to(env)
    (logs / "s.log").symlink_to("/etc/shadow")  # the real name; never opened through the link
    os.link(env, logs / "h.log")  # a hard link: the secret itself under a log's name
    os.link(pw, logs / "p.log")
    os.mkfifo(logs / "f.log")  # opening it to read would block the copy forever
    # a name chosen to be code: it reaches the host's shell only as a quoted argument, and is copied like any log
    (logs / ODD).write_text(ORDINARY + "\n")
    return {"root": root, "env": env, "key": key, "pw": pw, "shadow": shadow_like}


def profile_text(root: Path, ssh: Host | None, extra_hosts: str = '  - {name: "..", roles: [app]}\n') -> str:
    hosts = "hosts:\n  - {name: here, roles: [app]}\n" + extra_hosts
    if ssh is not None:
        hosts += (f"  - {{name: remote-1, backend: ssh, address: {ssh.address}, port: {ssh.port}, roles: [app], "
                  f"identity_file: {ssh.identity_file}, known_hosts: {ssh.known_hosts}}}\n")
    return (hosts
            + f"services: [{{name: auth, port: 1, log: {root}/cfglink/app.key}}]\n"
            + f"databases: [{{name: primary, dsn: 'postgresql://acgs@127.0.0.1:1/acgs', password_file: {root}/pw}}]\n"
            + f"paths: {{logs: {root}/logs, kernel_log: {root}/kern.log, alerts_log: null, app_root: {root}}}\n"
            + f"security: {{secret_files: [{root}/config/current.env], "
            + f"keys: [{{name: app, path: {root}/config/app.key}}]}}\n")


def files_under(root: Path) -> set[str]:
    return {str(p) for p in root.rglob("*")}


def assert_no_secret_byte(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            for s in SECRETS:
                assert s.encode() not in data, f"{p} holds a secret"


def assert_private(evidence: Path) -> None:
    for p in [evidence, *evidence.rglob("*")]:
        mode = stat.S_IMODE(p.lstat().st_mode)
        assert not p.is_symlink(), p
        assert mode == (0o700 if p.is_dir() else 0o600), f"{p}: {oct(mode)}"


def refusal_lines(ev: dict, host: str) -> dict[str, str]:
    """{log name: why} of one host's refusals."""
    out = {}
    for line in ev["refused"]:
        assert "\n" not in line
        if line.startswith(f"{host}:"):
            path, _, why = line[len(host) + 1:].partition(": refused: ")
            out[Path(path).name] = why
    return out


@pytest.mark.parametrize("umask", [0o000, 0o277])
def test_symlinks_fifos_and_secrets_by_any_name_are_refused_on_local_and_ssh_hosts(sshd, tmp_path, umask):
    t = make_tree(tmp_path / "host")
    path = tmp_path / "p.yaml"
    path.write_text(profile_text(t["root"], sshd))
    profile = load_profile(str(path))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    before = files_under(tmp_path)
    old = os.umask(umask)  # the most open, then one that would leave mkdir's folders unwritable
    try:
        ev = preserve(profile, run_dir / "evidence", "run-1")
    finally:
        os.umask(old)
    evidence = run_dir / "evidence"
    new = files_under(tmp_path) - before
    assert new and all(p == str(evidence) or p.startswith(f"{evidence}/") for p in new), sorted(new)
    assert_no_secret_byte(tmp_path / "run")
    assert_private(evidence)
    check = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=evidence, capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    hosts = ["here", "remote-1"] if sshd is not None else ["here"]
    assert ev["hosts"] == sorted(hosts)
    for host in hosts:
        for name in ("ok.log", ODD):
            copy = evidence / host / str(t["root"] / "logs" / name).lstrip("/")
            assert copy.read_text() == ORDINARY + "\n", (host, name)
        why = refusal_lines(ev, host)
        root = t["root"]
        assert why["x.log"].startswith(f"a symlink (to {t['shadow']}): evidence never follows one"), why
        assert why["y.log"].startswith(f"a symlink (to {t['env']})"), why
        assert why["s.log"].startswith("a symlink (to /etc/shadow)"), why
        assert why["h.log"].startswith(f"it is the secret {t['env']} (security.secret_files[0])"), why
        assert why["p.log"].startswith(f"it is the secret {t['pw']} (databases.primary.password_file)"), why
        assert why["app.key"].startswith(f"it is the secret {t['key']} (security.keys[0].path)"), why
        assert why["f.log"].startswith("not a regular file (") and "fifo" in why["f.log"].lower(), why
        assert set(why) == {"x.log", "y.log", "s.log", "h.log", "p.log", "app.key", "f.log"}, why
        assert not (evidence / host / str(root / "logs" / "x.log").lstrip("/")).exists()
    assert any(line.startswith("host '..': its name cannot be a folder under evidence/") for line in ev["not_copied"])
    assert set(os.listdir(evidence)) == {*hosts, "MANIFEST", "SHA256SUMS"}
    # where a command on either host would run: here, and the ssh login's home (beside its key)
    homes = [tmp_path, Path.cwd(), Path.home()] + ([Path(sshd.identity_file).parent / "home"] if sshd else [])
    assert not [p for p in homes if (p / MARKER).exists()]
    manifest = (evidence / "MANIFEST").read_text()
    assert all(line in manifest for line in ev["refused"])


def test_the_gate_says_which_files_it_refused_and_writes_no_secret(tmp_path):
    """End to end: `run --gate security-incident`; each refusal is one note naming the file and why."""
    t = make_tree(tmp_path / "host")
    path = tmp_path / "p.yaml"
    path.write_text(profile_text(t["root"], None))
    reports = tmp_path / "r"
    res = run_cli("run", "--profile", str(path), "--report-dir", str(reports), "--gate", "security-incident")
    assert res.returncode in (1, 2), res.stdout + res.stderr
    run_dir = (reports / "latest").resolve()
    summary = json.loads((run_dir / "summary.json").read_text())
    notes = [n for n in summary["notes"] if n.startswith("evidence not copied: here:")]
    refused = {Path(n.split(": refused: ")[0].split(":", 2)[2]).name: n for n in notes if ": refused: " in n}
    assert set(refused) == {"x.log", "y.log", "s.log", "h.log", "p.log", "app.key", "f.log"}, notes
    assert summary["evidence"]["files"] >= 2 and summary["evidence"]["hosts"] == ["here"]
    assert any(n.startswith("evidence not copied: host '..'") for n in summary["notes"]), summary["notes"]
    assert_no_secret_byte(run_dir / "evidence")
    assert_private(run_dir / "evidence")
    for s in SECRETS:
        assert s not in res.stdout + res.stderr


def test_a_secret_named_by_its_real_path_is_refused_when_a_log_path_reaches_it_through_dot_dot(tmp_path):
    t = make_tree(tmp_path / "host")
    root = t["root"]
    path = tmp_path / "p.yaml"
    path.write_text(profile_text(root, None, extra_hosts="")
                    .replace(f"{root}/cfglink/app.key", f"{root}/logs/../cfglink/../config/./app.key"))
    ev = preserve(load_profile(str(path)), tmp_path / "evidence", "run-1")
    assert refusal_lines(ev, "here")["app.key"].startswith(f"it is the secret {t['key']} (security.keys[0].path)")
    assert_no_secret_byte(tmp_path / "evidence")


def test_an_evidence_folder_that_is_a_symlink_is_not_written_through(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "evidence").symlink_to(elsewhere)
    t = make_tree(tmp_path / "host")
    path = tmp_path / "p.yaml"
    path.write_text(profile_text(t["root"], None, extra_hosts=""))
    ev = preserve(load_profile(str(path)), run_dir / "evidence", "run-1")
    assert ev["files"] == 0 and ev["not_copied"][0].startswith("evidence/: cannot be made here")
    assert not list(elsewhere.iterdir())


def test_a_copy_is_never_written_through_a_link_inside_evidence(tmp_path):
    """The walk below evidence/ is by name with O_NOFOLLOW, and every path is proven to resolve under it."""
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = EvidenceFolder(tmp_path / "evidence")
    try:
        (tmp_path / "evidence" / "host").symlink_to(outside)
        with pytest.raises(OSError):
            folder.write("host/var/log/a.log", b"data")
        for rel in ("../a.log", "host/../../a.log", "./a.log", "", "a//b"):
            with pytest.raises(OSError):
                folder.write(rel, b"data")
        folder.write("h/x.log", b"data")
        with pytest.raises(FileExistsError):  # O_EXCL: never over something already there
            folder.write("h/x.log", b"other")
    finally:
        folder.close()
    assert not list(outside.iterdir()) and not (tmp_path / "a.log").exists()
    assert (tmp_path / "evidence" / "h" / "x.log").read_bytes() == b"data"
    shutil.rmtree(tmp_path / "evidence")
