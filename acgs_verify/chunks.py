"""A run over many hosts as a few pytest sessions in this process, each collecting the checks of a chunk of hosts.

    >>> for chunk in host_chunks(profile):            # 200 hosts: 20 chunks of 10
    ...     code, config = run_pytest(args, [Loaded(...), chunk])
    >>> result = joined(results, started)             # one RunResult, as one session would have made it

pytest keeps every collected item (~3.4 KB each) and its reports until the session ends: one session over 200
hosts held 20k items before the first check ran (149 MB) and grew from there (issue 24 item 7; BENCHMARKS.md). A
chunk's session collects its own hosts' checks only (plugin.pytest_generate_tests asks the chunk), so what is held
is bounded by the hosts in flight, and each chunk's results are kept as the run's compact CheckResults. Checks
whose target is on no host (and checks of no target) belong to the first chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from acgs_verify.collector import CHUNK_KEY
from acgs_verify.results import RunResult, in_catalog_order
from acgs_verify.targets import host_of

# above this many hosts an unsharded run without --wait is run in chunks of this many: a chunk's items and
# reports (~13 KB a check while it runs) are the part of the peak that grows with the chunk
CHUNK_HOSTS = 10
# the text fields many checks of a fleet repeat word for word (a check's title and next step on every host)
_REPEATED = ("id", "section", "severity", "title", "outcome", "next_step", "kind", "measured", "expected", "host")


@dataclass(frozen=True)
class HostChunk:
    """A pytest plugin naming the hosts whose checks this session collects."""

    names: frozenset[str]
    hostless: bool  # the first chunk also holds the checks of targets on no host

    def holds(self, target) -> bool:
        host = host_of(target) if target is not None else None
        return self.hostless if host is None else host.name in self.names

    def pytest_configure(self, config) -> None:
        config.stash[CHUNK_KEY] = self


def host_chunks(profile, size: int | None = None) -> list[HostChunk]:
    """The profile's hosts, in profile order, `size` (CHUNK_HOSTS) at a time; [] when one session holds them all."""
    size = size or CHUNK_HOSTS
    names = [h.name for h in profile.hosts]
    if len(names) <= size:
        return []
    return [HostChunk(frozenset(names[i:i + size]), i == 0) for i in range(0, len(names), size)]


def shared_text(result: RunResult, seen: dict[str, str]) -> RunResult:
    """`result` with its checks' repeated texts replaced by the one equal copy in `seen` (filled as it goes): a run
    keeps every check's result to its end, and over 200 hosts most of their text is the same few strings."""
    for c in result.checks:
        for name in _REPEATED:
            value = getattr(c, name)
            if isinstance(value, str):
                setattr(c, name, seen.setdefault(value, value))
    return result


def joined(parts: list[RunResult], started: float) -> RunResult:
    """The chunks' results as the one RunResult a single session over every host would have made: its checks in
    catalog order, its notes once each, complete only when every chunk was; timed from `started` (time.time())."""
    from acgs_verify.run_state import empty, renew

    first = parts[0]
    whole = RunResult(
        run_id=first.run_id, profile=first.profile, gate=first.gate, started=first.started,
        duration=datetime.now(UTC).timestamp() - started, constitutional_hash=first.constitutional_hash,
        checks=in_catalog_order(c for r in parts for c in r.checks),
        complete=all(r.complete for r in parts),
        notes=list(dict.fromkeys(n for r in parts for n in r.notes)),
        gate_failures=list(dict.fromkeys(g for r in parts for g in r.gate_failures)),
        planned=sum(r.planned or len(r.checks) for r in parts),
    )
    for r in parts:
        for key, value in r.extra.items():
            if key == "state":  # DB-01/RD-01's sources, from whichever chunk ran them
                renew(whole.extra.setdefault("state", empty()), value)
            else:
                whole.extra.setdefault(key, value)
    return whole
