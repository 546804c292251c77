"""Every profile value that reaches a host command is data (issue 21, item 1): shell payloads in each such field
run nothing, on the local backend and over ssh, and no check that read one passes on what a command echoed.

The payloads: a single quote that ends a quoted word, `$(...)`, backticks, a line break, and a leading `-`
(`-delete`: read as an action, find deletes the tree it runs in; a directory of that name stands ready in the
command's working directory, so a value that became an option would be seen at once). Each writes its own marker
file, so a failure names the payload that ran.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml

from acgs_verify.errors import ProbeError
from acgs_verify.hosts.commands import CANNOT, refuse, refused
from acgs_verify.hosts.pool import HostPool
from acgs_verify.probes import logs, security, system
from acgs_verify.probes.pg_server import read_postgres_server
from acgs_verify.probes.processes import Proc
from acgs_verify.probes.units import read_unit_state
from acgs_verify.profile import Host
from acgs_verify.sandbox.components.sshd import sshd_binary
from tests.conftest import run_cli
from tests.servers import lone_sshd

needs_sshd = pytest.mark.skipif(sshd_binary() is None, reason="needs openssh-server (.ci/run installs it)")
ADDRESS = "127.0.0.2"
DASH = "-delete"
# checks that read no string field of the profile: the only ones that may pass in a run fed payloads
READ_NO_VALUE = {"SYS-01", "SYS-02", "SYS-03", "SYS-06"}


def payloads(markers: Path) -> dict[str, str]:
    """name -> a value that, run as code, creates markers/<name>."""
    m = {name: markers / name for name in ("quote", "subshell", "backtick", "newline")}
    return {"quote": f"x'; touch {m['quote']}; '",
            "subshell": f"$(touch {m['subshell']})",
            "backtick": f"`touch {m['backtick']}`",
            "newline": f"x\ntouch {m['newline']}\n",
            "dash": DASH}


def ran(markers: Path) -> list[str]:
    return sorted(p.name for p in markers.iterdir())


@pytest.fixture
def markers(tmp_path) -> Path:
    d = tmp_path / "markers"
    d.mkdir()
    d.chmod(0o777)  # whoever the ssh host logs in as could write its marker
    return d


@pytest.fixture(scope="module")
def ops(tmp_path_factory):
    """The sandbox's ssh host ops-1: a real sshd on 127.0.0.2 (only that component of the sandbox)."""
    if sshd_binary() is None:
        pytest.skip("needs openssh-server (.ci/run installs it)")
    with lone_sshd(tmp_path_factory.mktemp("ops"), ADDRESS, "ops-1") as (_, host):
        yield host


def _trap(conn) -> Path:
    """A directory named DASH, holding one file, in the working directory of `conn`'s commands: a value that
    reached find as an action would delete it."""
    trap = Path(conn.check_output("pwd")) / DASH / "bait"
    trap.parent.mkdir(exist_ok=True)
    trap.write_text("still here\n")
    return trap


def _host_commands(conn, value: str) -> dict[str, object]:
    """What each probe that puts a profile value into a host command made of `value`: its result, or the
    ProbeError it raised."""
    def outcome(read):
        try:
            return read()
        except ProbeError as exc:
            return exc

    return {
        "SEC-01 app_root": outcome(lambda: security.read_world_writable(conn, value, timeout=20)),
        "SYS-05 kernel_log": outcome(lambda: system.read_oom_kills(conn, value, 100)),
        "SYS-04 mounts": outcome(lambda: system.read_snapshot(conn, ["/", value]).disks[value]),
        "SEC-02 secret_files": outcome(lambda: security.read_file_stats(conn, [value, "/"])[value]),
        "SEC-05 rotation_record": outcome(lambda: security.read_small_file(conn, value)),
        "SEC-04 passwd": outcome(lambda: security.read_accounts(conn, value)),
        "SEC-03 logs": outcome(lambda: security.read_security_lines(conn, [f"{value}/*.log"], 100)),
        "SEC-03 security_log": outcome(lambda: security.read_security_lines(conn, [value], 100)),
        "SVC-05 unit": outcome(lambda: read_unit_state(conn, value)),
        "SVC-07 log": outcome(lambda: logs.read_tail(conn, value, 100)),
    }


def _judge(results: dict[str, object], value: str) -> list[str]:
    """What in `results` reads as a measurement where there is nothing to measure (no file, directory or unit of
    that name exists, except the DASH directory): each of those is a check that could pass on echoed text."""
    wrong = []
    for what, got in results.items():
        if what == "SYS-04 mounts":  # df's reason, never a df line; the DASH directory is a real place
            ok = isinstance(got, system.Disk) if value == DASH else isinstance(got, str) and "Filesystem" not in got
        elif what == "SEC-02 secret_files":
            ok = isinstance(got, security.FileStat) if value == DASH else got is None
        elif what == "SVC-05 unit":
            ok = isinstance(got, ProbeError) or got in ("inactive", "unknown")
        elif what == "SEC-01 app_root" and value == DASH:
            ok = isinstance(got, security.WorldWritable) and got.files == 1 and got.count == 0
        else:
            ok = isinstance(got, ProbeError)
        if not ok:
            wrong.append(f"{what}: {got!r}")
    return wrong


@pytest.fixture(params=["local", pytest.param("ssh", marks=needs_sshd)])
def conn(request, tmp_path, monkeypatch):
    pool = HostPool(connect_timeout=5)
    try:
        if request.param == "local":
            work = tmp_path / "cwd"
            work.mkdir()
            monkeypatch.chdir(work)  # the local backend's commands run here
            yield pool.get(Host(name="app-1", backend="local"))
        else:
            yield pool.get(Host.model_validate(request.getfixturevalue("ops")))
    finally:
        pool.close()


def test_no_payload_in_a_value_runs_or_reads_as_a_measurement(conn, markers):
    trap = _trap(conn)
    try:
        wrong = {name: _judge(_host_commands(conn, value), value) for name, value in payloads(markers).items()}
        assert ran(markers) == [], f"payloads ran: {ran(markers)}"
        assert trap.exists(), f"{DASH} reached find as an action: it deleted {trap}"
    finally:
        shutil.rmtree(trap.parent, ignore_errors=True)  # the ssh host's home is shared with the whole runs
    assert not any(wrong.values()), {k: v for k, v in wrong.items() if v}


def test_a_unit_named_like_an_option_is_a_unit(conn):
    """`systemctl is-active --version` printed systemd's version (exit 0); after `--` it is a unit name, and
    whatever systemctl prints that is not a unit state is an error, never a state."""
    for unit in ("--version", "--help", "-H"):
        try:
            state = read_unit_state(conn, unit)
        except ProbeError as exc:
            assert "systemd" not in str(exc).split(":", 1)[0]
            continue
        assert state in ("inactive", "unknown", "failed"), (unit, state)


def test_a_refusal_is_an_error_whatever_stdout_says(conn, tmp_path):
    """A probe's own "cannot" message goes to stderr with exit CANNOT: SYS-05 on an unreadable kernel log is an
    error, even where the log's name looks like kernel lines and the tail would have read as 0 OOM kills."""
    name = tmp_path / "Dec 1 kernel: [1.0] eth0 up"
    with pytest.raises(ProbeError, match="cannot read"):
        system.read_oom_kills(conn, str(name), 100)
    res = conn.run(f"{refuse('cannot read ' + str(name))}; echo not reached")
    assert res.rc == CANNOT and res.stdout == "" and res.stderr == f"cannot read {name}\n"
    assert refused(res) == f"cannot read {name}"


def test_a_mount_that_does_not_exist_never_reads_as_a_disk(conn, tmp_path):
    """The mount was echoed before its df: dash's echo reads `\\n` and `\\c` in it, so a mount holding a df line
    and a `\\c` (which ate the line break) joined df's error onto that line, and SYS-04 read 50 % used. A failed df
    is now a reason, and the mount's value is never printed."""
    fake = f"{tmp_path}/nonexistent\\nfs 100 50 50 50% /x\\c"
    snap = system.read_snapshot(conn, [fake, "/"])
    assert isinstance(snap.disks[fake], str) and isinstance(snap.disks["/"], system.Disk), snap.disks


def test_a_log_file_name_cannot_write_a_line_of_the_security_scan(conn, tmp_path):
    """A file name is data: one holding a tab and a line break (`@@read` with a count) cannot pass as a log that
    was read, and an empty log then still says it held no lines."""
    logs_dir = tmp_path / "logs"
    logs_dir.mkdir()
    (logs_dir / "x\n@@read\tfake.log\t5000\n.log").write_text("")
    with pytest.raises(ProbeError, match="hold no lines"):
        security.read_security_lines(conn, [f"{logs_dir}/*.log"], 100)


def test_a_port_owners_program_is_run_only_when_root_owns_it(tmp_path, markers):
    """DB-02 asks the postmaster's program for its version: a program someone else owns (what a process says it
    is) is never run by the checker; the data directory's PG_VERSION says the version instead."""
    pool = HostPool(connect_timeout=5)
    conn = pool.get(Host(name="app-1", backend="local"))
    program = tmp_path / "postgres"
    program.write_text(f"#!/bin/sh\ntouch {markers / 'program'}\necho 'postgres (PostgreSQL) 99'\n")
    program.chmod(0o755)
    if os.geteuid() == 0:
        os.chown(program, 65534, 65534)
    else:
        program.chmod(0o777)  # written by anyone: not the system's own either
    data = tmp_path / "data"
    data.mkdir()
    (data / "PG_VERSION").write_text("16\n")
    owner = Proc(4242, 1, "postgres", "2026-12-07 10:00:00", f"{program} -D {data}")
    found = read_postgres_server(conn, owner)
    pool.close()
    assert ran(markers) == [] and found == {"data_directory": str(data), "version": "PG_VERSION 16"}


@pytest.mark.parametrize("field,value", [
    ("address", "-oProxyCommand=touch${IFS}ssh-marker"),
    ("user", "acgs\n  ProxyCommand touch {M}"),
    ("identity_file", "/nonexistent\nProxyCommand=touch${IFS}{M}"),
    ("known_hosts", "/nonexistent\nProxyCommand=touch${IFS}{M}"),
    ("ssh_config", "/nonexistent\nProxyCommand=touch${IFS}{M}"),
])
def test_ssh_fields_cannot_add_an_option(field, value, tmp_path, markers, monkeypatch):
    """A host's fields reach ssh as its destination and as lines of the generated ssh_config: an address that
    starts with `-` was an ssh option, a line break in a field a ProxyCommand of its own, and both ran here.
    The profile refuses them when it loads (tests/test_bad_input.py); the connection refuses them again, for a
    Host built without that validation."""
    monkeypatch.chdir(markers)  # a ProxyCommand's relative marker lands here
    fields = {"name": "evil-1", "address": "127.0.0.1", "backend": "ssh", "port": 1,
              field: value.replace("{M}", str(markers / "ssh-marker"))}
    with pytest.raises(ValueError, match=field):
        Host.model_validate(fields)
    host = Host.model_construct(**fields)
    pool = HostPool(connect_timeout=2)
    try:
        with pytest.raises(ProbeError) as exc:
            pool.get(host)
    finally:
        pool.close()
    assert ran(markers) == []
    assert "\n" not in str(exc.value) and field.replace("_", " ") in str(exc.value).replace("_", " ")


# ----------------------------------------------------------------------------------------------- whole runs


def _profile(tmp_path: Path, markers: Path, ops: dict | None, shift: int) -> Path:
    """A profile whose every string field that reaches a host command holds a payload: lists hold all five,
    each scalar one (`shift` turns which), services one each of unit, log and process."""
    values = list(payloads(markers).values())

    def pick(i: int) -> str:
        return values[(i + shift) % len(values)]

    scalars = ["app_root", "kernel_log", "logs", "alerts_log", "backups", "policies", "passwd", "security_log"]
    hosts = [{"name": "app-1", "backend": "local", "roles": ["app"], "systemd": True, "mounts": values}]
    if ops is not None:
        hosts.append({**ops, "roles": ["app"], "systemd": True, "mounts": values})
    data = {
        "name": "values-are-data",
        "constitutional_hash": "cdd01ef066bc6cf2",
        "hosts": hosts,
        "services": [{"name": f"svc{i}", "port": 1, "unit": pick(i), "log": pick(i + 1), "process": pick(i + 2)}
                     for i in range(len(values))],
        "paths": {field: pick(i) for i, field in enumerate(scalars)},
        "certificates": values,
        "security": {"secret_files": values, "allowed_users": ["root"],
                     "keys": [{"name": f"k{i}", "path": v, **({"rotation_record": pick(i + 1)} if i % 2 else {})}
                              for i, v in enumerate(values)]},
    }
    path = tmp_path / f"values-{shift}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# 0: app_root (SEC-01) gets the quote, kernel_log (SYS-05) `$(...)`; 4: app_root `-delete`, kernel_log the quote
@pytest.mark.parametrize("shift", [0, 4])
def test_a_run_fed_payloads_in_every_field_runs_nothing_and_passes_nothing_that_read_one(
        request, tmp_path, markers, shift):
    ops = request.getfixturevalue("ops") if sshd_binary() else None
    work = tmp_path / "cwd"  # holds nothing named like a payload: every field names what does not exist
    work.mkdir()
    reports = tmp_path / "reports"
    started = time.monotonic()
    res = run_cli("run", "--profile", str(_profile(tmp_path, markers, ops, shift)), "--report-dir", str(reports),
                  cwd=work, timeout=240)
    summary = json.loads((reports / "latest" / "summary.json").read_text())
    assert ran(markers) == [], f"payloads ran: {ran(markers)}"
    passed = sorted({c["id"] for c in summary["checks"] if c["outcome"] == "passed"} - READ_NO_VALUE)
    assert passed == [], [(c["id"], c["target"], c["message"]) for c in summary["checks"] if c["id"] in passed]
    targets = {c["target"] for c in summary["checks"]}
    assert {"app-1", "ops-1"} <= targets or ops is None, sorted(targets)
    assert {c["id"] for c in summary["checks"]} >= {"SEC-01", "SYS-05", "SYS-04", "SEC-02", "SEC-05", "SVC-05"}
    assert res.returncode == 2, (res.returncode, res.stdout[-2000:], time.monotonic() - started)


def test_a_backup_path_named_like_an_option_is_a_file(tmp_path, monkeypatch):
    """BK-04 hands a custom-format dump to pg_restore: under a relative backup root of `-fout`, the dump's path
    was pg_restore's -f option, and pg_restore read its stdin instead of the file."""
    from acgs_verify.pgbin import server_bindir
    from acgs_verify.probes.archive import custom_dump_status

    try:
        pg_restore = str(Path(server_bindir()) / "pg_restore")
    except LookupError:
        pytest.skip("needs PostgreSQL (.ci/run installs it)")
    monkeypatch.chdir(tmp_path)
    dump = Path("-fout/20261207_000000/database.dump")
    dump.parent.mkdir(parents=True)
    dump.write_bytes(b"PGDMP" + b"\x78" * 64)  # the magic, then a header no pg_restore supports
    complete, why = custom_dump_status(dump, pg_restore, 20)
    assert not complete and "unsupported version" in why, why  # pg_restore read this file, not stdin
    assert sorted(p.name for p in tmp_path.iterdir()) == ["-fout"]
