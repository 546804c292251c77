"""docs/security.md promises nothing that no test proves: every guarantee there names its tests, and every test it
names exists, so renaming or deleting one breaks this rather than leaving the page naming a test that is gone."""

from __future__ import annotations

import ast
import re

from tests.conftest import REPO

DOC = REPO / "docs" / "security.md"
NAMED = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?")


def _functions(path) -> set[str]:
    return {n.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.FunctionDef)}


def test_every_test_the_security_page_names_exists():
    named = NAMED.findall(DOC.read_text())
    assert len(named) >= 40, "docs/security.md names too few tests to be the page it says it is"
    missing = []
    for file, name in named:
        path = REPO / file
        if not path.is_file() or (name and name not in _functions(path)):
            missing.append(f"{file}::{name}" if name else file)
    assert missing == [], f"docs/security.md names tests that do not exist: {missing}"


def test_every_guarantee_on_the_security_page_names_a_test():
    text = DOC.read_text()
    guarantees = re.split(r"^### ", text.split("## Guarantees and their tests", 1)[1].split("\n## ", 1)[0], flags=re.M)
    bare = [g.splitlines()[0] for g in guarantees[1:] if not NAMED.search(g)]
    assert bare == [], f"guarantees without a test: {bare}"
