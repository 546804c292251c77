"""Findings as commented profile YAML, and `--merge`: new entries added to a user's profile, their text untouched.

>>> text = render(found)                   # loads with profile.load_profile; each entry under its evidence
>>> merged, added = merge(user_text, found)  # user's lines kept byte for byte; new entries in marked blocks

Values are dumped with yaml.safe_dump (quoting stays PyYAML's business); comments are written around them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import yaml

from acgs_verify.discover.finders import Discovery, Item

MARK = "added by acgs-verify discover"


def _dump(value) -> list[str]:
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False, width=1000,
                          allow_unicode=True).rstrip("\n").splitlines()


def _comments(lines: list[str], indent: str) -> list[str]:
    return [f"{indent}# {line}" for line in lines]


def _list_item(item: Item, indent: str = "  ") -> list[str]:
    """`- key: value` lines of one entry under its evidence; a candidate is commented out as a whole."""
    if len(item.data) == 1 and "name" not in item.data:  # a plain value: a certificate path, an endpoint URL
        lines = [f"{indent}{x}" for x in _dump(list(item.data.values()))]
    else:
        body = _dump(item.data)
        lines = [f"{indent}- {body[0]}"] + [f"{indent}  {x}" for x in body[1:]]
    if item.candidate:
        lines = [f"{indent}# {x[len(indent):]}" for x in lines]
    return _comments(item.evidence, indent) + lines


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


def render(found: Discovery) -> str:
    """The whole profile as YAML text with evidence comments and TODOs."""
    h = found.host.data
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [f"# acgs-verify discover: {h['name']} ({h['address']}, backend {h['backend']}), read as "
           f"{found.user} on {now}.",
           "# Each entry carries its evidence as a comment; TODO lines name what could not be found.",
           "# No secret is written: passwords come from the variables that password_env names.",
           f"description: discovered on {h['name']} by acgs-verify discover"]
    if found.constitutional_hash:
        out += ["# the constitutional hash the services' /health answers carry",
                f"constitutional_hash: {found.constitutional_hash}"]
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
        out += ["", "# ---- what discover could not settle"] + [f"# TODO {t}" if not t.startswith(("TODO", "note"))
                                                                  else f"# {t}" for t in found.todos]
    return "\n".join(out) + "\n"


def summary_line(found: Discovery) -> str:
    """`discovered 6 services, 1 database, 1 cache, backups, 1 certificate on app-1`."""
    def n(count: int, word: str) -> str:
        return f"{count} {word}{'' if count == 1 else ('es' if word.endswith('ch') else 's')}"

    parts = [n(len(found.services), "service"), n(len(found.databases), "database"), n(len(found.redis), "cache")]
    if "backups" in found.paths:
        parts.append("backups")
    parts.append(n(len(found.certificates), "certificate"))
    if found.candidates:
        parts.append(f"{len(found.candidates)} left as candidates")
    return f"discovered {', '.join(parts)} on {found.host.data['name']}"


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
        text += f"\n# ---- {MARK} ({len(added)} entries new on {found.host.data['name']})\n" + "\n".join(tail) + "\n"
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
