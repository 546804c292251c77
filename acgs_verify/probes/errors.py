"""The errors a probe raises. No pytest here: probes are a library, and the plugin turns these into findings.

>>> raise ProbeError("cannot read /var/log/acgs/auth_service.log: permission denied")
"""

from __future__ import annotations


class ProbeError(Exception):
    """A probe could not measure: the one-line reason (connection refused, timed out, ...)."""
