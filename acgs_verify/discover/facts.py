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
from urllib.parse import urlsplit, urlunsplit

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


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = (f"{user}@" if user else "") + _bracket(host) + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _pg_scheme(dsn: str) -> str:
    """postgresql+asyncpg://... (SQLAlchemy) is a postgresql:// URL to psycopg."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", dsn)


def _short(args: str) -> str:
    return args if len(args) <= 100 else args[:97] + "..."


def _prune() -> str:
    names = " -o ".join(f"-name {shlex.quote(n)}" for n in SKIP_DIRS)
    return f"\\( {names} \\) -prune -o"


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
