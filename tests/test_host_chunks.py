"""A run over many hosts in host chunks, one pytest session each (acgs_verify/chunks.py, issue 24 item 7), ends as one
session over every host would: the same checks and outcomes in summary.json and junit.xml, exit code and last line."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import yaml

from acgs_verify import chunks
from acgs_verify.profile import Host, Profile
from tests.conftest import run_checks


def test_hosts_are_chunked_in_profile_order_with_the_hostless_checks_first():
    profile = Profile(hosts=[Host(name=f"h{i}") for i in range(45)])
    found = chunks.host_chunks(profile)
    assert [len(c.names) for c in found] == [10, 10, 10, 10, 5]
    assert found[0].names == {f"h{i}" for i in range(10)} and found[4].names == {f"h{i}" for i in range(40, 45)}
    assert [c.hostless for c in found] == [True, False, False, False, False]
    assert chunks.host_chunks(Profile(hosts=[Host(name=f"h{i}") for i in range(10)])) == []  # one session


def three_hosts(sandbox, tmp_path):
    """The sandbox's profile (app-1 local, ops-1 over ssh) and app-2, a second app host on the local backend."""
    data = yaml.safe_load(sandbox.profile_path.read_text())
    data["hosts"].append({"name": "app-2", "address": "127.0.0.1", "backend": "local", "roles": ["app"]})
    path = tmp_path / "three.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def junit_cases(path):
    return sorted((tc.get("name"), tuple(sorted(child.tag for child in tc)))
                  for tc in ET.parse(path).iter("testcase"))


def test_a_run_in_chunks_of_one_host_ends_as_one_session(healthy_sandbox, tmp_path, monkeypatch):
    healthy_sandbox.break_fault("service-unhealthy:constitutional-ai")  # a failure the chunks must carry
    profile = three_hosts(healthy_sandbox, tmp_path)
    args = ("--gate", "smoke", "--workers", "0")
    one = run_checks(profile, tmp_path / "one", *args)
    monkeypatch.setattr(chunks, "CHUNK_HOSTS", 1)
    chunked = run_checks(profile, tmp_path / "chunked", *args)

    # pytest's own last line once per session: three sessions, so the hosts were collected apart
    sessions = r"^\d+ (passed|failed|deselected).* in [\d.]+s$"
    assert len(re.findall(sessions, one.stdout, re.M)) == 1, one.output
    assert len(re.findall(sessions, chunked.stdout, re.M)) == 3, chunked.output
    assert one.returncode == chunked.returncode == 2, chunked.output
    assert {k: c["outcome"] for k, c in chunked.checks.items()} == {k: c["outcome"] for k, c in one.checks.items()}
    assert {"auth@app-1", "auth@app-2"} <= {t for _, t in chunked.checks}
    assert chunked.checks[("SVC-01", "constitutional-ai@app-1")]["outcome"] == "failed"
    for key in ("planned", "complete", "notes", "gate_failures", "profile", "gate"):
        assert chunked.summary[key] == one.summary[key], key
    assert chunked.summary["run_id"] != one.summary["run_id"]
    assert chunked.last_line.partition(" | ")[0] == one.last_line.partition(" | ")[0]
    assert junit_cases(tmp_path / "chunked" / "latest" / "junit.xml") == \
        junit_cases(tmp_path / "one" / "latest" / "junit.xml")
