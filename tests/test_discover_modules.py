"""discover is split by subject (issue 25, item 4): no module of acgs_verify/discover/ takes a private name
(`_name`) from another module, by `from x import _name` or by `x._name`, so each file's underscore names are its
own to change."""

from __future__ import annotations

import ast
from pathlib import Path

import acgs_verify.discover

DISCOVER = Path(acgs_verify.discover.__file__).parent


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_imports(source: str) -> list[str]:
    """`module.name` for every private name the source takes from another module (absolute imports only are
    allowed in this package, so a relative one is reported too)."""
    tree = ast.parse(source)
    found, modules = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                found.append(f"relative import from {'.' * node.level}{node.module or ''}")
            found += [f"{node.module}.{a.name}" for a in node.names if _private(a.name)]
            if node.module and node.module.startswith("acgs_verify"):
                modules.update(a.asname or a.name for a in node.names)
        elif isinstance(node, ast.Import):
            modules.update((a.asname or a.name).split(".")[0] for a in node.names)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name) \
                and node.value.id in modules:
            found.append(f"{node.value.id}.{node.attr}")
    return found


def test_the_rule_sees_both_forms():
    assert private_imports("from acgs_verify.probes.host import _roots, command") == ["acgs_verify.probes.host._roots"]
    assert private_imports("from acgs_verify.discover import cmdline\ncmdline._esc('x')") == ["cmdline._esc"]
    assert private_imports("import re\nre.__name__\nx._own") == []


def test_no_discover_module_takes_another_modules_private_names():
    offenders = {p.name: private_imports(p.read_text()) for p in sorted(DISCOVER.glob("*.py"))}
    assert {k: v for k, v in offenders.items() if v} == {}
    assert len(offenders) >= 8  # split by subject: services, postgres, redis, apptree, backups, tls, ...
