"""A DSN or Redis URL from a process environment, rebuilt so that no password survives.

>>> url_without_password("redis://:secret@127.0.0.1:6379/0", "redis")
'redis://127.0.0.1:6379/0'
"""

from __future__ import annotations

import re

# a URL's host part as discover writes it again: [IPv6] or a name, a port, a database name; nothing else survives
_HOST_PART = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*)(?::(?P<port>\d{1,5}))?"
                        r"(?:/(?P<db>[A-Za-z0-9_.$-]*))?")
_USER = re.compile(r"[A-Za-z0-9_.-]{1,63}")
# where a password may start in a URL or conninfo: after the user-info's ':' and in a password parameter
_PASSWORD_PARAM = re.compile(r"(?i)(?:^|[?&;\s])(?:ssl)?password\s*=")
# what a password is cut at when looking for its pieces in what is written
_PIECES = re.compile(r"[\s/?#@%:;&=,'\"\\\[\]]+")
SCHEMES = {"postgresql": re.compile(r"postgres(?:ql)?(?:\+\w+)?://"), "redis": re.compile(r"rediss?://")}


def url_without_password(raw: str, kind: str) -> str | None:
    """A DSN or Redis URL from a process environment as a profile may hold it: rebuilt from its user name, host,
    port and database alone, so no password survives (user-info, ?password=, key=value `password=`), whatever
    characters it holds; None when the value cannot be read that safely. Never raises, never quotes `raw`.

    >>> url_without_password("postgresql+asyncpg://acgs:p/w?x#y@db-1:5432/acgs?sslmode=require", "postgresql")
    'postgresql://acgs@db-1:5432/acgs'
    >>> url_without_password("host=db-1 port=5432 dbname=acgs user=acgs password='a b'", "postgresql")
    'postgresql://acgs@db-1:5432/acgs'
    """
    try:
        url = _rebuilt(raw.strip(), kind)
        if url is None or any(piece in url for piece in _password_pieces(raw)):
            return None
        from acgs_verify.profile.model import checked_postgres_url, checked_redis_url

        # what discover writes must be what the loader accepts, read by the same parsers (libpq's, redis-py's)
        return (checked_postgres_url if kind == "postgresql" else checked_redis_url)(url)
    except Exception:  # noqa: BLE001 (whatever a parser says about the value may quote it)
        return None


def _rebuilt(raw: str, kind: str) -> str | None:
    scheme = SCHEMES[kind].match(raw)
    if scheme is None:
        return _from_conninfo(raw) if kind == "postgresql" and "://" not in raw else None
    rest = raw[scheme.end():]
    cut = _PASSWORD_PARAM.search(rest)
    if cut:  # the query goes anyway; cut first, so an '@' inside a password there is never taken for the user's
        rest = rest[: cut.start()]
    at = rest.rfind("@")  # the last '@': a password may hold '@', a host part never does
    user = rest[:at].split(":", 1)[0] if at >= 0 else ""
    base = re.split(r"[?#]", rest[at + 1:], maxsplit=1)[0]
    m = _HOST_PART.fullmatch(base)
    if m is None or (m["port"] and not 0 < int(m["port"]) < 65536):
        return None
    user = user if _USER.fullmatch(user) else ""
    written = "rediss" if raw.startswith("rediss:") else kind  # TLS stays TLS; postgres+driver is postgresql
    return f"{written}://{user + '@' if user else ''}{base}"


def _from_conninfo(raw: str) -> str | None:
    """key=value conninfo (`host=db-1 port=5432 user=acgs password=...`), read by libpq, as a URL without its
    password."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(raw)
    host, port, db, user = (str(params.get(k, "")) for k in ("host", "port", "dbname", "user"))
    base = (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "") + f"/{db}"
    if _HOST_PART.fullmatch(base) is None or (user and not _USER.fullmatch(user)):
        return None
    return f"postgresql://{user + '@' if user else ''}{base}"


def _password_pieces(raw: str) -> list[str]:
    """Every run of 4 or more characters of whatever in `raw` could be a password: after a user-info's ':' (up to
    its first or its last '@') and after `password=`. None of them may appear in what discover writes."""
    found = []
    scheme = re.match(r"[A-Za-z][\w+.-]*://", raw)
    rest = raw[scheme.end():] if scheme else ""
    cut = _PASSWORD_PARAM.search(rest)
    rest = rest[: cut.start()] if cut else rest  # an '@' in a password parameter is that parameter's
    if ":" in rest.split("@", 1)[0] and "@" in rest:
        found.append(rest.split(":", 1)[1].rsplit("@", 1)[0])
    found += [raw[m.end():] for m in _PASSWORD_PARAM.finditer(raw)]
    return [piece for text in found for piece in _PIECES.split(text) if len(piece) >= 4]


