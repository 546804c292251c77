"""The host layer against a real sshd on 127.0.0.3: ssh (multiplexed), paramiko and ansible backends, strict host
keys, bastions, hosts that are down; and the system and security probes against the machine they run on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from acgs_verify.errors import ProbeError
from acgs_verify.hosts.pool import HostPool
from acgs_verify.probes import security, system
from acgs_verify.probes.logs import unresolved_critical_alerts
from acgs_verify.probes.processes import port_owners, processes
from acgs_verify.probes.units import uses_systemd
from acgs_verify.profile import Host, load_profile
from acgs_verify.results import CheckResult, RunResult
from tests.hostile import accepted
from tests.servers import closed_port, lone_sshd, silent_listener

pytestmark = pytest.mark.skipif(shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists(),
                                reason="needs openssh-server (.ci/run installs it)")
ADDRESS = "127.0.0.3"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real sshd on 127.0.0.3 with its own host key, user key and known_hosts (the sandbox's component)."""
    with lone_sshd(tmp_path_factory.mktemp("sshd"), ADDRESS) as (sb, host):
        yield sb, Host.model_validate(host)


@pytest.fixture
def pool():
    p = HostPool(connect_timeout=3)
    yield p
    p.close()


def _meminfo_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    raise AssertionError("no MemTotal")


def test_ssh_backend_reads_this_machine_through_one_multiplexed_connection(sshd, pool):
    _, host = sshd
    snap = system.snapshot(pool, host)
    assert snap.memory_total_kib == _meminfo_total()  # the same kernel, seen over ssh
    assert abs(snap.load_1m - os.getloadavg()[0]) < 5 and 0 <= snap.cpu_percent <= 100
    disk = snap.disks["/"]
    st = os.statvfs("/")
    assert disk.size_kib == st.f_blocks * st.f_frsize // 1024
    assert any("sshd" in args for _, args in processes(pool, host))
    config = next(Path(pool.backends.ssh_dir).glob("*.config"))
    check = subprocess.run(["ssh", "-F", str(config), "-O", "check", ADDRESS], capture_output=True, text=True)
    assert check.returncode == 0 and "Master running" in check.stderr  # later commands ride this connection
    user = pool.get(host).check_output("id -un; echo $HOME")
    assert user.splitlines()[1].endswith("/ssh/home")  # an empty home: no shell rc file per command


def test_pool_close_ends_the_control_master(sshd):
    _, host = sshd
    p = HostPool(connect_timeout=3)
    p.get(host)
    config = str(next(Path(p.backends.ssh_dir).glob("*.config")))
    p.close()
    check = subprocess.run(["ssh", "-F", config, "-O", "check", ADDRESS], capture_output=True, text=True)
    assert check.returncode != 0
    assert p.backends.ssh_dir is None


@pytest.mark.parametrize("backend", ["ssh", "paramiko"])
def test_wrong_host_key_is_refused(sshd, tmp_path, backend):
    sb, host = sshd
    bad = tmp_path / "known_hosts"
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    bad.write_text(f"[{ADDRESS}]:{host.port} {' '.join(other.with_suffix('.pub').read_text().split()[:2])}\n")
    p = HostPool(connect_timeout=3)
    try:
        with pytest.raises(ProbeError, match="host unreachable: .*(verification failed|does not match|BadHostKey)"):
            p.get(host.model_copy(update={"known_hosts": str(bad), "backend": backend}))
    finally:
        p.close()


@pytest.mark.parametrize("backend", ["ssh", "paramiko"])
def test_unknown_host_key_is_refused_unless_the_profile_turns_checking_off(sshd, tmp_path, backend):
    _, host = sshd
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    unknown = host.model_copy(update={"known_hosts": str(empty), "backend": backend})
    p = HostPool(connect_timeout=3)
    try:
        with pytest.raises(ProbeError, match="host unreachable"):
            p.get(unknown)
        lax = unknown.model_copy(update={"name": "lax", "strict_host_key_checking": False})
        assert p.get(lax).check_output("echo ok") == "ok"
    finally:
        p.close()


def test_paramiko_backend_gives_the_same_facts(sshd, pool):
    _, host = sshd
    para = host.model_copy(update={"name": "para", "backend": "paramiko"})
    a = security.accounts(pool, para, "/etc/passwd")
    b = security.accounts(pool, host, "/etc/passwd")
    assert a == b and "root" in a
    assert system.snapshot(pool, para).memory_total_kib == _meminfo_total()


def test_ansible_inventory_gives_hosts_roles_and_a_working_backend(sshd, tmp_path):
    _, host = sshd
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(
        f"[app]\nremote-app ansible_host={ADDRESS} ansible_port={host.port} "
        f"ansible_ssh_private_key_file={host.identity_file} "
        f"ansible_ssh_common_args='-o UserKnownHostsFile={host.known_hosts}'\n\n[db]\nremote-app\n")
    profile_path = tmp_path / "p.yaml"
    profile_path.write_text("inventory: inventory.ini\nthresholds: {connect_timeout_seconds: 3}\n")
    profile = load_profile(str(profile_path))
    (h,) = profile.hosts
    assert (h.name, h.address, h.port, h.backend, h.roles) == ("remote-app", ADDRESS, host.port, "ansible",
                                                              ["app", "db"])
    p = HostPool(connect_timeout=3, inventory=profile.inventory)
    try:
        assert system.snapshot(p, h).memory_total_kib == _meminfo_total()
        assert p.get(h).check_output("echo $HOME").endswith("/ssh/home")
    finally:
        p.close()


def test_a_broken_inventory_is_one_line_naming_the_field(tmp_path):
    from acgs_verify.profile import ProfileError

    (tmp_path / "p.yaml").write_text("inventory: missing.ini\n")
    with pytest.raises(ProfileError, match=r"p.yaml:1: inventory: cannot read inventory .*missing.ini"):
        load_profile(str(tmp_path / "p.yaml"))


def test_bastion_from_the_profiles_ssh_config_is_used(sshd, tmp_path):
    """ProxyJump in the profile's ssh_config: the host is reached through the bastion, and a dead bastion
    makes it unreachable (so the jump really is taken)."""
    _, host = sshd
    key, known = host.identity_file, host.known_hosts

    def via(bastion_port: int) -> Host:
        cfg = tmp_path / f"ssh_config_{bastion_port}"
        cfg.write_text(f"Host behind-bastion\n  HostName {ADDRESS}\n  ProxyJump bastion\n\n"
                       f"Host bastion\n  HostName {ADDRESS}\n  Port {bastion_port}\n  IdentityFile {key}\n"
                       f"  UserKnownHostsFile {known}\n")
        return host.model_copy(update={"name": f"behind-{bastion_port}", "address": "behind-bastion",
                                       "ssh_config": str(cfg)})

    p = HostPool(connect_timeout=3)
    try:
        assert p.get(via(host.port)).check_output("echo $SSH_CONNECTION").split()[2] == ADDRESS
    finally:
        p.close()
    p = HostPool(connect_timeout=3)  # a fresh pool: the first one's control master would be reused
    try:
        with closed_port(ADDRESS) as dead, pytest.raises(ProbeError, match="host unreachable"):
            p.get(via(dead))
    finally:
        p.close()


def test_a_host_that_never_answers_costs_one_connect_timeout(tmp_path):
    """A listener that never speaks SSH: the first check waits the connect timeout, the others fail at once."""
    with silent_listener(ADDRESS) as hole:
        host = Host(name="hole", address=ADDRESS, port=hole.getsockname()[1], backend="ssh",
                    known_hosts=str(tmp_path / "none"))
        p = HostPool(connect_timeout=1)
        try:
            with pytest.raises(ProbeError, match="host unreachable: .*[Tt]imed out"):
                system.snapshot(p, host)
            for probe in (processes, port_owners, uses_systemd):
                with pytest.raises(ProbeError, match="host unreachable"):
                    probe(p, host)
            assert accepted(hole) == 1  # one connection tried, so one timeout waited: the others failed at once
        finally:
            p.close()


# ----------------------------------------------------------------------------------- local probes


def test_snapshot_on_the_local_backend_matches_proc(pool):
    local = Host(name="here", mounts=["/", "/no/such/mount"])
    snap = system.snapshot(pool, local)
    assert snap.memory_total_kib == _meminfo_total()
    assert isinstance(snap.disks["/"], system.Disk)
    assert "No such file" in snap.disks["/no/such/mount"]


def test_parse_snapshot_computes_cpu_memory_and_disk():
    text = ("0.50 0.40 0.30 1/100 42\n@@acgs\ncpu  100 0 100 700 100 0 0 0 0 0\ncpu  150 0 150 750 150 0 0 0 0 0\n"
            "@@acgs\nMemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 250 kB\n"
            "@@acgs df /\nFilesystem 1024-blocks Used Available Capacity Mounted on\n/dev/sda1 1000 450 450 50% /\n")
    snap = system.parse_snapshot(text, ["/"])
    assert snap.load_1m == 0.5
    assert snap.cpu_percent == pytest.approx(50.0)  # 100 busy of 200 ticks; iowait counts as idle
    assert snap.memory_percent == pytest.approx(75.0)
    assert snap.disks["/"].percent == 50.0


def test_oom_kills_are_found_in_a_kernel_log_and_a_missing_log_says_so(pool, tmp_path):
    log = tmp_path / "kern.log"
    log.write_text("Jan 1 kernel: [1.0] ok\nJan 1 kernel: [2.0] Out of memory: Killed process 42 (python3)\n")
    conn = pool.get(Host(name="here"))
    killed = ["Jan 1 kernel: [2.0] Out of memory: Killed process 42 (python3)"]
    assert system.read_oom_kills(conn, str(log), 100) == killed
    assert system.read_oom_kills(conn, str(log), 1) == killed
    with pytest.raises(ProbeError, match="cannot read"):
        system.read_oom_kills(conn, str(tmp_path / "missing"), 100)


def test_world_writable_reports_the_first_20_and_the_count(pool, tmp_path):
    conn = pool.get(Host(name="here"))
    for i in range(25):
        f = tmp_path / f"f{i:02d}"
        f.write_text("x")
        f.chmod(0o666 if i % 5 else 0o644)
    found = security.read_world_writable(conn, str(tmp_path))
    assert found.count == 20 and len(found.first) == 20 and not found.timed_out
    for i in range(25, 40):
        (tmp_path / f"g{i}").write_text("x")
        (tmp_path / f"g{i}").chmod(0o646)
    found = security.read_world_writable(conn, str(tmp_path))
    assert found.count == 35 and len(found.first) == 20
    with pytest.raises(ProbeError, match="no such directory"):
        security.read_world_writable(conn, str(tmp_path / "nope"))


def test_file_stats_and_accounts_and_security_lines(pool, tmp_path):
    conn = pool.get(Host(name="here"))
    secret = tmp_path / "production.env"
    secret.write_text("X=1\n")
    secret.chmod(0o640)
    stats = security.read_file_stats(conn, [str(secret), str(tmp_path / "missing")])
    assert stats[str(secret)].mode == 0o640 and stats[str(tmp_path / "missing")] is None
    (tmp_path / "passwd").write_text("root:x:0:0::/root:/bin/bash\nacgs:x:1000:1000::/home/acgs:/bin/sh\n")
    assert security.read_accounts(conn, str(tmp_path / "passwd")) == ["root", "acgs"]
    (tmp_path / "a.log").write_text("ok\nFailed login for admin\nall fine\nSecurity BREACH suspected\n")
    (tmp_path / "b.txt").write_text("unauthorized\n")
    found = security.read_security_lines(conn, [f"{tmp_path}/*.log"], 100)
    assert found == [(str(tmp_path / "a.log"), "Failed login for admin"),
                     (str(tmp_path / "a.log"), "Security BREACH suspected")]


def test_unresolved_critical_alerts_in_the_window():
    from datetime import datetime, timedelta

    now = datetime(2025, 1, 12, 12, 0, 0)

    def line(minutes_ago, level, msg):
        return f"{now - timedelta(minutes=minutes_ago):%Y-%m-%d %H:%M:%S},000 - acgs.alerts - {level} - {msg}"

    lines = [line(30, "CRITICAL", "[ALERT-1] old"), line(10, "CRITICAL", "[ALERT-2] disk full"),
             line(9, "INFO", "[ALERT-2] resolved: cleaned"), line(5, "CRITICAL", "[ALERT-3] error rate"),
             line(4, "WARNING", "[ALERT-4] latency"),
             json.dumps({"timestamp": (now - timedelta(minutes=1)).isoformat(), "severity": "critical",
                         "alert_id": "ALERT-5", "message": "x"})]
    assert [a.id for a in unresolved_critical_alerts(lines, 15, now=now)] == ["ALERT-3", "ALERT-5"]
    assert unresolved_critical_alerts(lines, 15, now=now + timedelta(hours=1)) == []


def test_run_result_lists_hosts_with_their_counts():
    def c(target, host, outcome):
        return CheckResult(nodeid=f"{target}{outcome}", id="SYS-01", section="system", severity="P2", title="t",
                           target=target, outcome=outcome, host=host)

    result = RunResult(run_id="r", profile="p", gate="all", started="now", checks=[
        c("app-1", "app-1", "passed"), c("ops-1", "ops-1", "failed"), c("ops-1:/", "ops-1", "passed"),
        c("primary", None, "failed"), c("x@app-1", "app-1", "skipped"), c("ops-1:/var", "ops-1", "error")])
    # failed (measured, and wrong) and error (could not measure) counted apart
    assert result.hosts == {
        "app-1": {"checks": 2, "passed": 1, "failed": 0, "error": 0, "skipped": 1, "interrupted": 0},
        "ops-1": {"checks": 3, "passed": 1, "failed": 1, "error": 1, "skipped": 0, "interrupted": 0}}
    again = RunResult.from_dict(yaml.safe_load(yaml.safe_dump(result.as_dict())))
    assert again.hosts == result.hosts and again.as_dict()["hosts"] == result.as_dict()["hosts"]


def test_parallel_workers_group_checks_by_host():
    from acgs_verify.profile import Profile
    from acgs_verify.scheduling import host_groups, scope_of

    profile = Profile.model_validate({
        "hosts": [{"name": "app-1", "roles": ["app", "db"]}, {"name": "ops-1", "address": "127.0.0.2",
                                                               "backend": "ssh", "roles": ["ops"]}],
        "services": [{"name": "auth", "port": 8016}], "security": {"keys": [{"name": "app", "path": "/k"}]},
        "databases": [{"name": "primary", "dsn": "postgresql://acgs@db/acgs"}]})
    groups = host_groups(profile)
    scopes = {n: scope_of(f"checks/test_x.py::test_y[{n}]", groups)
              for n in ("app-1", "ops-1", "ops-1:/", "auth@app-1", "app@app-1", "primary@app-1", "primary")}
    assert scopes == {"app-1": "host:app-1", "ops-1": "host:ops-1", "ops-1:/": "host:ops-1",
                      "auth@app-1": "host:app-1", "app@app-1": "host:app-1", "primary@app-1": "host:app-1",
                      "primary": None}
