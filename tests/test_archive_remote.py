"""Archive integrity on another host, without copying the archive (issue 24 item 2), against a real sshd on
127.0.0.47: the host's own gzip/tar/sha256sum where it has them; where it has not (a second key of the same
sshd whose forced command runs every command with a PATH holding no gzip, tar, pg_restore or sha256sum) the bytes
stream through the connection into the checker's reader. A corrupt archive is found both ways, and the
restore drill restores a dump streamed from the host, refusing a hostile one."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path, PurePosixPath

import pytest

from acgs_verify.errors import ProbeError
from acgs_verify.hosts.pool import HostPool
from acgs_verify.probes.archive import dump_tail_status, scan_archive
from acgs_verify.probes.archive_remote import (
    dump_status_on_host,
    scan_on_host,
    sha256_on_host,
    stream_scan,
    tools,
)
from acgs_verify.profile import Host
from tests.servers import lone_sshd

pytestmark = pytest.mark.skipif(shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists(),
                                reason="needs openssh-server (.ci/run installs it)")
ADDRESS = "127.0.0.47"
HIDDEN = {"gzip", "gunzip", "zcat", "tar", "pg_restore", "sha256sum"}
DUMP = (b"--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\nCOPY public.t (a) FROM stdin;\n"
        + b"".join(b"%d\trow %d\n" % (i, i) for i in range(200_000)) +
        b"\\.\n\n--\n-- PostgreSQL database dump complete\n--\n\n")


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    """(host with every tool, the same machine through a key whose forced command hides the archive tools)."""
    with lone_sshd(tmp_path_factory.mktemp("sshd"), ADDRESS) as (sb, entry):
        full = Host.model_validate({**entry, "name": "full"})
        d = Path(entry["identity_file"]).parent
        bare_bin = d / "bare-bin"
        bare_bin.mkdir()
        for name in os.listdir("/usr/bin"):
            if name not in HIDDEN:
                os.symlink(Path("/usr/bin") / name, bare_bin / name)
        key = d / "bare_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        forced = f'PATH={bare_bin}; export PATH; exec /bin/sh -c \\"$SSH_ORIGINAL_COMMAND\\"'
        with open(d / "authorized_keys", "a") as f:  # sshd reads it at each login: no restart
            f.write(f'command="{forced}",no-pty {key.with_suffix(".pub").read_text()}')
        bare = Host.model_validate({**entry, "name": "bare", "identity_file": str(key)})
        yield full, bare


@pytest.fixture
def pool():
    """A pool per host: the two keys reach one address and port, and a pool's ssh control master (its path
    made of address, port and user) would carry the first key's session for both."""
    made: dict[str, HostPool] = {}
    yield lambda host: made.setdefault(host.name, HostPool(connect_timeout=5))
    for p in made.values():
        p.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("backups")
    good = d / "database.sql.gz"
    good.write_bytes(gzip.compress(DUMP, 6))
    raw = bytearray(good.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (d / "corrupt.sql.gz").write_bytes(bytes(raw))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i in range(3):
            data = os.urandom(50_000)
            info = tarfile.TarInfo(f"var/log/{i}.log")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (d / "logs.tar.gz").write_bytes(buf.getvalue())
    (d / "cut.tar.gz").write_bytes(buf.getvalue()[: len(buf.getvalue()) * 2 // 3])
    os.mkfifo(d / "fifo.sql.gz")
    return {p.name: p for p in d.iterdir()}


def test_the_bare_key_hides_the_archive_tools_and_the_full_one_does_not(hosts, pool):
    full, bare = hosts
    assert {"gzip", "tar", "sha256sum", "timeout", "head"} <= tools(pool(full), full)
    assert not {"gzip", "tar", "sha256sum", "pg_restore"} & tools(pool(bare), bare)
    assert {"head", "wc"} <= tools(pool(bare), bare)


def test_a_dump_is_verified_on_the_host_with_its_gzip(hosts, pool, files):
    full, _ = hosts
    scan = scan_on_host(pool(full), full, str(files["database.sql.gz"]), timeout=60)
    assert scan.ok, scan.problem
    assert scan.how == "verified on full with gzip -d"
    assert scan.size == files["database.sql.gz"].stat().st_size
    assert dump_tail_status(scan) == (True, "-- PostgreSQL database dump complete")
    assert "verified on full with gzip -d" in scan.describe()


@pytest.mark.parametrize("backend", ["ssh", "paramiko"])
def test_without_gzip_there_the_dump_streams_and_reads_as_a_local_one(hosts, pool, files, backend):
    bare = hosts[1].model_copy(update={"backend": backend})
    scan = scan_on_host(pool(bare), bare, str(files["database.sql.gz"]), timeout=60)
    local = scan_archive(files["database.sql.gz"], keep_ends=True)
    assert scan.ok and local.ok, scan.problem
    assert scan.how.startswith("streamed ") and scan.how.endswith("from bare (no gzip there)"), scan.how
    assert (scan.size, scan.uncompressed, scan.tail) == (local.size, local.uncompressed, local.tail)
    assert dump_status_on_host(pool(bare), bare, str(files["database.sql.gz"]), "plain", 60)[0] is True


@pytest.mark.parametrize("which", ["full", "bare"])
def test_a_corrupt_gzip_is_found_either_way(hosts, pool, files, which):
    host = hosts[0] if which == "full" else hosts[1]
    scan = scan_on_host(pool(host), host, str(files["corrupt.sql.gz"]), timeout=60)
    assert not scan.ok
    if which == "full":
        assert scan.problem.startswith("gzip -d failed (exit 1): "), scan.problem
    else:  # the checker's reader names the byte
        assert scan.problem.startswith("corrupt at byte "), scan.problem
    ok, found = dump_status_on_host(pool(host), host, str(files["corrupt.sql.gz"]), "plain", 60)
    assert not ok and "corrupt.sql.gz" in found


@pytest.mark.parametrize("which", ["full", "bare"])
def test_a_tar_gz_counts_its_members_and_a_cut_one_fails_either_way(hosts, pool, files, which):
    host = hosts[0] if which == "full" else hosts[1]
    good = scan_on_host(pool(host), host, str(files["logs.tar.gz"]), timeout=60, keep_ends=False)
    assert good.ok and good.members == 3, good.problem
    assert ("with gzip -t and tar -tzf" in good.how) == (which == "full"), good.how
    cut = scan_on_host(pool(host), host, str(files["cut.tar.gz"]), timeout=60, keep_ends=False)
    assert not cut.ok and cut.problem


@pytest.mark.parametrize("which", ["full", "bare"])
def test_a_fifo_or_a_missing_file_is_refused_not_waited_on(hosts, pool, files, which):
    host = hosts[0] if which == "full" else hosts[1]
    with pytest.raises(ProbeError, match="missing or not a regular file"):
        scan_on_host(pool(host), host, str(files["fifo.sql.gz"]), timeout=20)
    with pytest.raises(ProbeError, match="missing or not a regular file"):
        scan_on_host(pool(host), host, str(files["fifo.sql.gz"].parent / "nothing; touch x.gz"), timeout=20)


@pytest.mark.parametrize("which", ["full", "bare"])
def test_sha256_is_the_files_own_either_way(hosts, pool, files, which):
    host = hosts[0] if which == "full" else hosts[1]
    want = hashlib.sha256(files["logs.tar.gz"].read_bytes()).hexdigest()
    assert sha256_on_host(pool(host), host, str(files["logs.tar.gz"]), timeout=60) == want


def test_a_stream_stops_at_its_time_budget(hosts, pool, files):
    _, bare = hosts
    scan = stream_scan(pool(bare), bare, str(files["database.sql.gz"]), timeout=0.001)
    assert not scan.ok and scan.problem.startswith("not read to its end within 0.001 s"), scan.problem


# ------------------------------------------------------------------------------ the restore drill, streamed


@pytest.fixture
def drill_remote(healthy_sandbox, hosts, pool):
    from acgs_verify.probes.restore import restore_drill
    from tests.test_restore_drill_safety import EXTENSIONS, TABLES, admin_dsn

    def run(path: Path):
        host = hosts[1]  # no gzip there: streamed

        def read(feed):
            return stream_scan(pool(host), host, str(path), 120, keep_ends=False, feed=feed)
        return restore_drill(admin_dsn(healthy_sandbox), healthy_sandbox.secret("restore"), PurePosixPath(path),
                             "plain", TABLES, 120, extensions=EXTENSIONS, read=read)
    return run


def test_restore_drill_restores_a_dump_streamed_from_the_host(healthy_sandbox, drill_remote, tmp_path):
    from tests.test_restore_drill_safety import leftovers, pristine

    dump = tmp_path / "database.sql.gz"
    dump.write_bytes(gzip.compress(pristine(healthy_sandbox)))
    result = drill_remote(dump)
    assert result.restored and result.error is None and result.dropped, result
    assert result.counts["audit_logs"] and result.counts["policies"], result.counts
    assert leftovers(healthy_sandbox) == []


def test_restore_drill_refuses_a_hostile_dump_streamed_from_the_host(healthy_sandbox, drill_remote, tmp_path):
    from tests.test_restore_drill_safety import ANCHOR, leftovers, pristine

    marker = tmp_path / "ran"
    hostile = pristine(healthy_sandbox).replace(ANCHOR, ANCHOR + f"\\! touch {marker}\n".encode(), 1)
    dump = tmp_path / "database.sql.gz"
    dump.write_bytes(gzip.compress(hostile))
    result = drill_remote(dump)
    assert not marker.exists()
    assert not result.restored and result.error and ("\\!" in result.error or "restrict" in result.error), result
    assert leftovers(healthy_sandbox) == []


@pytest.mark.parametrize("which", ["full", "bare"])
def test_a_custom_dump_is_read_by_pg_restore_there_or_streamed_into_ours(healthy_sandbox, hosts, pool, tmp_path,
                                                                        which):
    from acgs_verify.sandbox.components.postgres import DATABASE, ROLE, find_bindir, primary_port

    host = hosts[0] if which == "full" else hosts[1]
    dump = tmp_path / "database.dump"
    subprocess.run([str(Path(find_bindir()) / "pg_dump"), "-Fc", "-h", "127.0.0.1", "-p",
                    str(primary_port(healthy_sandbox.port_offset)), "-U", ROLE, "-f", str(dump), DATABASE],
                   check=True, env={**os.environ, "PGPASSWORD": healthy_sandbox.secret("db")}, timeout=60)
    ok, found = dump_status_on_host(pool(host), host, str(dump), "custom", 60, find_bindir())
    assert ok, found
    assert found.endswith("with pg_restore)" if which == "full" else "no pg_restore there; database.dump)"), found
    cut = tmp_path / "cut.dump"
    cut.write_bytes(dump.read_bytes()[: dump.stat().st_size * 2 // 3])
    ok, found = dump_status_on_host(pool(host), host, str(cut), "custom", 60, find_bindir())
    assert not ok and "does not read to the end" in found, found


# ------------------------------------------------------------------------------------ through a whole run

BIG = 66 << 20  # past the 64 MiB the checker once copied a remote archive up to: read there, or streamed


@pytest.fixture(scope="module")
def big_backup(tmp_path_factory) -> Path:
    """A backup root holding one dated folder whose database.sql.gz is over 66 MiB (incompressible rows, so the
    file itself is that large) and ends as pg_dump ends a dump."""
    import datetime as dt

    root = tmp_path_factory.mktemp("big-backups")
    folder = root / (dt.datetime.now() - dt.timedelta(hours=1)).strftime("%Y%m%d_%H%M%S")
    folder.mkdir()
    with gzip.open(folder / "database.sql.gz", "wb", compresslevel=1) as f:
        f.write(b"--\n-- PostgreSQL database dump\n--\n\n")
        while (folder / "database.sql.gz").stat().st_size < BIG + (1 << 20):
            f.write(b"-- " + os.urandom(1 << 20).hex().encode() + b"\n")  # text, 2 MiB compressing to ~1 MiB
            f.flush()
        f.write(b"\n--\n-- PostgreSQL database dump complete\n--\n\n")
    assert (folder / "database.sql.gz").stat().st_size > BIG
    return root


@pytest.mark.parametrize(("which", "bk03", "bk04"), [
    (0, r"verified on full with gzip -d", r"dump complete \(verified on full with gzip -d\)"),
    (1, r"streamed 6\d\.\d MiB from bare \(no gzip there\)",
     r"dump complete \(streamed 6\d\.\d MiB from bare \(no gzip there\)\)"),
], ids=["gzip-there", "streamed"])
def test_a_backup_host_over_ssh_has_its_dump_read_there_never_copied(hosts, big_backup, tmp_path, which, bk03,
                                                                     bk04):
    """BK-03 and BK-04 on a profile whose backups.host is an ssh host: a dump over 66 MiB (past the old copy's
    64 MiB cap) is verified by the host's gzip, or streamed from a host without one, and each finding says so."""
    import yaml

    from tests.runs import run_checks

    host = hosts[which]
    profile = tmp_path / "remote-backups.yaml"
    profile.write_text(yaml.safe_dump({
        "name": "remote-backups", "hosts": [dict(host.model_dump(exclude_none=True), roles=["backup"])],
        "paths": {"backups": str(big_backup)}, "backups": {"host": host.name, "files": ["database.sql.gz"]},
    }))
    res = run_checks(profile, tmp_path / "reports", "--", "-k", "BK-03 or BK-04 or archives_read or dump_complete")
    target = f"backups/latest@{host.name}"
    assert {k for k in res.checks} == {("BK-03", target), ("BK-04", target)}, res.output
    assert {c["outcome"] for c in res.checks.values()} == {"passed"}, res.output
    assert re.search(rf"database\.sql\.gz: [\d.]+ MB read to the end( \([\d.]+ MB uncompressed\))? \({bk03}\)",
                     res.checks["BK-03", target]["measured"]), res.checks["BK-03", target]["measured"]
    assert re.search(bk04, res.checks["BK-04", target]["measured"]), res.checks["BK-04", target]["measured"]


def test_the_drill_streams_a_plain_dump_from_its_host_and_refuses_a_custom_one_there(hosts, pool, big_backup):
    """BK-07's source on another host: a plain dump is read through the connection as psql takes it (a
    stream_scan on that host, never a local path read); pg_restore would seek in a custom-format one, which is
    not copied here: refused, naming the host and what to do instead."""
    from acgs_verify.probes.backups import list_backups, remote_dump
    from acgs_verify.probes.hostfiles import host_files

    full = hosts[0]
    listing = list_backups(big_backup, files=host_files(pool(full), full))
    dump = listing.latest.path / "database.sql.gz"
    with pytest.raises(ProbeError, match=r"is on full: a custom-format dump is restored from this machine's disk "
                                         r"only .* not copied here; run the drill on full"):
        remote_dump(listing, dump, "custom", 60, pool(full), full)
    source = remote_dump(listing, dump, "plain", 60, pool(full), full)
    assert not isinstance(source.path, Path) and source.read is not None  # no local path to read by mistake
    fed = []
    scan = source.read(lambda chunk: fed.append(len(chunk)))
    assert scan.ok, scan.problem
    assert sum(fed) == scan.uncompressed and scan.size == dump.stat().st_size
    assert re.fullmatch(r" \(streamed 6\d\.\d MiB from full, not copied\)", source.how()), source.how()
