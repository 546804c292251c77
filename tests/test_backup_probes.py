"""Backup, certificate and policy probes against real files and a real TLS endpoint: archives made with gzip
and tar, cut and corrupted at known places; certificates from a throwaway CA; policy files as people break them."""

from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path

import pytest

from acgs_verify.check import ProbeError
from acgs_verify.probes.archive import dump_tail_status, scan_archive
from acgs_verify.probes.backups import list_backups
from acgs_verify.probes.policies import check_policy, policy_files
from acgs_verify.probes.tls import certificate_file, endpoint, soonest
from acgs_verify.sandbox import certs
from acgs_verify.sandbox.components.policies import POLICIES
from tests.tlsserver import TlsHealthServer

DUMP = "--\n-- PostgreSQL database dump\n--\n\nSET x = 1;\nCOPY t (a) FROM stdin;\n{rows}\\.\n\n" \
       "--\n-- PostgreSQL database dump complete\n--\n\n"


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """An application tree with a venv and a .git, a long file name, and enough data for several gzip blocks."""
    root = tmp_path_factory.mktemp("tree")
    app = root / "home/acgs/ACGS"
    (app / "venv/lib").mkdir(parents=True)
    (app / ".git").mkdir()
    (app / "venv/lib/site.py").write_text("venv\n")
    (app / ".git/HEAD").write_text("ref: refs/heads/main\n")
    (app / "services").mkdir()
    (app / "services" / ("x" * 150 + ".py")).write_text("long name\n")
    (app / "services/data.bin").write_bytes(os.urandom(200_000).hex().encode())
    return root


@pytest.fixture(scope="module")
def archive(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("arch") / "application.tar.gz"
    subprocess.run(["tar", "-czf", str(out), "-C", str(tree), "--exclude=venv", "--exclude=.git", "home/acgs/ACGS/"],
                   check=True)
    return out


def test_intact_archive_reads_to_the_end_and_excludes_venv_and_git(archive):
    scan = scan_archive(archive)
    assert scan.ok, scan.problem
    listed = subprocess.run(["tar", "-tzf", str(archive)], capture_output=True, text=True, check=True).stdout
    assert scan.members == len(listed.split())
    assert "venv" not in listed and ".git" not in listed and "x" * 150 in listed


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_truncated_archive_names_the_offset_and_member(archive, tmp_path, fraction):
    data = archive.read_bytes()
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(data[: int(len(data) * fraction)])
    scan = scan_archive(cut)
    assert not scan.ok
    assert f"byte {cut.stat().st_size}" in scan.problem and "truncated" in scan.problem
    assert gzip_t_fails(cut)


def test_corrupt_archive_names_an_offset_near_the_damage(archive, tmp_path):
    data = bytearray(archive.read_bytes())
    at = len(data) // 2
    for i in range(at, at + 64):
        data[i] ^= 0x5A
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(bytes(data))
    scan = scan_archive(bad)
    assert not scan.ok, "a damaged archive read as intact"
    if "tar: bad header checksum" in scan.problem:  # the damage decoded into a tar header before zlib saw it
        return
    assert "corrupt at byte" in scan.problem, scan.problem
    offset = int(scan.problem.split("corrupt at byte ")[1].split()[0])
    # never before the damage; possibly well after it (deflate may decode damaged bits for a while, and a
    # flip it cannot see is caught by the CRC at the end of the member)
    assert at - 256 <= offset <= len(data), (offset, at)
    assert gzip_t_fails(bad)


def gzip_t_fails(path: Path) -> bool:
    return subprocess.run(["gzip", "-t", str(path)], capture_output=True).returncode != 0


def test_tar_cut_at_a_member_boundary_lacks_its_end_marker(tree, tmp_path):
    plain = tmp_path / "a.tar"
    subprocess.run(["tar", "-cf", str(plain), "-C", str(tree), "home/acgs/ACGS/services"], check=True)
    data = plain.read_bytes()
    first_member_end = 512 + 512  # a directory header, then the first file's header ... cut after a header
    (tmp_path / "b.tar.gz").write_bytes(gzip.compress(data[:first_member_end]))
    scan = scan_archive(tmp_path / "b.tar.gz")
    assert not scan.ok and "tar:" in scan.problem, scan.problem
    broken = bytearray(data)
    broken[0] ^= 0xFF  # the first header's checksum no longer adds up
    (tmp_path / "c.tar.gz").write_bytes(gzip.compress(bytes(broken)))
    assert "bad header checksum at uncompressed offset 0" in scan_archive(tmp_path / "c.tar.gz").problem


def test_concatenated_gzip_members_and_trailing_garbage(tmp_path):
    two = tmp_path / "two.gz"
    two.write_bytes(gzip.compress(b"first\n") + gzip.compress(b"second\n"))
    scan = scan_archive(two, keep_ends=True)
    assert scan.ok and scan.gzip_members == 2 and scan.tail == b"first\nsecond\n"
    junk = tmp_path / "junk.gz"
    junk.write_bytes(two.read_bytes() + b"GARBAGE!")
    assert "not a gzip member at byte" in scan_archive(junk).problem
    (tmp_path / "empty.gz").write_bytes(b"")
    assert "empty file" in scan_archive(tmp_path / "empty.gz").problem


def test_a_highly_compressible_stream_is_read_in_bounded_pieces(tmp_path):
    bomb = tmp_path / "zeros.sql.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as f:
        for _ in range(64):
            f.write(bytes(1 << 20))  # 64 MiB of zeros in ~64 KB
    pieces: list[int] = []
    scan = scan_archive(bomb, feed=lambda out: pieces.append(len(out)))
    assert scan.ok and scan.uncompressed == 64 << 20 and max(pieces) <= 1 << 23


def test_dump_closing_line(tmp_path):
    good = tmp_path / "good.sql.gz"
    good.write_bytes(gzip.compress(DUMP.format(rows="1\n2\n").encode()))
    assert dump_tail_status(scan_archive(good, keep_ends=True)) == (True, "-- PostgreSQL database dump complete")
    cut = tmp_path / "cut.sql.gz"
    cut.write_bytes(gzip.compress(DUMP.format(rows="1\n2\n").split("\\.")[0].encode()))
    ok, found = dump_tail_status(scan_archive(cut, keep_ends=True))
    assert not ok and "last line '2'" in found
    other = tmp_path / "other.sql.gz"
    other.write_bytes(gzip.compress(b"hello\n-- PostgreSQL database dump complete\n"))
    assert "does not start like a pg_dump" in dump_tail_status(scan_archive(other, keep_ends=True))[1]


def test_listing_reports_what_it_left_out_and_follows_latest(tmp_path):
    for name in ("20250101", "20250102", "tmp-restore", "20251341", "20250103"):
        (tmp_path / name).mkdir()
    (tmp_path / "20250101" / "database.sql.gz").write_bytes(b"x")
    (tmp_path / "20250102" / "database.sql.gz").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "latest").symlink_to(tmp_path / "20250102")
    listing = list_backups(tmp_path)
    assert [b.name for b in listing.backups] == ["20250101", "20250102"]
    assert listing.latest.name == "20250102" and listing.previous.name == "20250101"
    assert sorted(listing.left_out) == ["20250103 (empty)", "20251341 (not a valid date)",
                                        "notes.txt (a file, not a backup folder)",
                                        "tmp-restore (not a date name (YYYYMMDD, YYYYMMDD_HHMMSS, YYYY-MM-DD or "
                                        "YYYY-MM-DDTHHMMSS))"]
    assert listing.link.describe(listing.latest) == "latest -> 20250102 (the newest)"
    (tmp_path / "latest").unlink()
    (tmp_path / "latest").symlink_to("20250103")
    link = list_backups(tmp_path).link
    assert link.backup is None and "names no backup folder: 20250103 (empty)" in link.problem
    (tmp_path / "latest").unlink()
    (tmp_path / "latest").symlink_to("20250199")
    assert "dangling" in list_backups(tmp_path).link.problem
    with pytest.raises(ProbeError, match="does not exist"):
        list_backups(tmp_path / "nope")


# ----------------------------------------------------------------------------------------- certificates


@pytest.fixture(scope="module")
def ca():
    return certs.make_ca("probe test CA")


def _serve(tmp_path, ca, names=("127.0.0.1",), days=90.0, back=1.0):
    leaf, key = certs.issue(ca[0], ca[1], list(names), days=days, not_before_days=back)
    certs.write_pem(tmp_path / "cert.pem", leaf, ca[0])
    certs.write_key(tmp_path / "key.pem", key)
    certs.write_pem(tmp_path / "ca.pem", ca[0])
    return TlsHealthServer(tmp_path / "cert.pem", tmp_path / "key.pem")


def test_certificate_file_reads_the_chain_and_finds_the_first_to_expire(tmp_path, ca):
    leaf, _ = certs.issue(ca[0], ca[1], ["acgs.internal"], days=12)
    certs.write_pem(tmp_path / "chain.pem", leaf, ca[0])
    chain = certificate_file(tmp_path / "chain.pem")
    assert len(chain) == 2 and chain[0].names == ("acgs.internal",)
    i, first = soonest(chain)
    assert i == 0 and 11.9 < first.days_left() <= 12
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ProbeError, match="no readable PEM certificate"):
        certificate_file(tmp_path / "junk.pem")


@pytest.mark.parametrize("case, expected", [
    ("good", None), ("expired", "certificate has expired"), ("wrong-name", "mismatch"),
    ("untrusted", "self-signed certificate in certificate chain"),
])
def test_live_endpoint_verification(tmp_path, ca, case, expected):
    kwargs = {"expired": {"days": -1, "back": 30}, "wrong-name": {"names": ("other.example",)}}.get(case, {})
    with _serve(tmp_path, ca, **kwargs) as port:
        trust = tmp_path / "ca.pem"
        if case == "untrusted":
            certs.write_pem(trust, certs.make_ca("some other CA")[0])
        ep = endpoint(f"https://127.0.0.1:{port}", str(trust), timeout=3)
    assert ep.verified == (expected is None)
    assert expected is None or expected in ep.error, ep.error
    assert ep.leaf.days_left() < 0 if case == "expired" else ep.leaf.days_left() > 80


def test_endpoint_that_is_not_listening_is_a_probe_error():
    from tests.conftest import free_port_offset

    with pytest.raises(ProbeError, match="cannot connect"):
        endpoint(f"https://127.0.0.1:{443 + free_port_offset()}", None, timeout=2)


# --------------------------------------------------------------------------------------------- policies


@pytest.mark.parametrize("name, text, problem", [
    ("a.yaml", "name: x\nconstitutional_hash: [unclosed\n", "YAML syntax error at line"),
    ("a.json", '{"name": "x", "constitutional_hash": "cdd01ef066bc6cf2",}', "JSON syntax error at line 1"),
    ("a.json", '["a list"]', "a policy is a mapping"),
    ("a.yaml", "name: x\n", "no constitutional_hash field"),
    ("a.rego", 'package acgs.x\nconstitutional_hash := "cdd01ef066bc6cf2"\nallow if {\n  input.a == 1\n',
     "opened at line 3 is never closed"),
    ("a.rego", 'constitutional_hash := "cdd01ef066bc6cf2"\n', "first statement must be `package"),
    ("a.rego", 'package x\nimport 3\nconstitutional_hash := "cdd01ef066bc6cf2"\n', "bad import at line 2"),
    ("a.rego", 'package x\nmsg := "unterminated\n', "unterminated string at line 2"),
    ("a.md", "# notes\n", "not a policy format (.md"),
])
def test_policy_problems_are_named(tmp_path, name, text, problem):
    (tmp_path / name).write_text(text)
    found = check_policy(tmp_path / name, "auto", "constitutional_hash")
    assert found.problem is not None and problem in found.problem, found


def test_shipped_policy_set_validates_and_hidden_files_are_left_out(tmp_path):
    for name, text in POLICIES.items():
        (tmp_path / name).write_text(text)
    (tmp_path / ".editor.swp").write_text("junk")
    files = policy_files(tmp_path)
    assert [f.name for f in files] == sorted(POLICIES)
    results = [check_policy(f, "auto", "constitutional_hash") for f in files]
    assert {r.format for r in results} == {"yaml", "json", "rego"}
    assert all(r.problem is None and r.hash == "cdd01ef066bc6cf2" for r in results), results

