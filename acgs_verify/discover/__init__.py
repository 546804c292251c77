"""`acgs-verify discover`: a commented profile from what runs on one host.

>>> text, summary = discover(Host(name="app-1"), port_offset=0)
>>> summary
'discovered 6 services, 1 database, 1 cache, backups, 1 certificate on app-1'
>>> print(text)          # YAML for profile.load_profile, each field with its evidence as a comment

Read-only: ps, ss, /proc/PID/{cmdline,cwd,environ,fd,cgroup}, `find`/`ls` of the usual places, and HTTP GETs of the
health paths. Passwords are never written: a DSN found in a process environment loses its password and the profile
names `password_env` instead. `finders` runs one module per subject (services, postgres, redis, apptree, backups,
tls) over one `reader.HostReader`; `writer` turns findings into YAML text (and merges).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from acgs_verify.redact import last_line, printable

if TYPE_CHECKING:
    from pathlib import Path

    from acgs_verify.discover.model import Discovery

__all__ = ["Discovery", "Item", "discover", "find", "merge", "render", "summary_line"]
# imported on first use: the CLI reads add_arguments at every start, `acgs-verify run` included
_LAZY = {"Discovery": "model", "Item": "model", "find": "finders",
         "merge": "writer", "render": "writer", "summary_line": "writer"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


def discover(host, port_offset: int = 0, connect_timeout: float = 3) -> tuple[str, str, Discovery]:
    """(profile text, one-line summary, findings) for `host` (a profile.Host); raises ProbeError when the host
    cannot be reached."""
    from acgs_verify.discover.finders import find
    from acgs_verify.discover.writer import render, summary_line

    found = find(host, port_offset=port_offset, connect_timeout=connect_timeout)
    return render(found), summary_line(found), found


def add_arguments(p) -> None:
    """The `discover` subcommand's options (cli.py adds the subparser)."""
    from pathlib import Path

    p.add_argument("--host", default="127.0.0.1", metavar="ADDRESS", help="the host to read (default: this one)")
    p.add_argument("--backend", choices=["local", "ssh", "paramiko"], default=None,
                   help="how to reach it (default: local for 127.0.0.1/localhost, else ssh)")
    p.add_argument("--name", default=None, help="the host's name in the profile (default: its hostname)")
    p.add_argument("--user", default=None, help="ssh user")
    p.add_argument("--port", type=int, default=None, help="ssh port")
    p.add_argument("--identity-file", default=None, metavar="PATH", help="ssh private key (default: the agent)")
    p.add_argument("--known-hosts", default=None, metavar="PATH",
                   help="known_hosts to check the host key against (default: ~/.ssh/known_hosts)")
    p.add_argument("--ssh-config", default=None, metavar="PATH",
                   help="an ssh_config to include (ProxyJump for bastions)")
    p.add_argument("--no-strict-host-key-checking", action="store_true",
                   help="accept an unknown host key (a lab, never production)")
    p.add_argument("--become", action="store_true", help="read other users' sockets and /proc through sudo -n")
    p.add_argument("--port-offset", type=int, default=0, metavar="N",
                   help="the deployment's ports are the runbook's plus N (a sandbox, a second stack on one host)")
    p.add_argument("--connect-timeout", type=float, default=3.0, metavar="SECONDS",
                   help="give up on the host after this long (default: 3)")
    p.add_argument("-o", "--output", type=Path, default=None, metavar="FILE", help="write here instead of stdout")
    p.add_argument("--force", action="store_true", help="overwrite FILE")
    p.add_argument("--merge", type=Path, default=None, metavar="EXISTING",
                   help="add what is new to this profile, keeping every line of it")


def run(args) -> int:
    """`acgs-verify discover ...`: profile on stdout or in FILE, one summary line on stderr; 3 on bad input or an
    unreachable host (one line)."""
    import os
    import sys

    from acgs_verify.discover.writer import merge
    from acgs_verify.errors import ProbeError
    from acgs_verify.profile import Host, ProfileError, load_profile

    out = args.output
    if out is not None and out.exists() and not args.force:
        print(f"acgs-verify: error: {out} exists; add --force to overwrite it", file=sys.stderr)
        return 3
    user_text = None
    if args.merge is not None:
        try:
            user_text = args.merge.read_text(encoding="utf-8")
            load_profile(str(args.merge), resolve_secrets=False)  # a broken profile stops here, with its own one line
        except OSError as exc:
            print(f"acgs-verify: error: --merge {args.merge}: {exc.strerror}", file=sys.stderr)
            return 3
    local = args.host in ("127.0.0.1", "localhost", "::1")
    backend = args.backend or ("local" if local else "ssh")
    name = args.name or (os.uname().nodename.split(".")[0] if backend == "local" else args.host)
    name = "".join(c if c.isalnum() or c in "_.-" else "-" for c in name) or "host"
    try:
        host = Host(name=name, address=args.host, backend=backend, user=args.user, port=args.port,
                    identity_file=args.identity_file, known_hosts=args.known_hosts, ssh_config=args.ssh_config,
                    strict_host_key_checking=not args.no_strict_host_key_checking, become=args.become)
    except ValueError as exc:
        print(f"acgs-verify: error: discover: {last_line(str(exc))}", file=sys.stderr)
        return 3
    try:
        text, summary, found = discover(host, port_offset=args.port_offset, connect_timeout=args.connect_timeout)
    except ProbeError as exc:
        print(f"acgs-verify: error: discover {host.name} ({host.address}): {exc}", file=sys.stderr)
        return 3
    if user_text is not None:
        text, added = merge(user_text, found)
        summary += f"; merged into {args.merge}: {len(added)} new" + (f" ({', '.join(added)})" if added else "")
    if out is None:
        sys.stdout.write(text)
    else:
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        try:
            # what discover writes must load: a bug here is not the user's to find later
            load_profile(str(tmp), resolve_secrets=False)
        except ProfileError as exc:
            tmp.unlink()
            print(f"acgs-verify: internal error: the discovered profile does not load: {exc}", file=sys.stderr)
            return 3
        os.replace(tmp, out)
    print(summary, file=sys.stderr)
    print(next_line(text, out), file=sys.stderr)
    return 0


def next_line(text: str, out: Path | None) -> str:
    """What to do with the profile: the variables it names for secrets (it holds none), and, where a sandbox runs,
    where that sandbox keeps its passwords.

    >>> next_line(text, Path("discovered.yaml"))
    'next: export ACGS_DB_PASSWORD ACGS_REDIS_PASSWORD (the profile names them; it holds no secret), then
    acgs-verify run --profile discovered.yaml'
    """
    import os
    import shlex
    from pathlib import Path

    import yaml

    data = yaml.safe_load(text) or {}
    items = [*(data.get("databases") or []), *(data.get("redis") or []), *(data.get("hosts") or [])]
    names = sorted({v for item in items if isinstance(item, dict)
                    for k, v in item.items() if k.endswith("_env") and isinstance(v, str) and v})
    run = f"acgs-verify run --profile {shlex.quote(str(out)) if out else 'FILE'}"
    line = (f"next: export {' '.join(names)} (the profile names them; it holds no secret), then {run}" if names
            else f"next: {run} (the profile names no password variable)")
    from acgs_verify.sandbox.constants import SECRET_FILES
    from acgs_verify.sandbox.manager import running_profile

    sandbox = Path(os.environ.get("ACGS_SANDBOX_DIR", ".sandbox"))
    if names and running_profile(sandbox)[0] is not None:
        line += (f"; a sandbox runs in {sandbox}: its passwords are in {sandbox / 'secrets'} "
                 f"({SECRET_FILES['db']}, {SECRET_FILES['redis']})")
    return printable(line)
