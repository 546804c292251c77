"""The layers of acgs_verify import one another in one direction only, read from the source (ast), not by running it.

A probe measures and knows nothing of pytest, targets or checks; a report writer reads the result model and knows
nothing of pytest or probes; and no two of probes / targets / check / plugin / report reach each other. Every
import statement counts, at module level or inside a function (a lazy import still ties two layers together).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "acgs_verify"
LAYERS = ("probes", "targets", "check", "plugin", "report")


def _module_files() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _module_files()


def _is_package(name: str) -> bool:
    return (ROOT / Path(*name.split(".")) / "__init__.py").exists()


@cache
def imports_of(module: str) -> frozenset[str]:
    """Every name a module's import statements bring in: acgs_verify modules by their full name, third-party
    packages by their top-level name ('pytest')."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    package = module if _is_package(module) else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(_known(alias.name))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x, from ..probes import host
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            found.add(_known(base))
            for alias in node.names:  # `from acgs_verify.probes import host` imports the module host
                if f"{base}.{alias.name}" in MODULES:
                    found.add(f"{base}.{alias.name}")
    return frozenset(found)


def _known(name: str) -> str:
    """An acgs_verify module (or its nearest enclosing one), else the top-level package name."""
    if name.split(".")[0] != "acgs_verify":
        return name.split(".")[0]
    while name not in MODULES and "." in name:
        name = name.rpartition(".")[0]
    return name


@cache
def reach(module: str) -> frozenset[str]:
    """Everything `module` imports, directly or through other acgs_verify modules (parents packages included)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        current = todo.pop()
        for name in imports_of(current):
            parents = [".".join(name.split(".")[:i]) for i in range(2, name.count(".") + 1)]
            for n in (name, *parents):
                if n not in seen:
                    seen.add(n)
                    if n in MODULES:
                        todo.append(n)
    return frozenset(seen)


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def _in_layer(layer: str) -> list[str]:
    return sorted(m for m in MODULES if layer_of(m) == layer)


def _offending(layer: str, forbidden) -> list[str]:
    return [f"{m} -> {n}" for m in _in_layer(layer) for n in sorted(reach(m)) if forbidden(n)]


def test_the_walker_sees_imports_at_module_level_and_inside_functions():
    # gates.py imports the snapshot comparison inside a function; plugin.py imports pytest at the top
    assert "acgs_verify.report.diff" in imports_of("acgs_verify.gates")
    assert "pytest" in imports_of("acgs_verify.plugin")
    assert "acgs_verify.probes.host" in imports_of("acgs_verify.plugin")  # from a fixture's body
    assert _in_layer("probes") and _in_layer("report") and "acgs_verify.check" in _in_layer("check")


@pytest.mark.parametrize("forbidden", ["pytest", "_pytest", "acgs_verify.targets", "acgs_verify.check",
                                       "acgs_verify.plugin"])
def test_probes_are_a_library(forbidden):
    """A probe can be used without pytest and without the target layer: it takes a profile entry or a pool."""
    assert _offending("probes", lambda n: n == forbidden or n.startswith(forbidden + ".")) == []


@pytest.mark.parametrize("forbidden", ["pytest", "_pytest", "acgs_verify.probes", "acgs_verify.plugin"])
def test_reports_read_the_result_model_only(forbidden):
    assert _offending("report", lambda n: n == forbidden or n.startswith(forbidden + ".")) == []


def test_probe_errors_live_in_probes_and_check_reexports_them():
    from acgs_verify import check
    from acgs_verify.probes.errors import ProbeError

    assert check.ProbeError is ProbeError
    users = [m for m in _in_layer("probes") if "ProbeError" in MODULES[m].read_text() and not m.endswith(".errors")]
    assert all("acgs_verify.probes.errors" in reach(m) for m in users), users


def test_no_import_cycle_between_layers():
    depends = {a: {layer_of(n) for m in _in_layer(a) for n in reach(m)} - {a, None} for a in LAYERS}
    cycles = [f"{a} <-> {b}" for a in LAYERS for b in depends[a] if a in depends[b] and a < b]
    assert cycles == [], {a: sorted(d) for a, d in depends.items()}
