"""Backups, certificates and policies read on the host the profile puts them, through its backend: the sandbox's ssh
host ops-1 carries its own backup root, certificate and policies (DIR/hosts/ops-1/...), every backup, certificate-file
and policy fault has an ops-1 variant, and each is caught on `...@ops-1` over ssh and over paramiko. A file the
profile puts on another host is never read from the checker's own disk: the same path holding other content here
does not change the verdict."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from acgs_verify.sandbox.components.sshd import sshd_binary
from acgs_verify.sandbox.constants import OPS_HOST, OPS_TREE
from tests.conftest import SHARED_MACHINE, run_cli
from tests.fault_runs import FaultBatches
from tests.test_run_backup_faults import DRILL, drill_databases

pytestmark = pytest.mark.skipif(sshd_binary() is None, reason="needs openssh-server (.ci/run installs it)")
BACKENDS = ("ssh", "paramiko")
LOC, LATEST = f"backups@{OPS_HOST}", f"backups/latest@{OPS_HOST}"
POLICIES = f"policies@{OPS_HOST}"
ONLY = ("--", "-k", "BK or TLS-01 or policy_file")


def ops_cert(sandbox) -> str:
    return f"{sandbox.dir / OPS_TREE}/etc/ssl/acgs/cert.pem@{OPS_HOST}"


# fault on ops-1 -> the (ID, target) pairs that must fail, and nothing else
FAULTS = {
    f"backup-stale:{OPS_HOST}": lambda sb: {("BK-01", LOC)},
    f"backup-missing:database.sql.gz@{OPS_HOST}": lambda sb: {("BK-02", LATEST), ("BK-04", LATEST),
                                                              ("BK-06", LATEST), ("BK-07", LATEST)},
    f"backup-missing:config.tar.gz@{OPS_HOST}": lambda sb: {("BK-02", LATEST)},
    f"backup-truncated:{OPS_HOST}": lambda sb: {("BK-03", LATEST)},
    f"backup-corrupt:{OPS_HOST}": lambda sb: {("BK-03", LATEST)},
    f"dump-incomplete:{OPS_HOST}": lambda sb: {("BK-04", LATEST)},
    f"backup-shrunk:{OPS_HOST}": lambda sb: {("BK-06", LATEST)},
    f"backup-retention-old:{OPS_HOST}": lambda sb: {("BK-05", LOC)},
    f"backup-too-few:{OPS_HOST}": lambda sb: {("BK-05", LOC)},
    f"restore-broken:{OPS_HOST}": lambda sb: {("BK-07", LATEST)},
    f"cert-expiring:{OPS_HOST}": lambda sb: {("TLS-01", ops_cert(sb))},
    f"cert-expired:{OPS_HOST}": lambda sb: {("TLS-01", ops_cert(sb))},
    f"policy-invalid:{OPS_HOST}": lambda sb: {("CC-03", POLICIES)},
    f"policy-wrong-hash:{OPS_HOST}": lambda sb: {("CC-03", POLICIES)},
}
# what the failure must show, read from the file on ops-1
EVIDENCE = {
    f"backup-stale:{OPS_HOST}": ("BK-01", (r"written 49\.\d h ago",)),
    # read by the host's own gzip, never copied here: its words, and the path taken
    f"backup-truncated:{OPS_HOST}": ("BK-03", ("application.tar.gz: gzip -t failed .*unexpected end of file",
                                               f"verified on {OPS_HOST} with gzip -t")),
    f"dump-incomplete:{OPS_HOST}": ("BK-04", ("no '-- PostgreSQL database dump complete' at the end",
                                              f"verified on {OPS_HOST} with gzip -d")),
    f"cert-expired:{OPS_HOST}": ("TLS-01", (r"-\d+\.\d days left",)),
    f"policy-invalid:{OPS_HOST}": ("CC-03", ("decision_rules.yaml: yaml: YAML syntax error at line",)),
    f"policy-wrong-hash:{OPS_HOST}": ("CC-03", ("data_access.rego: rego: .*badc0ffee0ddf00d",)),
}
# faults on different checks share a run (tests/fault_runs.py); policy faults fail one pair (CC-03 per host), so
# each has a batch of its own among the others
GROUPS = [
    (f"backup-stale:{OPS_HOST}", f"restore-broken:{OPS_HOST}", f"cert-expiring:{OPS_HOST}",
     f"policy-invalid:{OPS_HOST}"),
    (f"backup-missing:database.sql.gz@{OPS_HOST}", f"cert-expired:{OPS_HOST}", f"policy-wrong-hash:{OPS_HOST}",
     f"backup-truncated:{OPS_HOST}", f"backup-retention-old:{OPS_HOST}"),
    (f"dump-incomplete:{OPS_HOST}", f"backup-corrupt:{OPS_HOST}", f"backup-too-few:{OPS_HOST}",
     f"backup-missing:config.tar.gz@{OPS_HOST}"),
    (f"backup-shrunk:{OPS_HOST}",),
]
BATCHES = {b: FaultBatches(GROUPS, FAULTS, expected=lambda fault, sandbox: FAULTS[fault](sandbox))
           for b in BACKENDS}


def ops_profile(sandbox, tmp_path: Path, backend: str, **files: str) -> Path:
    """The sandbox's profile with backups, policies and a certificate on ops-1, reached over `backend`."""
    data = yaml.safe_load(Path(sandbox.profile_path).read_text())
    hosts = [dict(h, backend=backend) if h["name"] == OPS_HOST else h for h in data["hosts"]]
    ops = sandbox.dir / OPS_TREE
    profile = tmp_path / f"ops-{backend}.yaml"
    profile.write_text(yaml.safe_dump({
        "extends": str(sandbox.profile_path), "name": f"ops-{backend}", "hosts": hosts,
        "paths": {"backups": files.get("backups", str(ops / "var/backups/acgs")),
                  "policies": files.get("policies", str(ops / "home/acgs/ACGS/config/policies"))},
        "backups": {"host": OPS_HOST}, "policies": {"format": "auto", "hosts": [OPS_HOST]},
        "certificates": [{"path": files.get("certificate", str(ops / "etc/ssl/acgs/cert.pem")), "host": OPS_HOST}],
    }))
    return profile


def run(profile: Path, tmp_path: Path, *extra: str):
    reports = tmp_path / f"reports-{time.monotonic_ns()}"
    res = run_cli("run", "--profile", str(profile), "--report-dir", str(reports), *SHARED_MACHINE, *extra)
    path = reports / "latest" / "summary.json"
    return res, json.loads(path.read_text()) if path.exists() else None


def checks(summary) -> dict[tuple[str, str], dict]:
    return {(c["id"], c["target"]): c for c in summary["checks"]}


@pytest.mark.parametrize("backend", BACKENDS)
def test_ops1_backups_certificate_and_policies_pass_read_over_its_backend(healthy_sandbox, tmp_path, backend):
    res, summary = run(ops_profile(healthy_sandbox, tmp_path, backend), tmp_path, *DRILL, *ONLY)
    by = checks(summary)
    want = {(f"BK-0{i}", LOC if i in (1, 5) else LATEST) for i in range(1, 8)} | {
        ("TLS-01", ops_cert(healthy_sandbox)), ("CC-03", POLICIES)}
    assert want == set(by), sorted(by)
    assert {k: c["outcome"] for k, c in by.items()} == dict.fromkeys(want, "passed"), res.stdout[-3000:]
    assert res.returncode == 0
    assert "10 backup folders" in by[("BK-01", LOC)]["measured"]
    assert "6 policy files" in by[("CC-03", POLICIES)]["measured"]
    assert "restored into" in by[("BK-07", LATEST)]["measured"]
    # each archive read where it is: by the host's gzip, the drill's dump streamed from it, none copied here
    assert re.search(rf"application\.tar\.gz: \d+ tar members, [^;]* read to the end \(verified on {OPS_HOST} "
                     r"with gzip -t and tar -tzf\)", by[("BK-03", LATEST)]["measured"])
    assert f"(verified on {OPS_HOST} with gzip -d)" in by[("BK-04", LATEST)]["measured"]
    assert re.search(rf"database\.sql\.gz \(streamed [\d.]+ (MiB|bytes) from {OPS_HOST}, not copied\) restored",
                     by[("BK-07", LATEST)]["measured"]), by[("BK-07", LATEST)]["measured"]
    assert summary["hosts"][OPS_HOST]["passed"] == len(want)
    assert drill_databases(healthy_sandbox) == []


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fault", FAULTS)
def test_each_ops1_fault_fails_exactly_its_checks_on_ops1(healthy_sandbox, tmp_path, backend, fault):
    profile = ops_profile(healthy_sandbox, tmp_path, backend)
    batch = BATCHES[backend].run(healthy_sandbox, fault, lambda *args: run(profile, tmp_path, *DRILL, *args, *ONLY)[0])
    batch.assert_fails_exactly(fault)
    if fault in EVIDENCE:
        check_id, words = EVIDENCE[fault]
        check = batch.check(check_id, fault)
        for word in words:
            assert re.search(word, check["message"]), check["message"]
    assert healthy_sandbox.faults() == []


def test_default_sandbox_run_reads_ops1_certificate_over_ssh(healthy_sandbox, tmp_path):
    healthy_sandbox.break_fault(f"cert-expired:{OPS_HOST}")
    res, summary = run(Path(healthy_sandbox.profile_path), tmp_path, "--", "-k", "TLS-01")
    failed = {k for k, c in checks(summary).items() if c["outcome"] in ("failed", "error")}
    assert failed == {("TLS-01", ops_cert(healthy_sandbox))}, res.stdout[-2000:]  # app-1's own is still good


# ------------------------------------------------------------------ the checker's own disk is never read


@contextlib.contextmanager
def other_view(path: Path, replacement: Path, tmp_path: Path):
    """A host `other-1`: an sshd on 127.0.0.4 (keys, config and profile entry from the sandbox's component) run in a
    mount namespace of its own, where `path` shows `replacement`'s content: the same path, other bytes, on the
    host the profile names. Needs root (unshare -m)."""
    from tests.servers import lone_sshd
    from tests.waiting import wait_for

    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("needs unshare -m (root) for an sshd that sees other files at the same paths")
    with lone_sshd(tmp_path / "other", "127.0.0.4", "other-1") as (sb, host):
        sb.break_fault("host-down")  # its own sshd stops; the same config runs below, in the namespace
        config = tmp_path / "other" / "ssh" / "sshd_config"
        proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             'mount --bind "$0" "$1" && exec "$2" -D -e -f "$3"', str(replacement), str(path), sshd_binary(),
             str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            def answers() -> bool:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.4", host["port"]), 1) as s:
                    return s.recv(4).startswith(b"SSH-")
                return False
            wait_for("sshd in its own mount namespace", lambda: proc.poll() is None and answers(), 20)
            yield host
        finally:
            proc.terminate()
            proc.wait(10)


def test_a_file_on_another_host_is_read_there_not_from_the_checkers_disk(healthy_sandbox, tmp_path):
    # here: ops-1's tree as the sandbox made it, every file good; on other-1: the same paths, a certificate that
    # has expired, a policy with another hash, and backups two days old
    ops, theirs = healthy_sandbox.dir / OPS_TREE, tmp_path / "theirs"
    for fault in ("cert-expired", "policy-wrong-hash", "backup-stale"):
        healthy_sandbox.break_fault(f"{fault}:{OPS_HOST}")
    shutil.copytree(ops, theirs, symlinks=True)  # the broken tree, for other-1
    for spec in healthy_sandbox.faults():
        healthy_sandbox.heal_fault(spec)  # the checker's copy: healthy again
    with other_view(ops, theirs, tmp_path) as host:
        data = yaml.safe_load(Path(healthy_sandbox.profile_path).read_text())
        profile = tmp_path / "other.yaml"
        profile.write_text(yaml.safe_dump({
            "extends": str(healthy_sandbox.profile_path), "hosts": [*data["hosts"], dict(host, roles=["backup"])],
            "paths": {"backups": str(ops / "var/backups/acgs"),
                      "policies": str(ops / "home/acgs/ACGS/config/policies")},
            "backups": {"host": "other-1"}, "policies": {"hosts": ["other-1"]},
            "certificates": [{"path": str(ops / "etc/ssl/acgs/cert.pem"), "host": "other-1"}]}))
        res, summary = run(profile, tmp_path, "--", "-k", "BK-01 or TLS-01 or policy_file")
    by = checks(summary)
    outcomes = {k: c["outcome"] for k, c in by.items()}
    assert outcomes == {("BK-01", "backups@other-1"): "failed", ("CC-03", "policies@other-1"): "failed",
                        ("TLS-01", f"{ops}/etc/ssl/acgs/cert.pem@other-1"): "failed"}, res.stdout[-3000:]
    assert "badc0ffee0ddf00d" in by[("CC-03", "policies@other-1")]["message"]


# ------------------------------------------------------------------ the same bounds on every host


def test_a_remote_read_refuses_what_a_local_read_refuses_in_bounded_time(tmp_path, monkeypatch):
    """The command a remote host runs (here through this machine's sh) gives bounded.py's reasons: no FIFO, device,
    directory or (when not asked to follow) symlink is read; nothing past the cap; a missing file says so."""
    from acgs_verify.probes.bounded import NotReadable
    from acgs_verify.probes.hostfiles import Files, _sh

    files = Files("remote-like", _sh)  # not read_local: the remote path, on this machine
    os.mkfifo(tmp_path / "fifo.pem")
    (tmp_path / "zero.pem").symlink_to("/dev/zero")
    (tmp_path / "big.pem").write_bytes(b"x" * 2048)
    (tmp_path / "ok.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "link.yaml").symlink_to(tmp_path / "ok.pem")
    (tmp_path / "-x.pem").write_bytes(b"dash")  # a name that looks like an option is a file
    cases = {"fifo.pem": "a FIFO, not a regular file", "zero.pem": "a character device, not a regular file",
             "big.pem": "larger than 1 KiB (2 KiB)", "nope.pem": "No such file or directory",
             ".": "a directory, not a regular file"}
    started = time.monotonic()
    for name, reason in cases.items():
        with pytest.raises(NotReadable) as caught:
            files.read(str(tmp_path / name), 1024)
        assert caught.value.reason == reason, (name, str(caught.value))
    with pytest.raises(NotReadable, match="a symlink, not followed"):
        files.read(str(tmp_path / "link.yaml"), 1024, follow=False)
    assert files.read(str(tmp_path / "link.yaml"), 1024) == b"-----BEGIN CERTIFICATE-----\n"
    monkeypatch.chdir(tmp_path)
    assert files.read("-x.pem", 10) == b"dash"
    assert time.monotonic() - started < 10


def test_a_remote_listing_sees_names_kinds_and_links_as_they_are(tmp_path):
    from acgs_verify.probes.hostfiles import Files, _sh

    (tmp_path / "20260101").mkdir()
    (tmp_path / "20260101" / "a b\nc.gz").write_bytes(b"12345")  # any byte but NUL and / in a name
    (tmp_path / "latest").symlink_to("20260101")
    (tmp_path / "gone").symlink_to("nowhere")
    tree = Files("remote-like", _sh).tree(str(tmp_path), 2)
    assert tree.entry("20260101/a b\nc.gz").size == 5 and tree.entry("20260101").kind == "d"
    assert tree.entry("latest").kind == "l" and tree.links["latest"] == str(tmp_path.resolve() / "20260101")
    assert tree.entry("gone").target_kind == "N"
    assert [e.name for e in tree.children()] == ["20260101", "gone", "latest"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_hostile_files_on_ops1_are_one_clear_failure_each(healthy_sandbox, tmp_path, backend):
    fifo, big, policies = tmp_path / "cert-fifo.pem", tmp_path / "big.pem", tmp_path / "policies"
    os.mkfifo(fifo)
    big.write_bytes(b"x" * (2 << 20))
    policies.mkdir()
    (policies / "shadow.yaml").symlink_to("/etc/shadow")  # found by walking: not followed, never read
    profile = ops_profile(healthy_sandbox, tmp_path, backend, policies=str(policies))
    data = yaml.safe_load(profile.read_text())
    data["certificates"] = [{"path": p, "host": OPS_HOST} for p in (str(fifo), "/dev/zero", str(big))]
    profile.write_text(yaml.safe_dump(data))
    started = time.monotonic()
    res, summary = run(profile, tmp_path, "--", "-k", "TLS-01 or policy_file")
    assert time.monotonic() - started < 60
    by = {k: c["message"] for k, c in checks(summary).items() if c["outcome"] in ("failed", "error")}
    assert set(by) == {("TLS-01", f"{fifo}@{OPS_HOST}"), ("TLS-01", f"/dev/zero@{OPS_HOST}"),
                       ("TLS-01", f"{big}@{OPS_HOST}"), ("CC-03", POLICIES)}, res.stdout[-3000:]
    assert "a FIFO, not a regular file" in by[("TLS-01", f"{fifo}@{OPS_HOST}")]
    assert "a character device, not a regular file" in by[("TLS-01", f"/dev/zero@{OPS_HOST}")]
    assert "larger than 1 MiB (2 MiB)" in by[("TLS-01", f"{big}@{OPS_HOST}")]
    assert "a symlink, not followed" in by[("CC-03", POLICIES)]


# ------------------------------------------------------------------ where the profile puts each file


def test_each_file_check_runs_on_the_host_the_profile_puts_its_file(tmp_path):
    from acgs_verify.profile import ProfileError, load_profile
    from acgs_verify.targets import TARGET_KINDS

    def ids(text: str) -> dict[str, list[str]]:
        path = tmp_path / "p.yaml"
        path.write_text(text)
        p = load_profile(str(path), resolve_secrets=False)
        return {k: [t.id for t in TARGET_KINDS[k](p)] for k in ("backup_location", "certificate", "policies")}

    hosts = ("hosts: [{name: app-1, roles: [app]}, {name: app-2, roles: [app]}, {name: db-1, roles: [db]},\n"
             "        {name: proxy-1, roles: [proxy]}]\n")
    assert ids(hosts + "certificates: [/c.pem, {path: /p.pem, host: proxy-1}]\n") == {
        "backup_location": ["backups@db-1"], "certificate": ["/c.pem@app-1", "/c.pem@app-2", "/p.pem@proxy-1"],
        "policies": ["policies@app-1", "policies@app-2"]}
    assert ids(hosts + "backups: {host: proxy-1}\npolicies: {hosts: [db]}\ncertificates: [/c.pem]\n") == {
        "backup_location": ["backups@proxy-1"], "certificate": ["/c.pem@app-1", "/c.pem@app-2"],
        "policies": ["policies@db-1"]}
    # no hosts named: this machine, for every file
    assert ids("certificates: [/c.pem]\n") == {"backup_location": ["backups@localhost"],
                                               "certificate": ["/c.pem@localhost"], "policies": ["policies@localhost"]}
    with pytest.raises(ProfileError, match="backups.host: 'db-9' names no host of this profile"):
        ids(hosts + "backups: {host: db-9}\n")
    with pytest.raises(ProfileError, match=r"certificates\[0\].host: 'nope' names no host"):
        ids(hosts + "certificates: [{path: /c.pem, host: nope}]\n")
