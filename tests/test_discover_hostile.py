"""What discover writes is data, and never a password: a real ACGS-like service whose /health body is hostile
(its `service` field holds newlines, `#`, quotes, `: ` and YAML of its own), whose environment holds DSNs and
Redis URLs with awkward passwords in every form, and whose command line (and a look-alike's) holds a password,
beside a real PostgreSQL and a real Redis on loopback.

The written profile must parse to exactly what discover decided (tests/test_dsn_passwords.py has the loader's side).
"""

from __future__ import annotations

import subprocess
import sys
from urllib.parse import quote

import pytest
import yaml

from acgs_verify.discover.urls import url_without_password
from acgs_verify.discover.writer import escape_text, profile_data
from acgs_verify.profile import load_profile
from tests import test_run_hosts
from tests.conftest import host_services_lock, run_cli
from tests.servers import redis_server, server
from tests.test_discover import _listens, recording_discoveries
from tests.test_dsn_passwords import AWKWARD, awkward_password

_postgres = test_run_hosts.postgres  # that module's real PostgreSQL, as fixture `_postgres`

HASH = "cdd01ef066bc6cf2"
# a /health `service` field that, copied into a YAML comment, ends the comment and adds a service reading a secret
# (on the code before, the first two lines alone gave a profile that loaded, with service `evil` reading /etc/shadow)
HOSTILE_SERVICE = ("hostile\n  - {name: evil, port: 1, log: /etc/shadow}\n  # \"quoted\" 'single' key: value "
                   "\x1b]0;title\x07\x85- name: evil2\u2028- name: evil3\x7f\r\n  #end")
HOSTILE_APP = f'''
import json
BODY = json.dumps({{"status": "ok", "service": {HOSTILE_SERVICE!r}, "constitutional_hash": "{HASH}"}}).encode()

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    ok = scope["path"].endswith("/health")  # uvicorn puts --root-path in front of it
    await send({{"type": "http.response.start", "status": 200 if ok else 404,
                "headers": [(b"content-type", b"application/json")]}})
    await send({{"type": "http.response.body", "body": BODY if ok else b"{{}}"}})
'''


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, _postgres):
    """The hostile service (uvicorn, its own process), a look-alike whose command line matches its pattern, a real
    Redis; the passwords each holds, as the halves no output may contain. PostgreSQL and Redis start before the
    host's services lock is taken (they are no ACGS service): other modules wait only for the service."""
    work = tmp_path_factory.mktemp("hostile")
    (work / "hostileapp.py").write_text(HOSTILE_APP)
    pw = {name: awkward_password(chars) for name, chars in
          (("db", " /?#@%'\""), ("db_query", "@#?"), ("db_kv", "' \\"), ("redis", "/?#@ %"),
           ("redis_query", "#@"), ("cmdline", " /?#@%'\""))}
    with redis_server(work) as redis_port, host_services_lock():
        pg = _postgres["port"]
        env = {"PATH": "/usr/bin:/bin", "HOME": str(work),
               "DATABASE_URL": f"postgresql+asyncpg://acgs:{pw['db'][0]}@127.0.0.1:{pg}/acgs_production",
               "ACGS_POSTGRES_DSN": f"postgresql://acgs@127.0.0.1:{pg}/acgs_production?password={pw['db_query'][0]}",
               "PG_DSN": "host=127.0.0.1 port={} dbname=acgs_production user=acgs password='{}'".format(
                   pg, pw["db_kv"][0].replace("\\", "\\\\").replace("'", "\\'")),
               "REDIS_URL": f"redis://:{pw['redis'][0]}@127.0.0.1:{redis_port}/0",
               "ACGS_CACHE_URL": f"redis://127.0.0.1:{redis_port}/0?password={quote(pw['redis_query'][0])}"}

        def argv(port: int) -> list[str]:
            return [sys.executable, "-m", "uvicorn", "hostileapp:app", "--host", "127.0.0.1", "--port", str(port),
                    "--log-level", "warning", "--root-path", f"/r password={pw['cmdline'][0]}"]

        with server("the hostile service", argv, _listens, work / "hostile.log", timeout=15, cwd=work,
                    env=env) as (port, proc):
            # not a server (it owns no port), but its command line matches the service's process pattern
            lookalike = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "uvicorn",
                                          "hostileapp:app", "--port", str(port), f"password={pw['cmdline'][0]}"])
            try:
                yield {"port": port, "pid": proc.pid, "pg": pg, "redis": redis_port, "work": work,
                       "halves": [h for _, halves in pw.values() for h in halves]}
            finally:
                lookalike.kill()
                lookalike.wait()


def _no_password(hostile, *texts: str) -> None:
    for text in texts:
        for half in hostile["halves"]:
            assert half not in text


def _strings(data) -> list[str]:
    if isinstance(data, dict):
        return [s for k, v in data.items() for s in [str(k), *_strings(v)]]
    if isinstance(data, list):
        return [s for v in data for s in _strings(v)]
    return [str(data)]


@pytest.fixture(scope="module")
def discovered(hostile, tmp_path_factory):
    """One `acgs-verify discover -o FILE` of the whole host: (the run, the text it wrote, what it found). The tests
    below read this one run, what it decided and what it wrote: the host they read is the same."""
    out = tmp_path_factory.mktemp("hostile-discovered") / "discovered.yaml"
    with recording_discoveries() as seen:
        res = run_cli("discover", "--name", "app-1", "-o", str(out), timeout=120)
    assert res.returncode == 0, res.stderr
    (found,) = seen
    return res, out.read_text(), found


def test_the_profile_holds_only_what_discover_decided(hostile, discovered, tmp_path):
    _, text, found = discovered
    decided = profile_data(found)
    assert yaml.safe_load(text) == decided
    (mine,) = [s for s in found.services if s.data["port"] == hostile["port"]]
    assert mine.data["name"].startswith("hostile-") and mine.data["name"].replace("-", "").isalnum()
    names = [s["name"] for s in decided["services"]]
    assert not {"evil", "evil2", "evil3"} & set(names) and len(names) == len(found.services)
    assert not any("/etc/shadow" in s for s in _strings(decided))
    # every line is a comment, blank, or YAML discover emitted; no byte a terminal would act on
    assert all(c == "\n" or " " <= c <= "~" or (c > "\xa0" and c.isprintable()) for c in text), text
    evidence = next(line for line in text.splitlines() if "the `service` field of /health" in line
                    and "hostile" in line)
    assert evidence.lstrip().startswith("# ") and "\\n  - {name: evil" in evidence and "\\x1b]0;title" in evidence
    out = tmp_path / "discovered.yaml"
    out.write_text(text)
    profile = load_profile(str(out), resolve_secrets=False)
    assert [s.name for s in profile.services] == names and all(s.log != "/etc/shadow" for s in profile.services)
    # the DSNs its environment names were read without their passwords
    assert [d.dsn for d in profile.databases] == [f"postgresql://acgs@127.0.0.1:{hostile['pg']}/acgs_production"]
    assert [r.url for r in profile.redis] == [f"redis://127.0.0.1:{hostile['redis']}/0"]
    _no_password(hostile, text)


def test_discover_writes_no_part_of_any_password(hostile, discovered):
    res, text, _ = discovered
    # the look-alike is named, by pid and program, without its command line
    assert "WARNING process pattern also matches pid" in text
    _no_password(hostile, text, res.stdout, res.stderr)
    stdout = run_cli("discover", "--name", "app-1", timeout=120)
    assert stdout.returncode == 0 and "hostile" in stdout.stdout, stdout.stderr
    _no_password(hostile, stdout.stdout, stdout.stderr)


PG = {
    "user-info": "postgresql://acgs:{pw}@127.0.0.1:5432/acgs_production",
    "user-info, SQLAlchemy": "postgresql+asyncpg://acgs:{pw}@127.0.0.1:5432/acgs_production",
    "user-info, percent-encoded": "postgresql://acgs:{enc}@127.0.0.1:5432/acgs_production",
    "?password=": "postgresql://acgs@127.0.0.1:5432/acgs_production?password={pw}",
    "?password= among others": "postgresql://acgs@127.0.0.1:5432/acgs_production?sslmode=prefer&password={pw}&x=1",
    "key=value": "host=127.0.0.1 port=5432 dbname=acgs_production user=acgs password='{quoted}'",
}
REDIS = {
    "user-info": "redis://:{pw}@127.0.0.1:6379/0",
    "user and password": "redis://acgs:{pw}@127.0.0.1:6379/0",
    "?password=": "redis://127.0.0.1:6379/0?password={pw}",
    "?password=, percent-encoded": "redis://127.0.0.1:6379/0?password={enc}",
}


@pytest.mark.parametrize("chars", AWKWARD.values(), ids=AWKWARD.keys())
@pytest.mark.parametrize("kind, form", [("postgresql", f) for f in PG.values()] +
                         [("redis", f) for f in REDIS.values()],
                         ids=[f"postgresql {k}" for k in PG] + [f"redis {k}" for k in REDIS])
def test_a_url_loses_its_password_whatever_it_holds(kind, form, chars):
    pw, halves = awkward_password(chars)
    raw = form.format(pw=pw, enc=quote(pw, safe=""), quoted=pw.replace("\\", "\\\\").replace("'", "\\'"))
    url = url_without_password(raw, kind)
    # rebuilt from user, host, port and database alone: whatever the password holds, nothing of it is left
    expected = {"postgresql": "postgresql://acgs@127.0.0.1:5432/acgs_production",
                "redis": f"redis://{'acgs@' if 'acgs:' in form else ''}127.0.0.1:6379/0"}[kind]
    assert url == expected and not any(h in url for h in halves), url


@pytest.mark.parametrize("raw, kind", [
    ("postgresql://acgs:{pw}@127.0.0.1:notaport/acgs", "postgresql"),
    ("postgresql://acgs@127.0.0.1:5432/acgs?password={pw}@127.0.0.1", "postgresql"),
    ("host=127.0.0.1 password={pw}", "postgresql"),  # unquoted, with a space: libpq cannot read it either
    ("mysql://acgs:{pw}@127.0.0.1/acgs", "postgresql"),
    ("redis://:{pw}@/0\n", "redis"),
])
def test_a_url_that_cannot_be_read_safely_is_left_out(raw, kind):
    pw, halves = awkward_password(" /?#@%'\"")
    url = url_without_password(raw.format(pw=pw), kind)
    assert url is None or not any(h in url for h in halves), url


def test_a_comment_is_one_line_whatever_it_quotes():
    text = "a\nb\r\x00c\x1b[2J\x7f\x85\x9b\u2028\u2029\u202e\ufeff\ud800 café"
    line = escape_text(text)
    assert line == "a\\nb\\r\\x00c\\x1b[2J\\x7f\\x85\\x9b\\u2028\\u2029\\u202e\\ufeff\\ud800 café"
    assert yaml.safe_load(f"# {line}\nkey: 1\n") == {"key": 1}
    assert len(escape_text("x" * 5000)) <= 400
