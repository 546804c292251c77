"""Profile loading: inheritance, secrets by reference, --set, and one clear line for each kind of bad input."""

from __future__ import annotations

import pytest

from acgs_verify.profile import display_url, load_profile, mask
from tests.conftest import profile_error, run_cli


def test_defaults_follow_the_catalog(write_profile):
    p = load_profile(str(write_profile("hosts: [{name: a}]\n")))
    assert p.thresholds.db_long_query_seconds == 300
    assert p.thresholds.latency_p99_fail_ms == 100
    assert p.thresholds.backup_max_age_hours == 26
    assert p.constitutional_hash == "cdd01ef066bc6cf2"


def test_production_follows_the_runbook(monkeypatch):
    monkeypatch.setenv("ACGS_DB_PASSWORD", "pw1")
    monkeypatch.setenv("ACGS_REDIS_PASSWORD", "pw2")
    p = load_profile("production")
    assert [s.port for s in p.services] == [8016, 8002, 8003, 8004, 8005, 8010]
    assert p.paths.logs == "/var/log/acgs"
    assert p.databases[0].dsn.endswith("/acgs_production") and "acgs@" in p.databases[0].dsn
    assert p.secret("databases.primary") == "pw1"


def test_staging_extends_production_maps_merge_lists_replace(monkeypatch):
    monkeypatch.setenv("ACGS_DB_PASSWORD", "pw1")
    monkeypatch.setenv("ACGS_REDIS_PASSWORD", "pw2")
    p = load_profile("staging")
    assert [h.name for h in p.hosts] == ["staging-1"]  # list replaced
    assert p.thresholds.latency_p99_fail_ms == 250  # map merged: own value
    assert p.thresholds.db_long_query_seconds == 300  # map merged: default kept
    assert len(p.services) == 6  # inherited


def test_extends_by_relative_path(write_profile):
    write_profile("thresholds: {load_1m_max: 3}\nservices: [{name: a, port: 1}]\n", "base.yaml")
    child = write_profile("extends: base.yaml\nthresholds: {disk_percent_max: 70}\n", "child.yaml")
    p = load_profile(str(child))
    assert p.thresholds.load_1m_max == 3 and p.thresholds.disk_percent_max == 70
    assert p.services[0].name == "a"


def test_set_overrides_are_type_checked(write_profile):
    path = str(write_profile("services: [{name: auth, port: 8016}]\n"))
    p = load_profile(path, ["thresholds.db_long_query_seconds=60", "services.auth.port=9000",
                            "backups.restore_drill=true"])
    assert p.thresholds.db_long_query_seconds == 60
    assert p.services[0].port == 9000
    assert p.backups.restore_drill is True
    assert "--set thresholds.db_long_query_seconds=soon" in profile_error(path,
                                                                         ["thresholds.db_long_query_seconds=soon"])


@pytest.mark.parametrize("override, expected", [
    ("thresholds", "expected dotted.key=VALUE"),
    ("=5", "expected dotted.key=VALUE"),
    ("thresholds.nope=1", "unknown field 'nope'"),
    ("services.bogus.port=1", "no item 'bogus'"),
    ("thresholds.latency_samples=0", "greater than or equal to 1"),
])
def test_malformed_set(write_profile, override, expected):
    path = str(write_profile("services: [{name: auth, port: 8016}]\n"))
    assert expected in profile_error(path, [override])


def test_yaml_syntax_error_names_file_and_line(write_profile):
    path = write_profile("services:\n  - {name: auth, port: 8016\nthresholds: {}\n")
    text = profile_error(str(path))
    assert "p.yaml:3" in text and "YAML syntax error" in text


def test_unknown_key_names_file_line_and_field(write_profile):
    path = write_profile("services:\n  - name: auth\n    port: 8016\n    helth_path: /health\n")
    text = profile_error(str(path))
    assert "p.yaml:4" in text and "services[0].helth_path" in text and "unknown field" in text


def test_wrong_type_names_file_line_and_field(write_profile):
    path = write_profile("thresholds:\n  disk_percent_max: lots\nhosts: [{name: a}]\n")
    text = profile_error(str(path))
    assert "p.yaml:2" in text and "thresholds.disk_percent_max" in text and "'lots'" in text


def test_missing_extends(write_profile):
    path = write_profile("extends: no-such-profile\n")
    text = profile_error(str(path))
    assert "p.yaml:1: extends: unknown profile 'no-such-profile'" in text and "production" in text


def test_cyclic_extends(write_profile):
    write_profile("extends: b.yaml\n", "a.yaml")
    b = write_profile("extends: a.yaml\n", "b.yaml")
    assert "extends cycle" in profile_error(str(b))


def test_unknown_profile_lists_the_ones_that_exist():
    text = profile_error("prodution")
    assert "unknown profile 'prodution'" in text and "production" in text and "staging" in text


def test_secret_env_unset_names_the_variable(write_profile, monkeypatch):
    monkeypatch.delenv("NO_SUCH_SECRET_VAR", raising=False)
    path = write_profile(
        "databases:\n  - {name: db, dsn: 'postgresql://acgs@h/acgs', password_env: NO_SUCH_SECRET_VAR}\n")
    text = profile_error(str(path))
    assert "p.yaml:2" in text and "NO_SUCH_SECRET_VAR is not set" in text


def test_secret_from_file_and_never_in_the_dsn(write_profile, tmp_path):
    (tmp_path / "pw").write_text("s3cret-Value\n")
    ok = write_profile(f"databases: [{{name: db, dsn: 'postgresql://acgs@h/acgs', password_file: {tmp_path}/pw}}]\n")
    assert load_profile(str(ok)).secret("databases.db") == "s3cret-Value"
    bad = write_profile("databases: [{name: db, dsn: 'postgresql://acgs:hunter2@h/acgs'}]\n", "bad.yaml")
    text = profile_error(str(bad))
    assert "databases[0].dsn: holds a password; use password_env or password_file" in text and "hunter2" not in text


def test_masking_helpers():
    assert mask("connect failed for pw=hunter22", ["hunter22"]) == "connect failed for pw=***"
    assert display_url("postgresql://acgs:hunter22@db:5432/x") == "postgresql://acgs:***@db:5432/x"


def test_env_interpolation_with_default(write_profile, monkeypatch):
    monkeypatch.delenv("ACGS_TEST_DIR", raising=False)
    path = str(write_profile("hosts: [{name: a}]\npaths: {logs: '${ACGS_TEST_DIR:-/tmp/x}/log'}\n"))
    assert load_profile(path).paths.logs == "/tmp/x/log"
    monkeypatch.setenv("ACGS_TEST_DIR", "/srv")
    assert load_profile(path).paths.logs == "/srv/log"


def test_alias_bomb_is_refused_quickly(write_profile):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]")
    assert "expands to more than" in profile_error(str(write_profile("\n".join(lines) + "\n")))


@pytest.mark.parametrize("content, expected", [
    ("hosts: [{name: a, port: x}]\n", "p.yaml:1: hosts[0].port"),
    ("- just\n- a list\n", "a profile is a mapping"),
    ("services: [{name: a, port: 1}, {name: a, port: 2}]\n", "name 'a' is used twice"),
    ("constitutional_hash: xyz\nhosts: [{name: a}]\n", "constitutional_hash"),
])
def test_more_bad_profiles(write_profile, content, expected):
    assert expected in profile_error(str(write_profile(content)))


@pytest.mark.parametrize("args, expected", [
    (["run", "--profile", "prodution"], "unknown profile 'prodution'"),
    (["run", "--profile", "sandbox", "--gate", "lunch"], "unknown gate 'lunch'"),
    (["run", "--profile", "sandbox", "--set", "thresholds"], "expected dotted.key=VALUE"),
    (["run", "--bogus-option"], "unrecognized arguments"),
])
def test_cli_bad_input_is_one_line_and_exit_3(args, expected):
    res = run_cli(*args)
    assert res.returncode == 3, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_cli_bad_profile_file_is_one_line_and_exit_3(write_profile):
    path = write_profile("thresholds:\n  disk_percent_max: [1, 2]\nhosts: [{name: a}]\n")
    res = run_cli("run", "--profile", str(path))
    assert res.returncode == 3
    assert "p.yaml:2: thresholds.disk_percent_max" in res.stderr and len(res.stderr.strip().splitlines()) == 1
