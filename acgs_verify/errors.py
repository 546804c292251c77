"""The errors a probe raises. No pytest here: probes are a library, and the plugin turns these into findings.

>>> raise ProbeError("cannot read /var/log/acgs/auth_service.log: permission denied")
"""

from __future__ import annotations


class ProbeError(Exception):
    """A probe could not measure: the one-line reason (connection refused, timed out, ...)."""


class Unreachable(ProbeError):
    """A target that did not answer at all (a host, or an address and port): found once per run, then every check
    on it raises this at once, citing the first try. Its checks could not measure: the outcome is `error`, and the
    next step is `reach_step`, how to restore the connection, never the runbook's repair for a wrong value.

    >>> raise Unreachable("app-2", "10.0.0.5:22 did not answer within 3 s (first tried by SYS-06)",
    ...                   reach_step="`ssh -v acgs@10.0.0.5`")
    """

    def __init__(self, target: str, reason: str, reach_step: str = "", address: str = "", port: int | None = None):
        super().__init__(f"{target} unreachable: {reason}")
        self.target, self.reason, self.reach_step = target, reason, reach_step
        self.address, self.port = address, port
