"""Counts in words, for every message a check, probe or command prints: one home for the plural.

>>> plural(1, "process")
'1 process'
>>> plural(2, "broken link")
'2 broken links'
>>> plural(3, "entry", "entries")
'3 entries'
"""

from __future__ import annotations


def plural(n: float, word: str, many: str | None = None) -> str:
    """`n word`, with the plural form unless n is 1 (`many`, else word + s, or + es after s, x, ch, sh)."""
    if many is None:
        many = word + ("es" if word.endswith(("s", "x", "ch", "sh")) else "s")
    return f"{n:g} {word if n == 1 else many}" if isinstance(n, float) else f"{n} {word if n == 1 else many}"


def excerpt(line: str, limit: int = 200) -> str:
    """A log line from its start (timestamp, host, source first), cut at the end: excerpt("Jan 12 ... kernel:
    Out of memory: Killed process 4242 (python) total-vm:...", 60) -> 'Jan 12 ... Killed process 4242 (py...'."""
    line = line.strip()
    return line if len(line) <= limit else line[: limit - 3] + "..."
