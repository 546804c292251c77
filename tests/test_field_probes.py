"""The probes behind CC-03 and SVC-10 on the layouts and bodies seen on a real deployment, and on nothing at all:
policy files among notes, a policy directory that is missing or holds only notes, /metrics answering JSON."""

from __future__ import annotations

import json
import os

import pytest

from acgs_verify.check import ProbeError
from acgs_verify.probes.metrics import exposition
from acgs_verify.probes.policies import matches, scan_policies
from acgs_verify.profile import Policies, Profile, ProfileError, load_profile

DEFAULT = Policies().include_globs
PROM = ("# HELP acgs_http_requests_total Total HTTP requests\n# TYPE acgs_http_requests_total counter\n"
        'acgs_http_requests_total{method="GET",endpoint="/api/v1/policies",status="200"} 40\n')


def _tree(root, files):
    for rel in files:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n")


def test_only_policy_files_are_validated_and_the_rest_listed_as_ignored(tmp_path):
    _tree(tmp_path, ["a.rego", "b.YAML", "c.yml", "d.json", "CLAUDE.md", "README.md", "sub/e.rego", "sub/notes.txt",
                     ".git/config", ".hidden.yaml"])
    scan = scan_policies(tmp_path, DEFAULT)
    assert scan.files == ["a.rego", "b.YAML", "c.yml", "d.json", "sub/e.rego"]
    assert scan.ignored == ["CLAUDE.md", "README.md", "sub/notes.txt"]
    assert scan.problem is None


def test_include_and_exclude_globs(tmp_path):
    _tree(tmp_path, ["a.rego", "b.yaml", "drafts/c.yaml", "x.example.yaml"])
    scan = scan_policies(tmp_path, ["*.rego", "*.yaml"], ["drafts/*", "*.example.yaml"])
    assert scan.files == ["a.rego", "b.yaml"]
    assert scan.ignored == ["drafts/c.yaml", "x.example.yaml"]
    assert matches("sub/dir/p.rego", ["*.rego"]) and not matches("sub/p.rego", ["p/*.rego"])


@pytest.mark.parametrize("layout, said", [
    ("missing", "the directory does not exist"),
    ("empty", "the directory holds no file at all"),
    ("notes", "2 files, none matching *.rego, *.json, *.yaml, *.yml: CLAUDE.md, README.md"),
    ("file", "it is not a directory"),
])
def test_no_policy_file_says_what_it_found(tmp_path, layout, said):
    root = tmp_path / "policies"
    if layout == "empty":
        root.mkdir()
    elif layout == "notes":
        _tree(root, ["CLAUDE.md", "README.md"])
    elif layout == "file":
        root.write_text("not a directory\n")
    scan = scan_policies(root, DEFAULT)
    assert scan.files == []
    assert scan.nothing_found(DEFAULT) == said


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a directory whatever its mode")
def test_an_unreadable_policy_directory_is_a_problem_not_an_empty_one(tmp_path):
    root = tmp_path / "policies"
    _tree(root, ["a.rego"])
    root.chmod(0)
    try:
        scan = scan_policies(root, DEFAULT)
    finally:
        root.chmod(0o755)
    assert scan.files == [] and scan.problem == "cannot list it: permission denied"


def test_policy_globs_are_profile_fields_with_the_extensions_as_default():
    assert DEFAULT == ["*.rego", "*.json", "*.yaml", "*.yml"]
    assert Policies(format="rego").include_globs == ["*.rego"]
    assert Policies(include=["*.pol"]).include_globs == ["*.pol"]
    with pytest.raises(ValueError, match="empty include list"):
        Policies(include=[])


def test_optional_paths_may_be_null_also_from_the_command_line(write_profile):
    path = write_profile("hosts: [{name: a}]\npaths: {alerts_log: null}\n")
    assert load_profile(str(path)).paths.alerts_log is None
    p = load_profile(str(write_profile("hosts: [{name: a}]\n")), overrides=["paths.alerts_log=null",
                                                                            "paths.policies=null"])
    assert p.paths.alerts_log is None and p.paths.policies is None
    assert Profile().paths.alerts_log == "/var/log/acgs/alerts.log"
    with pytest.raises(ProfileError, match="paths.app_root"):  # not optional: SEC-01 has nothing to fall back on
        load_profile(str(write_profile("hosts: [{name: a}]\n")), overrides=["paths.app_root=null"])


def test_prometheus_text_parses_with_its_samples():
    found = exposition(PROM.encode())
    assert found.samples == [("acgs_http_requests_total",
                              {"method": "GET", "endpoint": "/api/v1/policies", "status": "200"}, 40.0)]


@pytest.mark.parametrize("body, said", [
    (b"", "empty body"),
    (b"  \n", "empty body"),
    (b"# HELP x y\n# TYPE x gauge\n", "1 metric family and no sample"),
    (json.dumps({"requests_total": 40}).encode(), "a JSON object, not Prometheus text"),
    (json.dumps(PROM).encode(), "a JSON string (Prometheus text inside it), not Prometheus text"),
    (b"[1, 2]", "a JSON list"),
    (b"<html><body>metrics</body></html>", "not Prometheus text exposition"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_a_body_prometheus_cannot_scrape_is_refused_with_its_first_80_bytes(body, said):
    with pytest.raises(ProbeError) as exc:
        exposition(body)
    assert said in str(exc.value)
    if body.strip():
        assert f"first 80 bytes: {body[:80]!r}" in str(exc.value)


def test_a_body_cut_at_the_size_cap_is_parsed_up_to_its_last_whole_line():
    found = exposition((PROM + 'acgs_http_requests_total{method="GET",endp').encode(), truncated=True)
    assert found.partial and len(found.samples) == 1
