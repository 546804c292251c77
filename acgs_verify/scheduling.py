"""`-n N --dist loadgroup`: every check of one host goes to one xdist worker, so the host is one connection.

xdist's own loadgroup reads `@group` suffixes that it appends to node ids, which pytest >= 9 no longer lets it
do (node ids became read-only); this scheduler groups by the host of each check's target instead, read from the
profile: `test_load_average[app-1]`, `test_disk_usage[app-1:/]` and `test_x[auth@app-1]` share a worker.
"""

from __future__ import annotations

from acgs_verify.profile import Profile
from acgs_verify.targets import TARGET_KINDS, host_of


def host_groups(profile: Profile) -> dict[str, str]:
    """Test parameter id -> the host its checks run on."""
    groups: dict[str, str] = {}
    for kind in TARGET_KINDS.values():
        for target in kind(profile):
            host = host_of(target)
            if host is not None:
                groups[target.id] = host.name
    return groups


def scope_of(nodeid: str, groups: dict[str, str]) -> str | None:
    """`checks/test_system.py::test_disk_usage[app-1:/]` -> `host:app-1`; None for a check without a host."""
    if nodeid.endswith("]") and "[" in nodeid:
        host = groups.get(nodeid[nodeid.index("[") + 1 : -1])
        if host is not None:
            return f"host:{host}"
    return None


def host_group_scheduler(config, log, profile: Profile):
    from xdist.scheduler import LoadGroupScheduling

    groups = host_groups(profile)

    class HostGroupScheduling(LoadGroupScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid, groups) or super()._split_scope(nodeid)

    return HostGroupScheduling(config, log)
