"""A database DSN or Redis URL of the plainest form is accepted without importing psycopg or redis-py
(profile/model.py, _PLAIN_URL); the verdict is the library's own reading's, for every URL of these."""

from __future__ import annotations

import itertools

import pytest

from acgs_verify.profile.model import (
    _plain,
    checked_postgres_url,
    checked_redis_url,
    read_postgres_url,
    read_redis_url,
)

USERS = ["", "acgs@", "a.b_c-d@", "-x@", "ac:pw@", "ac%40x@"]
HOSTS = ["127.0.0.1", "db-1.internal", "a..b", "-h", "[::1]", "h\u0663"]
PORTS = ["", ":5432", ":0", ":65535", ":65536", ":\u0663", ":"]
PATHS = {"postgres": ["", "/acgs_production", "/", "/_x", "/x?password=p"],
         "redis": ["", "/0", "/", "/x", "/\u0663"]}
SCHEMES = {"postgres": ["postgresql://", "postgres://", "pg://"], "redis": ["redis://", "rediss://", "Redis://"]}
READ = {"postgres": (checked_postgres_url, read_postgres_url), "redis": (checked_redis_url, read_redis_url)}


def _urls(kind: str):
    for parts in itertools.product(SCHEMES[kind], USERS, HOSTS, PORTS, PATHS[kind]):
        yield "".join(parts)


def _verdict(read, url: str) -> str:
    try:
        return f"ok {read(url)}"
    except Exception as exc:  # noqa: BLE001 -- the withheld error, whichever it is, is the verdict
        return f"refused {type(exc).__name__} {exc}"


@pytest.mark.parametrize("kind", ["postgres", "redis"])
def test_the_plain_form_gets_the_librarys_verdict(kind):
    checked, by_library = READ[kind]
    plain = [url for url in _urls(kind) if _plain(kind, url)]
    assert len(plain) > 20  # the fast path is taken, for many forms
    verdicts = {url: (_verdict(checked, url), _verdict(by_library, url)) for url in _urls(kind)}
    assert not {url: both for url, both in verdicts.items() if both[0] != both[1]}


def test_a_url_with_a_password_never_takes_the_plain_form():
    for url in ("postgresql://acgs:pw@h:5432/db", "postgresql://h/db?password=pw", "redis://:pw@h:6379/0",
                "redis://u:pw@h/0", "redis://h/0?password=pw"):
        assert not _plain("redis" if url.startswith("redis") else "postgres", url), url
