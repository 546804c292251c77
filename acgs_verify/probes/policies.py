"""Policy files (CC-03): each parses as YAML, JSON or Rego and names the expected constitutional hash.

>>> scan = scan_policies("/home/acgs/ACGS/config/policies", include=["*.rego", "*.json", "*.yaml", "*.yml"])
>>> scan.files, scan.ignored, scan.problem
(['constitution.yaml', 'rules/data_access.rego', ...], ['CLAUDE.md', 'README.md'], None)
>>> policy_files("/home/acgs/ACGS/config/policies")   # every file, policy or not
[PosixPath('.../CLAUDE.md'), PosixPath('.../constitution.yaml'), PosixPath('.../data_access.rego'), ...]
>>> check_policy(Path(".../data_access.rego"), "auto", "constitutional_hash")
PolicyCheck(format='rego', problem=None, hash='cdd01ef066bc6cf2', detail='package acgs.data_access, 4 rules')
>>> check_policies(scan, "auto", "constitutional_hash")     # every policy file of a scan, by relative path
{'constitution.yaml': PolicyCheck(format='yaml', ...), 'rules/data_access.rego': PolicyCheck(format='rego', ...)}

Rego is checked without OPA: the package line, imports, strings and comments, balanced brackets, and rule heads;
a syntax check rather than OPA's full parser (which would need the `opa` binary on every checking host).
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from acgs_verify.errors import ProbeError, Unreachable
from acgs_verify.probes.bounded import NotReadable
from acgs_verify.probes.hostfiles import Files, local_files
from acgs_verify.redact import one_line
from acgs_verify.words import plural

MAX_POLICY_BYTES = 4 << 20
MAX_DEPTH = 8  # folders below paths.policies: a policy tree is shallow; a deeper one is a loop or a mount
EXTENSIONS = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".rego": "rego"}


@dataclass(frozen=True)
class PolicyCheck:
    format: str
    problem: str | None  # None: parses and carries a hash (compare .hash with the expected one)
    hash: str | None
    detail: str = ""

    def said(self, hash_field: str) -> str:
        """'rego: package acgs.data_access, 4 rules; constitutional_hash cdd01ef066bc6cf2', or the problem."""
        return f"{self.format}: {self.problem or f'{self.detail}; {hash_field} {self.hash}'}"


def policy_files(root: str | Path) -> list[Path]:
    """Every regular file under root (recursively), hidden ones left out, sorted. [] when root is missing."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(root).parts))


@dataclass(frozen=True)
class PolicyScan:
    """What lies under a policy directory: policy files and other files, as paths relative to it (sorted)."""

    root: str
    files: list[str]  # matching include and not exclude: CC-03 validates each
    ignored: list[str]  # every other (non-hidden) regular file: listed once, never validated
    problem: str | None = None  # why the directory could not be read (missing, not a directory, permission)

    def nothing_found(self, include: Iterable[str]) -> str:
        """Why there is no policy file, as the end of a sentence: 'the directory does not exist', '2 files,
        none matching *.rego, *.json: CLAUDE.md, README.md'."""
        if self.problem:
            return self.problem
        if not self.ignored:
            return "the directory holds no file at all"
        shown = ", ".join(self.ignored[:10]) + (f" and {len(self.ignored) - 10} more" if len(self.ignored) > 10
                                                 else "")
        return f"{plural(len(self.ignored), 'file')}, none matching {', '.join(include)}: {shown}"


def describe_ignored(root: str, ignored: list[str] | tuple[str, ...]) -> str:
    """'2 files under /srv/policies are not policy files and were not validated: CLAUDE.md, README.md'"""
    shown = ", ".join(ignored[:10]) + (f" and {len(ignored) - 10} more" if len(ignored) > 10 else "")
    return f"{plural(len(ignored), 'file')} under {root} are not policy files and were not validated: {shown}"


def matches(relative: str, patterns: Iterable[str]) -> bool:
    """True if a path below the policy directory matches one of the globs. A pattern without `/` is matched
    against the file name (at any depth), one with `/` against the whole relative path; `*` crosses `/`;
    case is ignored (`Policy.YAML` is a YAML policy)."""
    rel = relative.lower()
    name = rel.rsplit("/", 1)[-1]
    for pattern in patterns:
        pat = pattern.lower().lstrip("/")
        if fnmatch.fnmatchcase(rel, pat) or ("/" not in pat and fnmatch.fnmatchcase(name, pat)):
            return True
    return False


def scan_policies(root: str | Path, include: Iterable[str], exclude: Iterable[str] = (),
                  files: Files | None = None) -> PolicyScan:
    """Walk root on the host `files` reads (this machine when None; hidden files and directories left out) and
    sort its files into policy files and the rest, from one listing.

    A directory that is missing, is not one or cannot be listed is a finding and comes back as `problem`, so CC-03
    can say what it saw instead of passing on nothing; a host that did not answer (or a listing that failed any
    other way) raises ProbeError: nothing was seen, the check could not measure.
    """
    root_s = str(root)
    include, exclude = list(include), list(exclude)
    try:
        tree = (files or local_files()).tree(root_s, MAX_DEPTH)
    except Unreachable:
        raise
    except ProbeError as exc:
        text = str(exc)
        problem = ("the directory does not exist" if text.endswith("does not exist") else
                   "it is not a directory" if text.endswith("is not a directory") else
                   "cannot list it: permission denied" if "Permission denied" in text else None)
        if problem is None:
            raise
        return PolicyScan(root_s, [], [], problem)
    visible = [e for e in tree.entries.values() if not any(part.startswith(".") for part in e.path.split("/"))]
    # a symlink to a file is listed, and refused when read (CC-03 follows no link it finds by walking)
    found = sorted(e.path for e in visible if e.kind == "f" or (e.kind == "l" and e.target_kind == "f"))
    files_ = [f for f in found if matches(f, include) and not matches(f, exclude)]
    chosen = set(files_)
    ignored = [f for f in found if f not in chosen]
    # a subdirectory that cannot be listed may hide policies: say so as an ignored entry rather than drop it
    ignored += [f"{e.path}/ (cannot list: permission denied)" for e in sorted(visible, key=lambda e: e.path)
                if e.kind == "d" and not e.readable]
    return PolicyScan(root_s, files_, ignored)


def check_policy(path: Path, fmt: str, hash_field: str, files: Files | None = None) -> PolicyCheck:
    """Parse `path` as `fmt` ('auto': by extension) and find its constitutional hash, read on the host `files`
    reads (this machine when None). ProbeError if unreadable."""
    kind = fmt if fmt != "auto" else EXTENSIONS.get(path.suffix.lower())
    if kind is None:
        return PolicyCheck("?", f"not a policy format ({path.suffix or 'no extension'}; expected one of "
                           f"{', '.join(sorted(EXTENSIONS))})", None)
    try:  # found by walking the policies directory: a symlink there is not followed, a FIFO never blocks
        raw = (files or local_files()).read(str(path), MAX_POLICY_BYTES, follow=False)
    except NotReadable as exc:
        if exc.reason.startswith("larger than"):
            return PolicyCheck(kind, exc.reason, None)
        raise
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return PolicyCheck(kind, f"not UTF-8 (byte {exc.start})", None)
    if kind == "rego":
        return _rego(text, hash_field)
    return _document(text, kind, hash_field)


def _document(text: str, kind: str, hash_field: str) -> PolicyCheck:
    import yaml

    try:
        if kind == "json":
            data = json.loads(text)
        else:
            docs = list(yaml.safe_load_all(text))
            data = docs[0] if docs else None
    except json.JSONDecodeError as exc:
        return PolicyCheck(kind, f"JSON syntax error at line {exc.lineno} column {exc.colno}: {exc.msg}", None)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        return PolicyCheck(kind, f"YAML syntax error{where}: {exc.problem or exc.context}", None)
    except (yaml.YAMLError, RecursionError) as exc:
        return PolicyCheck(kind, f"YAML error: {one_line(exc)}", None)
    if not isinstance(data, dict):
        return PolicyCheck(kind, f"a policy is a mapping, not {type(data).__name__}", None)
    meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    found = data.get(hash_field, meta.get(hash_field))
    name = data.get("name") or meta.get("name") or data.get("id") or ""
    rules = data.get("rules")
    detail = (name or "policy") + (f", {plural(len(rules), 'rule')}" if isinstance(rules, list) else "")
    if found is None:
        return PolicyCheck(kind, f"no {hash_field} field (top level or metadata)", None, detail)
    return PolicyCheck(kind, None, str(found), detail)


def check_policies(scan: PolicyScan, fmt: str, hash_field: str, files: Files | None = None) -> dict[str, PolicyCheck]:
    """check_policy() of every policy file a scan found, on the host `files` reads, keyed by its path relative to
    the scanned folder."""
    return {f: check_policy(Path(scan.root) / f, fmt, hash_field, files) for f in scan.files}


# ------------------------------------------------------------------------------------------------ Rego

_TOKEN = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"|`[^`]*`|"|`|[()\[\]{}]|\n')
_PACKAGE = re.compile(r"^package\s+[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*|\[\"[^\"]+\"\])*\s*$")
_IMPORT = re.compile(r"^import\s+(data|input|future|rego)(\.[A-Za-z_][A-Za-z0-9_]*)*(\s+as\s+[A-Za-z_]\w*)?\s*$")
_PAIRS = {")": "(", "]": "[", "}": "{"}


def _rego(text: str, hash_field: str) -> PolicyCheck:
    stack: list[tuple[str, int]] = []
    line = 1
    code_lines: dict[int, list[str]] = {}
    depth_at = {1: 0}  # bracket depth at the start of each line: rule heads start at depth 0
    pos = 0
    for m in _TOKEN.finditer(text):
        code_lines.setdefault(line, []).append(text[pos:m.start()])
        tok = m.group()
        pos = m.end()
        if tok == "\n":
            line += 1
            depth_at[line] = len(stack)
            continue
        if tok in ('"', "`"):
            return PolicyCheck("rego", f"Rego: unterminated string at line {line}", None)
        if tok.startswith("#"):
            continue
        if tok[0] in "\"`":
            code_lines[line].append("S")
            line += tok.count("\n")
            continue
        code_lines[line].append(tok)
        if tok in "([{":
            stack.append((tok, line))
        else:
            if not stack or stack[-1][0] != _PAIRS[tok]:
                return PolicyCheck("rego", f"Rego: unbalanced {tok!r} at line {line}", None)
            stack.pop()
    if stack:
        return PolicyCheck("rego", f"Rego: {stack[-1][0]!r} opened at line {stack[-1][1]} is never closed", None)
    code_lines.setdefault(line, []).append(text[pos:])
    statements = [(n, "".join(parts).strip()) for n, parts in sorted(code_lines.items()) if "".join(parts).strip()]
    if not statements or not _PACKAGE.match(statements[0][1]):
        return PolicyCheck("rego", "Rego: the first statement must be `package <name>`", None)
    package = statements[0][1].split(None, 1)[1]
    for n, s in statements[1:]:
        if s.startswith("import") and not _IMPORT.match(s):
            return PolicyCheck("rego", f"Rego: bad import at line {n}: {s[:80]}", None)
        if s.startswith("package"):
            return PolicyCheck("rego", f"Rego: a second package statement at line {n}", None)
    rules = sum(1 for n, s in statements[1:] if depth_at.get(n, 0) == 0 and not s.startswith("import"))
    m = re.search(rf"(?m)^\s*{re.escape(hash_field)}\s*:?=\s*\"([^\"]*)\"", text)
    detail = f"package {package}, {plural(rules, 'rule')}"
    if m is None:
        return PolicyCheck("rego", f"no `{hash_field} := \"...\"` rule", None, detail)
    return PolicyCheck("rego", None, m.group(1), detail)
