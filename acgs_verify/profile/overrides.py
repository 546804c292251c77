"""--set dotted.key=VALUE: one profile value replaced from the command line, before the model checks it.

>>> data = {"services": [{"name": "auth", "port": 8016}]}
>>> apply_overrides(data, ["services.auth.port=9000"])
[(('services', 0, 'port'), 'services.auth.port=9000')]
>>> data["services"][0]["port"]
9000

The value is read as a YAML scalar and type-checked by the model afterwards, so `--set
thresholds.db_long_query_seconds=abc` fails as one line naming the option and the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import yaml

from acgs_verify.profile.model import ProfileError
from acgs_verify.profile.source import dotted


def apply_overrides(data: dict, texts: Iterable[str]) -> list[tuple[tuple, str]]:
    """Apply each `--set` text to the raw profile data; returns (the path it set, the text) for error messages."""
    applied = []
    for text in texts:
        key, value = parse_override(text)
        applied.append((_apply_override(data, key, value, text), text))
    return applied


def parse_override(text: str) -> tuple[tuple, Any]:
    """'thresholds.db_long_query_seconds=60' -> (('thresholds', 'db_long_query_seconds'), 60).

    A list item is addressed by index or by its name: services.auth.port=9000 or services.0.port=9000.
    The value is read as a YAML scalar, then type-checked by the model.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or not re.fullmatch(r"[A-Za-z0-9_.-]+", key.strip()):
        raise ProfileError(f"--set {text!r}: expected dotted.key=VALUE, e.g. thresholds.db_long_query_seconds=60")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, dict | list):
        raise ProfileError(f"--set {text!r}: VALUE must be a single value, not a {type(value).__name__}")
    return tuple(key.strip().split(".")), value


def _apply_override(data: dict, path: tuple, value: Any, text: str) -> tuple:
    node: Any = data
    real: list = []
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            idx = _list_index(node, part)
            if idx is None:
                names = [x.get("name") for x in node if isinstance(x, dict)]
                raise ProfileError(f"--set {text}: no item {part!r} in {dotted(real)} (have: {names})")
            real.append(idx)
            if last:
                raise ProfileError(f"--set {text}: cannot replace a whole list item")
            node = node[idx]
        elif isinstance(node, dict):
            real.append(part)
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ProfileError(f"--set {text}: {dotted(real)} is a single value, it has no field {part!r}")
    return tuple(real)


def _list_index(items: list, part: str) -> int | None:
    if part.isdigit():
        return int(part) if int(part) < len(items) else None
    for i, x in enumerate(items):
        if isinstance(x, dict) and x.get("name") == part:
            return i
    return None


