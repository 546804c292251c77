"""Findings as commented profile YAML, and `--merge`: new entries added to a user's profile, their text untouched.

>>> text = render(found)                   # loads with profile.load_profile; each entry under its evidence
>>> yaml.safe_load(text) == profile_data(found)   # the profile is exactly the data discover decided on
True
>>> merged, added = merge(user_text, found)  # user's lines kept byte for byte; new entries in marked blocks

What a target says (a /health body, a path, a variable's name, a user name) is data: every value is written by
PyYAML's safe emitter, never spliced into YAML text, and every comment is one line with control characters escaped, so
nothing a target says can end a comment and add a line of its own.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import yaml

from acgs_verify.discover.model import Discovery, Item
from acgs_verify.redact import cut, printable
from acgs_verify.words import plural

MARK = "added by acgs-verify discover"
COMMENT_MAX = 400  # a comment is evidence for a human, not a copy of what a target said


class _OneLineDumper(yaml.SafeDumper):
    """yaml.safe_dump's emitter, with every string that holds a character outside printable ASCII (a line break,
    an escape sequence, U+2028) written double-quoted with escapes: each scalar stays on its own line."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = None if all(" " <= c <= "~" for c in value) else '"'
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_OneLineDumper.add_representer(str, _represent_str)


def _dump(value) -> list[str]:
    return yaml.dump(value, Dumper=_OneLineDumper, sort_keys=False, default_flow_style=False, width=1000,
                     allow_unicode=False).rstrip("\n").splitlines()


def escape_text(text: str) -> str:
    """Text as one line a YAML comment (and a terminal) can hold: line breaks, C0/C1 controls, DEL, and other
    characters that do not print (bidi overrides, U+2028) become backslash escapes, as in a Python literal."""
    line = printable(text)
    return line if len(line) <= COMMENT_MAX else cut(line, COMMENT_MAX - 3) + "..."


def _comment(text: str, indent: str = "") -> str:
    return f"{indent}# {escape_text(text)}"


def _comments(lines: list[str], indent: str) -> list[str]:
    return [_comment(line, indent) for line in lines]


def _list_item(item: Item, indent: str = "  ") -> list[str]:
    """`- key: value` lines of one entry under its evidence; a candidate is commented out as a whole."""
    lines = [f"{indent}{x}" for x in _dump([_entry(item)])]
    if item.candidate:
        lines = [f"{indent}# {x[len(indent):]}" for x in lines]
    return _comments(item.evidence, indent) + lines


def _entry(item: Item):
    """The value an entry stands for: a plain value (a certificate path, an endpoint URL) or its mapping."""
    if len(item.data) == 1 and "name" not in item.data:
        return next(iter(item.data.values()))
    return item.data


def _section(key: str, items: list[Item], candidates: list[Item] = ()) -> list[str]:
    if not items and not candidates:
        return []
    out = [f"{key}:" if items else f"{key}: []"]
    for item in items:
        out += _list_item(item)
    if candidates:
        out.append("  # ---- candidates, not checked: uncomment an entry (and fix its name) to check it")
        for item in candidates:
            out += _list_item(item)
    return out


def _mapping(key: str, entries: dict[str, Item]) -> list[str]:
    out = [f"{key}:"]
    for name, item in entries.items():
        out += _comments(item.evidence, "  ")
        out += [f"  {x}" for x in _dump({name: item.data["value"]})]
    return out


def _host_item(found: Discovery) -> Item:
    data = dict(found.host.data)
    return Item(data, found.host.evidence)


def _description(found: Discovery) -> str:
    return f"discovered on {found.host.data['name']} by acgs-verify discover"


def profile_data(found: Discovery) -> dict:
    """What render(found) holds once loaded: the profile discover decided on, as data (candidates, commented out,
    are not in it)."""
    data: dict = {"description": _description(found)}
    if found.constitutional_hash:
        data["constitutional_hash"] = found.constitutional_hash
    data["hosts"] = [_entry(_host_item(found))]
    if found.services or found.candidates:
        data["services"] = [_entry(i) for i in found.services]
    data["databases"] = [_entry(i) for i in found.databases]
    data["redis"] = [_entry(i) for i in found.redis]
    if found.paths:
        data["paths"] = {k: i.data["value"] for k, i in found.paths.items()}
    for key in ("certificates", "tls_endpoints"):
        if getattr(found, key):
            data[key] = [_entry(i) for i in getattr(found, key)]
    if found.tls_ca:
        data["tls"] = dict(found.tls_ca.data)
    if found.security:
        data["security"] = {k: i.data["value"] for k, i in found.security.items()}
    return data


def render(found: Discovery) -> str:
    """The whole profile as YAML text with evidence comments and TODOs; yaml.safe_load of it is
    profile_data(found)."""
    h = found.host.data
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [_comment(f"acgs-verify discover: {h['name']} ({h['address']}, backend {h['backend']}), read as "
                    f"{found.user} on {now}."),
           "# Each entry carries its evidence as a comment; TODO lines name what could not be found.",
           "# No secret is written: passwords come from the variables that password_env names."]
    out += _dump({"description": _description(found)})
    if found.constitutional_hash:
        out += ["# the constitutional hash the services' /health answers carry"]
        out += _dump({"constitutional_hash": found.constitutional_hash})
    else:
        out.append("# TODO constitutional_hash: no service answered with one; the runbook's is the default")
    out += [""] + _section("hosts", [_host_item(found)])
    out += [""] + (_section("services", found.services, found.candidates) or
                   ["# TODO services: no Python ASGI/WSGI server listens on this host"])
    out += [""] + (_section("databases", found.databases) or ["databases: []  # TODO: no PostgreSQL found"])
    out += [""] + (_section("redis", found.redis) or ["redis: []  # TODO: no Redis found"])
    if found.paths:
        out += [""] + _mapping("paths", found.paths)
    if found.certificates:
        out += [""] + _section("certificates", found.certificates)
    if found.tls_endpoints:
        out += [""] + _section("tls_endpoints", found.tls_endpoints)
    if found.tls_ca:
        out += ["", "tls:"] + _comments(found.tls_ca.evidence, "  ") + [f"  {x}" for x in _dump(found.tls_ca.data)]
    if found.security:
        out += [""] + _mapping("security", found.security)
    if found.todos:
        out += ["", "# ---- what discover could not settle"] + [
            _comment(t if t.startswith(("TODO", "note")) else f"TODO {t}") for t in found.todos]
    return "\n".join(out) + "\n"


def summary_line(found: Discovery) -> str:
    """`discovered 6 services, 1 database, 1 cache, backups, 1 certificate on app-1`, and where several servers
    listened, the fact that chose each (`; database chosen: 5433 by content: it holds database acgs_production`)."""
    parts = [plural(len(found.services), "service"), plural(len(found.databases), "database"),
             plural(len(found.redis), "cache")]
    if "backups" in found.paths:
        parts.append("backups")
    parts.append(plural(len(found.certificates), "certificate"))
    if found.candidates:
        parts.append(f"{len(found.candidates)} left as candidates")
    chosen = "".join(f"; {what} chosen: {why}" for what, why in found.decided.items())
    return printable(f"discovered {', '.join(parts)} on {found.host.data['name']}{chosen}")


# --------------------------------------------------------------------------------------------- merge

_LISTS = {"hosts": ("name", "address"), "services": ("name", "port"), "databases": ("name", "dsn"),
          "redis": ("name", "url"), "certificates": (), "tls_endpoints": ()}


def merge(user_text: str, found: Discovery) -> tuple[str, list[str]]:
    """The user's profile with what `found` adds: list entries new by name (or port, DSN, URL, value) and paths the
    user did not set. Every line the user wrote stays as it is; additions sit in blocks marked `# ---- added by
    acgs-verify discover`. Returns (text, what was added)."""
    data = yaml.safe_load(user_text) or {}
    if not isinstance(data, dict):
        raise ValueError("the profile to merge into is not a mapping")
    lines = user_text.splitlines()
    added: list[str] = []
    tail: list[str] = []
    new_lists = {"hosts": [_host_item(found)], "services": found.services, "databases": found.databases,
                 "redis": found.redis, "certificates": found.certificates, "tls_endpoints": found.tls_endpoints}
    for key, items in new_lists.items():
        have = data.get(key) or []
        fresh = [i for i in items if not _present(i, have, _LISTS[key])]
        if not fresh:
            continue
        added += [f"{key}: {_label(i)}" for i in fresh]
        block = [f"  # ---- {MARK}"] + [x for i in fresh for x in _list_item(i)]
        if key not in data:
            tail += [f"{key}:"] + block
        elif not _insert_block(lines, key, block):
            tail += [f"# ---- {MARK}: {key} is not a block list in this file; add these by hand:"]
            tail += ["# " + x for x in block]
    paths = data.get("paths") or {}
    fresh_paths = {k: v for k, v in found.paths.items() if k not in paths}
    if fresh_paths:
        added += [f"paths.{k}" for k in fresh_paths]
        block = [f"  # ---- {MARK}"] + _mapping("paths", fresh_paths)[1:]
        if "paths" not in data:
            tail += ["paths:"] + block
        elif not _insert_block(lines, "paths", block):
            tail += [f"# ---- {MARK}: paths is not a block mapping in this file; add these by hand:"]
            tail += ["# " + x for x in block]
    text = "\n".join(lines) + "\n"
    if tail:
        text += "\n" + _comment(f"---- {MARK} ({len(added)} entries new on {found.host.data['name']})") + "\n"
        text += "\n".join(tail) + "\n"
    return text, added


def _label(item: Item) -> str:
    return str(item.data.get("name") or next(iter(item.data.values())))


def _present(item: Item, have: list, keys: tuple[str, ...]) -> bool:
    if not keys:
        return next(iter(item.data.values())) in have
    return any(isinstance(h, dict) and any(h.get(k) is not None and h.get(k) == item.data.get(k) for k in keys)
               for h in have)


def _insert_block(lines: list[str], key: str, block: list[str]) -> bool:
    """Put `block` at the end of the top-level `key:` block (block style only); False when the key is written in
    flow style (`key: [...]`), where inserting would mean rewriting the user's line."""
    start = next((i for i, x in enumerate(lines) if re.match(rf"{re.escape(key)}\s*:\s*(#.*)?$", x)), None)
    if start is None:
        return False
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t#-"):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():  # blank lines before the next key stay after the block
        end -= 1
    # indent the block like the user's own entries
    first = next((x for x in lines[start + 1:end] if x.strip() and not x.lstrip().startswith("#")), None)
    indent = len(first) - len(first.lstrip()) if first else 2
    shifted = [(" " * indent + x[2:]) if x.startswith("  ") else x for x in block]
    lines[end:end] = shifted
    return True
