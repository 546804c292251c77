"""Readers of what a command line says: which server it runs, its app and port, patterns anchored on them, and
the few words discover hands to `find`. Pure functions of text; nothing here touches a host.

>>> server_kind("python -m uvicorn app.main:app --port 8016"), port_token("uvicorn a:b --port 8016", 8016)
('uvicorn', '--port 8016')
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from pathlib import PurePosixPath

SERVERS = ("uvicorn", "gunicorn", "hypercorn")
HTTP_TIMEOUT = 2.0
SKIP_DIRS = ("venv", ".venv", ".git", "node_modules", "__pycache__")


def esc(text: str) -> str:
    """re.escape, without the backslashes it puts before `-`, ` ` and `=` (harmless there, but hard to read)."""
    return re.escape(text).replace("\\-", "-").replace("\\ ", " ").replace("\\=", "=")


def split_args(args: str) -> list[str]:
    try:
        return shlex.split(args)
    except ValueError:
        return args.split()


def program(args: str) -> str:
    argv = split_args(args)
    return PurePosixPath(argv[0]).name if argv else ""


def server_kind(args: str) -> str | None:
    """uvicorn/gunicorn/hypercorn, run as a script, `python -m NAME`, or a gunicorn master's title."""
    argv = split_args(args)
    for i, a in enumerate(argv[:4]):
        name = PurePosixPath(a).name.rstrip(":")
        if name in SERVERS:
            return name
        if a == "-m" and i + 1 < len(argv) and argv[i + 1] in SERVERS:
            return argv[i + 1]
    return None


def app_of(args: str) -> str | None:
    """The app the server runs: its `module:attribute` argument."""
    for a in split_args(args)[1:]:
        if not a.startswith("-") and re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.()]*", a):
            return a
    m = re.search(r"\[([\w.]+:[\w.]+)\]", args)  # gunicorn: master [app:app]
    return m.group(1) if m else None


def port_token(args: str, port: int) -> str | None:
    """The part of a command line that names `port`: `--port 8016`, `--port=8016`, `-p 8016`, `--bind 0.0.0.0:8016`."""
    argv = split_args(args)
    for i, a in enumerate(argv):
        if a in ("--port", "-p", "--bind", "-b") and i + 1 < len(argv):
            value = argv[i + 1]
            if value == str(port) or value.endswith(f":{port}"):
                return f"{a} {value}"
        elif "=" in a and a.split("=", 1)[0] in ("--port", "--bind") and a.endswith((f"={port}", f":{port}")):
            return a
    return None


def flag(args: str, flag: str) -> str | None:
    argv = split_args(args)
    return next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag), None)


def anchored(args: str, port: int) -> str | None:
    """A pattern for a server that is not Python: its program, its data directory and its port where named."""
    name = program(args)
    if not name:
        return None
    parts = [f"(^|/){esc(name)}"]
    data_dir = flag(args, "-D")
    if data_dir:
        parts.append("-D " + esc(data_dir))
    token = port_token(args, port)
    if token:
        parts.append(esc(token))
    return " .*".join(parts) + "( |$)"


def connect_address(addresses) -> str:
    for a in addresses:
        a = a.strip("[]")
        if a in ("0.0.0.0", "*", "::", ""):
            return "127.0.0.1"
        return a.split("%")[0]
    return "127.0.0.1"


def bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def json_field(body: str, key: str) -> str:
    try:
        value = json.loads(body).get(key)
    except (ValueError, AttributeError):
        return ""
    return value if isinstance(value, str) else ""




def module_name(app: str | None) -> str | None:
    if not app:
        return None
    module, _, attr = app.partition(":")
    last = module.rsplit(".", 1)[-1]
    base = attr if last in ("main", "app", "server", "asgi", "wsgi", "service_app") else last
    return dashed(re.sub(r"[_-]service$", "", base.split("(")[0])) or None


def dashed(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", text.replace("_", "-")).strip("-").lower()


def stem_matches(stem: str, name: str) -> bool:
    return bool(name) and stem.replace("_", "-").removesuffix("-service") == name


def common_dir(paths: list[str]) -> str:
    return posixpath.commonpath(paths) if paths else ""


def prune() -> list[str]:
    """find's words that skip SKIP_DIRS: `( -name venv -o ... ) -prune -o`, for host.command() to quote."""
    names = [w for n in SKIP_DIRS for w in ("-o", "-name", n)][1:]
    return ["(", *names, ")", "-prune", "-o"]
