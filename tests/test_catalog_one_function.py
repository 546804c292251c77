"""Each catalog ID is implemented by exactly one test function in checks/: two functions for one ID (DB-02 had two,
with different rules, both reported as `DB-02[primary@...]`) give two verdicts and a doubled metrics series."""

from __future__ import annotations

import importlib
import inspect
from collections import defaultdict

from acgs_verify.catalog import CATALOG
from tests.conftest import REPO


def _functions_by_id() -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for path in sorted((REPO / "checks").glob("test_*.py")):
        module = importlib.import_module(f"checks.{path.stem}")
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ != module.__name__:
                continue
            for mark in getattr(fn, "pytestmark", []):
                if mark.name == "runbook":
                    found[mark.args[0]].append(f"{path.name}::{name}")
    return found


def test_each_catalog_id_has_exactly_one_test_function():
    found = _functions_by_id()
    twice = {cid: fns for cid, fns in found.items() if len(fns) > 1}
    assert not twice, f"catalog IDs implemented more than once: {twice}"
    assert set(found) <= set(CATALOG), f"unknown IDs: {set(found) - set(CATALOG)}"
    assert len(found["DB-02"]) == 1 and len(found["SVC-03"]) == 1
