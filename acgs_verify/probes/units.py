"""Whether a host runs systemd, and a unit's state (SVC-05, DB-02): `systemctl is-active`, once per unit per run.

>>> uses_systemd(pool, host), unit_state(pool, host, "acgs-auth-service")
(True, 'active')
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from acgs_verify.errors import ProbeError
from acgs_verify.hosts.commands import command
from acgs_verify.redact import one_line

if TYPE_CHECKING:
    from acgs_verify.hosts.pool import HostPool
    from acgs_verify.profile.model import Host


def read_has_systemd(conn) -> bool:
    """sd_booted(3): the host runs systemd when /run/systemd/system is a directory."""
    return conn.file("/run/systemd/system").is_directory


def unit_state(pool: HostPool, host: Host, unit: str) -> str:
    """`systemctl is-active UNIT` on `host`, once per unit per run: active, inactive, failed, activating, unknown..."""
    return pool.measure(host, f"unit {unit}", read_unit_state, unit)


# what `systemctl is-active` prints (systemd's unit_active_state_to_string): anything else is not a state
UNIT_STATES = ("active", "reloading", "inactive", "failed", "activating", "deactivating", "maintenance",
               "refreshing", "unknown")


def read_unit_state(conn, unit: str) -> str:
    """`systemctl is-active -- UNIT`: active, inactive, failed, activating, unknown... (`--`: a unit named
    `--version` is a unit). ProbeError when systemctl prints something that is not a state (its version, help)."""
    res = conn.run(command("systemctl", "is-active", "--", unit))
    state = res.stdout.strip() or "unknown"
    if state not in UNIT_STATES:
        raise ProbeError(f"systemctl is-active {unit}: not a unit state: {one_line(state)[:80]!r}"
                         + (f" ({one_line(res.stderr)})" if res.stderr.strip() else ""))
    return state


def uses_systemd(pool: HostPool, host: Host) -> bool:
    """The profile's word if it gives one, else what the host says."""
    return host.systemd if host.systemd is not None else pool.measure(host, "systemd", read_has_systemd)
