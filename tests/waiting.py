"""Waiting for a state, never for a time: poll a predicate until it holds or a deadline passes.

    log = wait_for("a .partial-* directory", lambda: list(reports.glob(".partial-*")), timeout=30)

returns the predicate's first truthy value; on timeout an AssertionError names what never happened. A load spike
on a shared machine then costs waiting time, not a wrong assumption about where the system got to.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(what: str, predicate: Callable[[], T], timeout: float = 30, interval: float = 0.05) -> T:
    """`wait_for("the replica streaming", lambda: rows(...), 20)` -> the first truthy value the predicate returns."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not seen within {timeout:g} s")
        time.sleep(interval)
