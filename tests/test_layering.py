"""The layers of acgs_verify import one another as docs/design.md draws them, read from the source (ast), not by
running it.

The rules are the arrows of design.md's "Layers: who may import whom", read from that file: a unit imports only
what its arrow names, and every arrow drawn is used. Beside them, the few rules no edit of the map may loosen: a
probe knows nothing of pytest, targets or checks; hosts/ knows nothing of probes, checks, targets, pytest or reports;
a report writer reads the result model. Every import statement that runs counts, at module level or inside a
function (a lazy import still ties two layers together); one under `if TYPE_CHECKING:` never runs and names a type.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "acgs_verify"
LAYERS = ("probes", "hosts", "targets", "check", "plugin", "report")
DESIGN = ROOT / "docs" / "design.md"


def _module_files() -> dict[str, Path]:
    out = {}
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "checks").glob("*.py")]:
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
    for node in _executed(tree):
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


def _executed(tree: ast.AST):
    """Every node of `tree` but the bodies of `if TYPE_CHECKING:`, which never run (a name for an annotation)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
            else:
                todo.append(child)


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


def unit_of(module: str) -> str:
    """The unit a module belongs to, as design.md names it: `probes`, `hosts`, `plugin`, `checks`, ..."""
    parts = module.split(".")
    return parts[0] if parts[0] == "checks" else parts[1] if len(parts) > 1 else ""


def drawn_rules() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """design.md's arrows: {unit: what it may import}, {third-party package: the units that may import it}."""
    text = DESIGN.read_text()
    block = text.split("## Layers: who may import whom", 1)[1].split("```", 2)[1]
    imports, users = {}, {}
    for line in block.splitlines():
        if "->" in line:
            left, _, right = line.partition("->")
            imports[left.strip()] = set(right.split())
        elif "<-" in line:
            left, _, right = line.partition("<-")
            users[left.strip()] = set(right.split())
    return imports, users


def _allowed_by(entry: str, module: str) -> bool:
    """`profile` allows every module of profile; `profile.model` that module only."""
    name = f"acgs_verify.{entry}"
    return module == name or module.startswith(name + ".")


def _direct_edges() -> list[tuple[str, str]]:
    """(importing module, imported acgs_verify module) across units; the empty package root is no edge."""
    return [(m, n) for m in MODULES for n in sorted(imports_of(m))
            if n.startswith("acgs_verify.") and unit_of(n) != unit_of(m)]


def test_the_walker_sees_imports_at_module_level_and_inside_functions_but_not_for_types():
    # security.py imports the host file reader inside a function; plugin.py imports pytest at the top and the
    # pool in a fixture's body; hosts/pool.py imports the Host model for its annotations only, which never runs
    assert "acgs_verify.probes.hostfiles" in imports_of("acgs_verify.probes.security")
    assert "pytest" in imports_of("acgs_verify.plugin")
    assert "acgs_verify.hosts.pool" in imports_of("acgs_verify.plugin")
    assert "TYPE_CHECKING" in MODULES["acgs_verify.hosts.pool"].read_text()
    assert "acgs_verify.profile.model" not in imports_of("acgs_verify.hosts.pool")
    assert "acgs_verify.check" in imports_of("checks.test_services")
    assert _in_layer("probes") and _in_layer("report") and _in_layer("hosts")
    assert "acgs_verify.check" in _in_layer("check")


def test_design_draws_a_rule_for_every_unit_that_imports_another():
    imports, users = drawn_rules()
    assert {"checks", "plugin", "check", "gates", "targets", "probes", "hosts", "report"} <= set(imports)
    assert {"pytest", "testinfra", "paramiko"} <= set(users)
    undrawn = sorted({unit_of(m) for m, _ in _direct_edges()} - set(imports))
    assert undrawn == [], f"units that import others but have no line in docs/design.md: {undrawn}"


def test_every_import_follows_an_arrow_design_draws():
    imports, _ = drawn_rules()
    wrong = [f"{m} -> {n}" for m, n in _direct_edges()
             if not any(_allowed_by(e, n) for e in imports.get(unit_of(m), ()))]
    assert wrong == [], "imports docs/design.md does not draw (fix the code, or draw the arrow on purpose)"


def test_every_arrow_design_draws_is_used():
    imports, _ = drawn_rules()
    edges = _direct_edges()
    unused = [f"{unit} -> {e}" for unit, allowed in imports.items() for e in sorted(allowed)
              if not any(unit_of(m) == unit and _allowed_by(e, n) for m, n in edges)]
    assert unused == [], "arrows in docs/design.md that no import uses: remove them"


def test_third_party_transports_and_pytest_stay_where_design_puts_them():
    _, users = drawn_rules()
    wrong = [f"{m} imports {pkg}" for pkg, allowed in users.items() for m in MODULES
             if pkg in imports_of(m) and unit_of(m) not in allowed]
    assert wrong == []
    used = {pkg: {unit_of(m) for m in MODULES if pkg in imports_of(m)} for pkg in users}
    assert {pkg: sorted(u) for pkg, u in used.items()} == {pkg: sorted(u) for pkg, u in users.items()}


@pytest.mark.parametrize("forbidden", ["pytest", "_pytest", "testinfra", "paramiko", "acgs_verify.probes",
                                       "acgs_verify.targets", "acgs_verify.check", "acgs_verify.plugin",
                                       "acgs_verify.report", "acgs_verify.gates", "acgs_verify.collector",
                                       "acgs_verify.profile", "acgs_verify.discover", "checks"])
def test_hosts_are_transport_only(forbidden):
    """hosts/ reaches a machine: nothing it runs imports, directly or through another module, a probe, check,
    target, pytest, report or the profile (it takes the profile's Host, named for types only), and only
    hosts/backends.py speaks testinfra or paramiko."""
    if forbidden in ("testinfra", "paramiko"):
        offending = [m for m in _in_layer("hosts") if forbidden in imports_of(m) and m != "acgs_verify.hosts.backends"]
    else:
        offending = _offending("hosts", lambda n: n == forbidden or n.startswith(forbidden + "."))
    assert offending == []


@pytest.mark.parametrize("forbidden", ["pytest", "_pytest", "acgs_verify.targets", "acgs_verify.check",
                                       "acgs_verify.plugin"])
def test_probes_are_a_library(forbidden):
    """A probe can be used without pytest and without the target layer: it takes a profile entry or a pool."""
    assert _offending("probes", lambda n: n == forbidden or n.startswith(forbidden + ".")) == []


@pytest.mark.parametrize("forbidden", ["pytest", "_pytest", "acgs_verify.probes", "acgs_verify.plugin"])
def test_reports_read_the_result_model_only(forbidden):
    assert _offending("report", lambda n: n == forbidden or n.startswith(forbidden + ".")) == []


def test_probe_errors_live_below_probes_and_hosts_and_check_reexports_them():
    from acgs_verify import check
    from acgs_verify.errors import ProbeError

    assert check.ProbeError is ProbeError
    users = [m for m in [*_in_layer("probes"), *_in_layer("hosts")] if "ProbeError" in MODULES[m].read_text()]
    assert users and all("acgs_verify.errors" in reach(m) for m in users), users


def test_no_import_cycle_between_layers():
    depends = {a: {layer_of(n) for m in _in_layer(a) for n in reach(m)} - {a, None} for a in LAYERS}
    cycles = [f"{a} <-> {b}" for a in LAYERS for b in depends[a] if a in depends[b] and a < b]
    assert cycles == [], {a: sorted(d) for a, d in depends.items()}
