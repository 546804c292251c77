"""Choosing one server among several that listen on a host, by the strongest fact that decides, and saying which.

>>> pick = choose([5432, 5433], [("the DSN in a service's environment", set()), ("content", {5433})], 5432)
>>> pick.port, pick.decided_by
(5433, 'content')
"""

from __future__ import annotations

from dataclasses import dataclass

from acgs_verify.discover.cmdline import program


@dataclass
class Choice:
    port: int | None
    decided_by: str  # the fact that decided, for the profile's comment and discover's output
    undecided: list[int]  # the ports that fact left when it did not decide alone


def choose(ports: list[int], facts: list[tuple[str, set[int]]], runbook_port: int) -> Choice:
    """The first fact (name, ports it points at) that points at exactly one listening port decides; a fact pointing
    at several narrows the field for the next. The runbook port decides only when no fact did, then the only one."""
    field = list(ports)
    for name, pointed in facts:
        hits = [p for p in field if p in pointed]
        if len(hits) == 1:
            return Choice(hits[0], name, [])
        if hits:
            field = hits
    if runbook_port in field:
        return Choice(runbook_port, f"the runbook's port ({runbook_port}): nothing else decided", [])
    if len(field) == 1:
        return Choice(field[0], "the only one" if len(ports) == 1 else "the only one left", [])
    return Choice(None, "", field)


def chosen(pick: Choice, servers: list[tuple], what: str, key: str, found) -> tuple[int, object, str, list[str]]:
    """The chosen server of `servers` ((port, proc, address) each): its port, process and address, the decision
    recorded in `found.decided[key]` where there was one to make, and the first lines of its evidence."""
    port, proc, address = next(s for s in servers if s[0] == pick.port)
    if len(servers) > 1:
        found.decided[key] = f"{port} by {pick.decided_by}"
    among = (f", of {len(servers)} {what} servers (ports {', '.join(str(p) for p, _, _ in servers)})"
             if len(servers) > 1 else "")
    return port, proc, address, [f"pid {proc.pid} ({proc.user}, {program(proc.args)}) listens on {address}:{port}",
                                 f"chosen by {pick.decided_by}{among}"]
