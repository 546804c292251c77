"""No password in any DSN or URL of a profile: libpq's and redis-py's own parsers read each one, and a password in
the user-info, in `?password=` or arriving through ${VAR} is refused with one line naming the file, line and field,
never any part of the value. Passwords hold the characters that break naive URL parsing: spaces, `/`, `?`, `#`,
`@`, `%` and quotes.
"""

from __future__ import annotations

import json
import secrets
from urllib.parse import quote

import pytest

from acgs_verify.profile import load_profile
from tests.conftest import profile_error, run_cli

# each password is two random halves around characters a URL parser splits on; neither half may be shown
AWKWARD = {"space": " ", "two spaces": "  ", "slash": "/", "question": "?", "hash": "#", "at": "@", "percent": "%",
           "percent-token": "%zz", "single quote": "'", "double quote": '"', "all": " /?#@%'\""}


def awkward_password(chars: str) -> tuple[str, list[str]]:
    """('3f9a1c0e /?#@%\'"b71d2e44', ['3f9a1c0e', 'b71d2e44']): a password and the parts no output may hold."""
    halves = [secrets.token_hex(6), secrets.token_hex(6)]
    return halves[0] + chars + halves[1], halves


def _assert_withheld(text: str, halves: list[str]) -> None:
    for half in halves:
        assert half not in text, text


PG_FORMS = {
    "user-info": lambda pw: f"postgresql://acgs:{pw}@127.0.0.1:5432/acgs",
    "user-info, percent-encoded": lambda pw: f"postgresql://acgs:{quote(pw, safe='')}@127.0.0.1:5432/acgs",
    "?password=": lambda pw: f"postgresql://acgs@127.0.0.1:5432/acgs?password={pw}",
    "?password=, percent-encoded": lambda pw: f"postgresql://acgs@127.0.0.1:5432/acgs?password={quote(pw, safe='')}",
    "?sslmode&password=": lambda pw: f"postgresql://acgs@127.0.0.1/acgs?sslmode=prefer&password={quote(pw, safe='')}",
    "key=value conninfo": lambda pw: "host=127.0.0.1 user=acgs password='{}'".format(pw.replace("\\", "\\\\")
                                                                                   .replace("'", "\\'")),
}
REDIS_FORMS = {
    "user-info": lambda pw: f"redis://:{pw}@127.0.0.1:6379/0",
    "user and password": lambda pw: f"redis://acgs:{pw}@127.0.0.1:6379/0",
    "user-info, percent-encoded": lambda pw: f"redis://:{quote(pw, safe='')}@127.0.0.1:6379/0",
    "?password=": lambda pw: f"redis://127.0.0.1:6379/0?password={quote(pw, safe='')}",
    "?password=, raw": lambda pw: f"redis://127.0.0.1:6379/0?password={pw}",
}


def _profile(write_profile, section: str, field: str, value: str, extra: str = ""):
    """A profile whose `section[0].field` (line 4) is `value`, written as a JSON string (valid YAML)."""
    return write_profile(f"# a profile\n{section}:\n  - name: x\n    {field}: {json.dumps(value)}\n{extra}")


@pytest.mark.parametrize("chars", AWKWARD.values(), ids=AWKWARD.keys())
@pytest.mark.parametrize("form", PG_FORMS.values(), ids=PG_FORMS.keys())
def test_a_password_in_a_database_dsn_is_refused_naming_the_line_never_the_value(write_profile, form, chars):
    pw, halves = awkward_password(chars)
    text = profile_error(str(_profile(write_profile, "databases", "dsn", form(pw))), resolve_secrets=False)
    assert "p.yaml:4: databases[0].dsn: " in text, text
    _assert_withheld(text, halves)


@pytest.mark.parametrize("chars", AWKWARD.values(), ids=AWKWARD.keys())
@pytest.mark.parametrize("form", REDIS_FORMS.values(), ids=REDIS_FORMS.keys())
def test_a_password_in_a_redis_url_is_refused_naming_the_line_never_the_value(write_profile, form, chars):
    pw, halves = awkward_password(chars)
    text = profile_error(str(_profile(write_profile, "redis", "url", form(pw))), resolve_secrets=False)
    assert "p.yaml:4: redis[0].url: " in text, text
    _assert_withheld(text, halves)


@pytest.mark.parametrize("chars", AWKWARD.values(), ids=AWKWARD.keys())
def test_a_password_arriving_through_a_variable_is_refused(write_profile, monkeypatch, chars):
    pw, halves = awkward_password(chars)
    monkeypatch.setenv("ACGS_TEST_DB_PW", quote(pw, safe=""))
    monkeypatch.setenv("ACGS_TEST_REDIS_URL", f"redis://:{quote(pw, safe='')}@127.0.0.1:6379/0")
    monkeypatch.setenv("ACGS_TEST_RAW_PW", pw)
    db = _profile(write_profile, "databases", "dsn", "postgresql://acgs:${ACGS_TEST_DB_PW}@127.0.0.1/acgs")
    text = profile_error(str(db), resolve_secrets=False)
    assert text.endswith("/p.yaml:4: databases[0].dsn: holds a password; use password_env or password_file"), text
    raw = _profile(write_profile, "databases", "dsn", "postgresql://acgs@127.0.0.1/acgs?password=${ACGS_TEST_RAW_PW}")
    _assert_withheld(profile_error(str(raw), resolve_secrets=False), halves)
    cache = _profile(write_profile, "redis", "url", "${ACGS_TEST_REDIS_URL}")
    text = profile_error(str(cache), resolve_secrets=False)
    assert text.endswith("/p.yaml:4: redis[0].url: holds a password; use password_env or password_file"), text


def test_replicas_admin_dsn_and_set_are_refused_without_the_value(write_profile):
    pw, halves = awkward_password(" /?#@%'\"")
    enc = quote(pw, safe="")
    base = ("databases:\n  - name: x\n    dsn: postgresql://acgs@127.0.0.1/acgs\n"
            f"    replicas: [postgresql://acgs@127.0.0.1:5433/acgs, {json.dumps(f'postgresql://acgs:{enc}@h/a')}]\n")
    text = profile_error(str(write_profile(base)), resolve_secrets=False)
    assert "p.yaml:4: databases[0].replicas[1]: holds a password" in text, text
    admin = write_profile("databases:\n  - name: x\n    dsn: postgresql://acgs@127.0.0.1/acgs\n"
                          f"    admin_dsn: {json.dumps(f'postgresql://postgres@h/a?password={enc}')}\n", "a.yaml")
    text = profile_error(str(admin), resolve_secrets=False)
    assert "a.yaml:4: databases[0].admin_dsn: holds a password" in text, text
    # --set names its key, not the value it was given
    good = write_profile("redis: [{name: cache, url: 'redis://127.0.0.1:6379/0'}]\n", "g.yaml")
    text = profile_error(str(good), [f"redis.cache.url=redis://:{enc}@127.0.0.1:6379/0"], resolve_secrets=False)
    assert text == "--set redis.cache.url=...: redis[0].url: holds a password; use password_env or password_file"
    endpoint = write_profile(f"tls_endpoints: [{json.dumps(f'https://acgs:{enc}@127.0.0.1:8443')}]\n", "t.yaml")
    text = profile_error(str(endpoint), resolve_secrets=False)
    assert "t.yaml:1: tls_endpoints: an endpoint is https://HOST[:PORT]" in text, text


@pytest.mark.parametrize("dsn, why", [
    ("postgresql://acgs:@127.0.0.1/acgs", "its user-info does not parse"),  # an empty password is still one
    ("postgresql://acgs@127.0.0.1/acgs?passwd=x", "does not parse as a libpq connection string"),
    ("postgresql://acgs@127.0.0.1:port/acgs", "its port is not a number"),
    ("mysql://acgs@127.0.0.1/acgs", "must be a postgresql:// URL"),
    ("host=127.0.0.1 user=acgs", "must be a postgresql:// URL"),
])
def test_a_dsn_libpq_cannot_read_is_refused_without_the_value(write_profile, dsn, why):
    text = profile_error(str(_profile(write_profile, "databases", "dsn", dsn)), resolve_secrets=False)
    assert f"p.yaml:4: databases[0].dsn: {why}" in text and dsn not in text, text


def test_dsns_without_a_password_still_load(write_profile):
    p = load_profile(str(write_profile(
        "databases:\n  - {name: a, dsn: 'postgresql://acgs@127.0.0.1:5432/acgs?sslmode=require', "
        "replicas: ['postgres://acgs@[::1]:5433/acgs'], password_env: X}\n"
        "redis:\n  - {name: c, url: 'rediss://acgs@127.0.0.1:6380/1'}\n  - {name: d, url: 'redis://127.0.0.1/0'}\n")),
        resolve_secrets=False)
    assert p.databases[0].dsn.endswith("sslmode=require") and [r.url for r in p.redis][1] == "redis://127.0.0.1/0"


def test_run_exits_3_with_one_line_and_no_part_of_the_password(tmp_path):
    pw, halves = awkward_password(" /?#@%'\"")
    profile = tmp_path / "leaky.yaml"
    profile.write_text("services: [{name: auth, port: 8016}]\ndatabases:\n"
                       f"  - {{name: primary, dsn: {json.dumps(f'postgresql://acgs:{pw}@127.0.0.1/acgs')}}}\n")
    res = run_cli("run", "--profile", str(profile), "--report-dir", str(tmp_path / "reports"))
    assert res.returncode == 3, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "leaky.yaml:3: databases[0].dsn: " in lines[0], res.stderr
    _assert_withheld(res.stdout + res.stderr, halves)
    written = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file() and p != profile)
    _assert_withheld(written, halves)


def test_a_url_with_a_user_info_in_another_field_is_not_quoted_in_its_error(write_profile):
    pw, halves = awkward_password("/?#")
    text = profile_error(str(write_profile(f"services: [{{name: a, port: {json.dumps(f'http://u:{pw}@h')}}}]\n")))
    assert "p.yaml:1: services[0].port: " in text and "value not shown" in text, text
    _assert_withheld(text, halves)
