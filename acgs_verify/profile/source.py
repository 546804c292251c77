"""A hardened YAML source: parsed data plus the file and line of every key, for one-line errors.

>>> located = read_yaml(Path("profiles/sandbox.yaml"))
>>> located.data["services"][0]["port"]
18016
>>> located.at(("services", 0, "port"))
'profiles/sandbox.yaml:31: services[0].port'

Used by profiles and by waiver files. Whatever the file holds (a key given twice, an impossible date, an alias
bomb, brackets nested a thousand deep, bytes that are not UTF-8), read_yaml raises SourceError whose str() is
one line: `file:line: field: problem`. validation_line() turns a pydantic ValidationError over the data into
the same kind of line.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from acgs_verify.redact import display_url, one_line

MAX_PROFILE_BYTES = 1 << 20  # a profile is a page of YAML; anything larger is a mistake or an attack
MAX_EXPANDED_NODES = 20_000  # bounds alias expansion (billion laughs) before anything walks the data
MAX_DEPTH = 40


# the pydantic error type of a value that no message may quote (a DSN or URL that holds, or may hold, a password):
# validation_line names its file, line and field, never the value, and a --set giving it by its key alone
WITHHELD = "value_withheld"


class SourceError(Exception):
    """A YAML file that cannot be used; str() is the one line a user sees (file:line: field: problem)."""


@dataclass
class Located:
    """Parsed YAML plus where each value came from: path tuple -> (file, line)."""

    data: Any
    where: dict[tuple, tuple[str, int]]

    def at(self, path: tuple) -> str:
        """('services', 0, 'port') -> 'profiles/x.yaml:12: services[0].port': the nearest line known for path."""
        for n in range(len(path), -1, -1):
            if path[:n] in self.where:
                file, line = self.where[path[:n]]
                return f"{file}:{line}: {dotted(path)}" if path else f"{file}:{line}"
        return dotted(path) or "profile"


def read_yaml(path: Path, kind: str = "profile") -> Located:
    """The mapping a YAML file holds, with its lines; SourceError naming file, line and field if it is not one.

    `kind` names the file in messages ("a waivers file is a mapping of fields, not list").
    """
    from acgs_verify.probes.bounded import NotReadable, open_regular

    shown = display_path(path)
    # a FIFO would block the open until a writer comes, /dev/zero (or a link to it) never end: only a regular
    # file is read, opened without blocking, and never more than the limit and one byte of it
    try:
        fd, st = open_regular(path)
    except NotReadable as exc:
        raise SourceError(f"{shown}: cannot read: {exc.reason}") from None
    try:
        with os.fdopen(fd, "rb") as f:
            raw = f.read(MAX_PROFILE_BYTES + 1)
    except OSError as exc:
        raise SourceError(f"{shown}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_PROFILE_BYTES:
        raise SourceError(f"{shown}: {kind} is {max(len(raw), st.st_size)} bytes; the limit is {MAX_PROFILE_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{shown}: not UTF-8 (byte {exc.start})") from None
    _check_flow_depth(text, shown)
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # its reader already refuses control characters
        node = loader.get_single_node()
        if node is None:
            return Located({}, {})
        _check_size(node, shown)
        _check_keys_and_dates(node, shown, loader)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise SourceError(f"{shown}{line}: YAML syntax error: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise SourceError(f"{shown}: YAML error: {one_line(exc)}") from None
    except RecursionError:
        raise SourceError(f"{shown}: YAML nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # a value YAML's own constructors refuse; the walk names most
        raise SourceError(f"{shown}: YAML value cannot be read: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()
    if data is None:  # `---` alone, or `~`: as empty as an empty file
        return Located({}, {})
    if not isinstance(data, dict):
        raise SourceError(f"{shown}:1: a {kind} is a mapping of fields, not {type(data).__name__}")
    where: dict[tuple, tuple[str, int]] = {}
    _record_lines(node, (), shown, where, set())
    return Located(data, where)


_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*')


def _check_flow_depth(text: str, shown: str) -> None:
    """Refuse [[[[...]]]] before PyYAML recurses through it (thousands of levels take it a second)."""
    depth = 0
    for line_no, line in enumerate(_QUOTED.sub("", text).splitlines(), 1):
        for ch in line:
            if ch in "[{":
                depth += 1
                if depth > MAX_DEPTH:
                    raise SourceError(f"{shown}:{line_no}: nested more than {MAX_DEPTH} levels")
            elif ch in "]}":
                depth = max(0, depth - 1)


def _check_size(node: yaml.Node, shown: str) -> None:
    """Refuse alias bombs and absurd nesting before constructing anything (memoized, so it is cheap)."""
    memo: dict[int, int] = {}

    def size(n: yaml.Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise SourceError(f"{shown}:{n.start_mark.line + 1}: nested more than {MAX_DEPTH} levels")
        if id(n) in memo:
            return memo[id(n)]
        memo[id(n)] = 1  # guards against recursive aliases
        if isinstance(n, yaml.MappingNode):
            total = 1 + sum(size(k, depth + 1) + size(v, depth + 1) for k, v in n.value)
        elif isinstance(n, yaml.SequenceNode):
            total = 1 + sum(size(v, depth + 1) for v in n.value)
        else:
            total = 1
        if total > MAX_EXPANDED_NODES:
            raise SourceError(
                f"{shown}:{n.start_mark.line + 1}: expands to more than {MAX_EXPANDED_NODES} values"
                " (YAML aliases?)"
            )
        memo[id(n)] = total
        return total

    size(node, 0)


_MERGE_TAG = "tag:yaml.org,2002:merge"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


def _check_keys_and_dates(node: yaml.Node, shown: str, loader: yaml.SafeLoader) -> None:
    """A key given twice at any level names both lines (YAML would keep the last one silently), and an impossible
    date (2025-02-30) names its line and field instead of failing later as "day is out of range"."""
    seen: set[int] = set()

    def walk(n: yaml.Node, path: tuple) -> None:
        if id(n) in seen:  # an alias: checked where it was defined
            return
        seen.add(id(n))
        if isinstance(n, yaml.MappingNode):
            first: dict[str, int] = {}
            for k, v in n.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != _MERGE_TAG:
                    line = k.start_mark.line + 1
                    if k.value in first:
                        raise SourceError(f"{shown}:{line}: {dotted(path + (k.value,))}: key given twice "
                                           f"(lines {first[k.value]} and {line}); keep one")
                    first[k.value] = line
                walk(v, path + ((k.value if isinstance(k, yaml.ScalarNode) else "?"),))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, path + (i,))
        elif isinstance(n, yaml.ScalarNode) and n.tag == _TIMESTAMP_TAG:
            try:
                loader.construct_yaml_timestamp(n)
            except (ValueError, OverflowError) as exc:
                raise SourceError(f"{shown}:{n.start_mark.line + 1}: {dotted(path)}: not a real date "
                                   f"{n.value!r} ({exc})") from None

    walk(node, ())


def _record_lines(node, path, shown, where, seen) -> None:
    if id(node) in seen:
        return
    seen.add(id(node))
    where[path] = (shown, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k)
            where[path + (key,)] = (shown, k.start_mark.line + 1)
            _record_lines(v, path + (key,), shown, where, seen)
            where[path + (key,)] = (shown, k.start_mark.line + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _record_lines(v, path + (i,), shown, where, seen)


def display_path(path: Path) -> str:
    """A file as messages name it: relative to the working directory when below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def dotted(path: Iterable) -> str:
    """('services', 0, 'port') -> 'services[0].port'."""
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
            continue
        # a key from the file may be anything YAML allows, newlines included: quote it unless plain
        key = str(p) if re.fullmatch(r"[A-Za-z0-9_.-]+", str(p)) else repr(str(p)[:60])
        out += f".{key}" if out else key
    return out


def validation_line(exc: ValidationError, located: Located, overridden: Iterable[tuple[tuple, str]] = ()) -> str:
    """The first (most telling) error of a model validation, as 'file:line: field: problem (got value)'.

    `overridden` holds (path, text) of each `--set text`: an error under that path names the option instead.
    """
    # an unknown key first: `expire:` also makes `expires` missing, and the typo is what the user must see
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    err = errors[0]
    loc = tuple(err["loc"])
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        missing = [str(e["loc"][-1]) for e in errors if e["type"] == "missing" and tuple(e["loc"][:-1]) == loc[:-1]]
        close = difflib.get_close_matches(str(loc[-1]), missing, n=1, cutoff=0.6)
        msg = f"unknown field {loc[-1]!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    elif err["type"] == WITHHELD:
        pass  # the value itself may be the secret: neither it nor a --set holding it is quoted
    elif "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], dict | list):
        shown = err["input"]
        if isinstance(shown, str) and "://" in shown and "@" in shown.split("://", 1)[1]:
            # a URL with a user-info, in a field that is not a DSN: its password may be where urlsplit cannot see it
            msg = f"{msg} (value not shown: it may hold a password)"
        else:
            if isinstance(shown, str) and "://" in shown:
                shown = display_url(shown)
            msg = f"{msg} (got {shown!r})"
    msg = msg.removeprefix("Value error, ")
    # every other error by its field and pydantic's words, never its value: one line, but none hidden behind a count
    others = [f"{dotted(tuple(e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
              for e in errors[1:4]]
    rest = len(errors) - 4
    more = f" (also {'; '.join(others)}{f'; and {rest} more' if rest > 0 else ''})" if others else ""
    for real, text in overridden:
        if loc[: len(real)] == real or real[: len(loc)] == loc:
            if err["type"] == WITHHELD:
                text = text.split("=", 1)[0].strip() + "=..."
            return f"--set {text}: {dotted(loc)}: {msg}{more}"
    return f"{located.at(loc)}: {msg}{more}"


