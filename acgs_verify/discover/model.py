"""What discover found: profile entries, each with the comment lines that say where it came from.

>>> Item({"name": "auth", "port": 8016}, ["pid 4123 owns 127.0.0.1:8016"])
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Item:
    """One profile entry and the comment lines that say where it came from; `candidate` ones are written
    commented out."""

    data: dict
    evidence: list[str] = field(default_factory=list)
    candidate: bool = False


@dataclass
class Discovery:
    host: Item
    user: str = "?"
    constitutional_hash: str | None = None
    services: list[Item] = field(default_factory=list)
    candidates: list[Item] = field(default_factory=list)
    databases: list[Item] = field(default_factory=list)
    redis: list[Item] = field(default_factory=list)
    paths: dict[str, Item] = field(default_factory=dict)
    certificates: list[Item] = field(default_factory=list)
    tls_endpoints: list[Item] = field(default_factory=list)
    tls_ca: Item | None = None
    security: dict[str, Item] = field(default_factory=dict)
    todos: list[str] = field(default_factory=list)
    # which fact chose a server where several listened ({"database": "content: ..."}), for discover's output
    decided: dict[str, str] = field(default_factory=dict)

    def set_path(self, key: str, value: str | None, why: str) -> None:
        self.paths[key] = Item({"value": value}, [why])

    def path(self, key: str) -> str | None:
        item = self.paths.get(key)
        return item.data["value"] if item else None
