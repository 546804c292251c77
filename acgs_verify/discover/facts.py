"""Small readers of what ps, ss and a server say: which server a command line runs, its app and port, patterns
anchored on them, URLs without passwords, the certificate a TLS port hands out.

>>> _server_kind("python -m uvicorn app.main:app --port 8016"), _port_token("uvicorn a:b --port 8016", 8016)
('uvicorn', '--port 8016')
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
import socket
import ssl
from pathlib import PurePosixPath

SERVERS = ("uvicorn", "gunicorn", "hypercorn")
HTTP_TIMEOUT = 2.0
SKIP_DIRS = ("venv", ".venv", ".git", "node_modules", "__pycache__")






def _esc(text: str) -> str:
    """re.escape, without the backslashes it puts before `-`, ` ` and `=` (harmless there, but hard to read)."""
    return re.escape(text).replace("\\-", "-").replace("\\ ", " ").replace("\\=", "=")


def _argv(args: str) -> list[str]:
    try:
        return shlex.split(args)
    except ValueError:
        return args.split()


def _program(args: str) -> str:
    argv = _argv(args)
    return PurePosixPath(argv[0]).name if argv else ""


def _server_kind(args: str) -> str | None:
    """uvicorn/gunicorn/hypercorn, run as a script, `python -m NAME`, or a gunicorn master's title."""
    argv = _argv(args)
    for i, a in enumerate(argv[:4]):
        name = PurePosixPath(a).name.rstrip(":")
        if name in SERVERS:
            return name
        if a == "-m" and i + 1 < len(argv) and argv[i + 1] in SERVERS:
            return argv[i + 1]
    return None


def _app_of(args: str) -> str | None:
    """The app the server runs: its `module:attribute` argument."""
    for a in _argv(args)[1:]:
        if not a.startswith("-") and re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.()]*", a):
            return a
    m = re.search(r"\[([\w.]+:[\w.]+)\]", args)  # gunicorn: master [app:app]
    return m.group(1) if m else None


def _port_token(args: str, port: int) -> str | None:
    """The part of a command line that names `port`: `--port 8016`, `--port=8016`, `-p 8016`, `--bind 0.0.0.0:8016`."""
    argv = _argv(args)
    for i, a in enumerate(argv):
        if a in ("--port", "-p", "--bind", "-b") and i + 1 < len(argv):
            value = argv[i + 1]
            if value == str(port) or value.endswith(f":{port}"):
                return f"{a} {value}"
        elif "=" in a and a.split("=", 1)[0] in ("--port", "--bind") and a.endswith((f"={port}", f":{port}")):
            return a
    return None


def _flag(args: str, flag: str) -> str | None:
    argv = _argv(args)
    return next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag), None)


def _anchored(args: str, port: int) -> str | None:
    """A pattern for a server that is not Python: its program, its data directory and its port where named."""
    program = _program(args)
    if not program:
        return None
    parts = [f"(^|/){_esc(program)}"]
    data_dir = _flag(args, "-D")
    if data_dir:
        parts.append("-D " + _esc(data_dir))
    token = _port_token(args, port)
    if token:
        parts.append(_esc(token))
    return " .*".join(parts) + "( |$)"


def _connect_address(addresses) -> str:
    for a in addresses:
        a = a.strip("[]")
        if a in ("0.0.0.0", "*", "::", ""):
            return "127.0.0.1"
        return a.split("%")[0]
    return "127.0.0.1"


def _bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _json_field(body: str, key: str) -> str:
    try:
        value = json.loads(body).get(key)
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""




def _module_name(app: str | None) -> str | None:
    if not app:
        return None
    module, _, attr = app.partition(":")
    last = module.rsplit(".", 1)[-1]
    base = attr if last in ("main", "app", "server", "asgi", "wsgi", "service_app") else last
    return _dashed(re.sub(r"[_-]service$", "", base.split("(")[0])) or None


def _dashed(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text.replace("_", "-")).strip("-").lower()


def _stem_matches(stem: str, name: str) -> bool:
    return bool(name) and stem.replace("_", "-").removesuffix("-service") == name


def _common_dir(paths: list[str]) -> str:
    return posixpath.commonpath(paths) if paths else ""


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


def _prune() -> list[str]:
    """find's words that skip SKIP_DIRS: `( -name venv -o ... ) -prune -o`, for host.command() to quote."""
    names = [w for n in SKIP_DIRS for w in ("-o", "-name", n)][1:]
    return ["(", *names, ")", "-prune", "-o"]


def _served_cert(address: str, port: int) -> bytes | None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((address, port), timeout=HTTP_TIMEOUT) as raw, \
                ctx.wrap_socket(raw, server_hostname=address) as tls:
            return tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None
