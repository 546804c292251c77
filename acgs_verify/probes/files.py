"""Small files read whole, with a cap: policies, certificates.

>>> data = read_capped(Path("/etc/ssl/acgs/cert.pem"), 1 << 20)     # ProbeError if unreadable
>>> len(data) > 1 << 20                                              # True: larger than the cap
"""

from __future__ import annotations

from pathlib import Path

from acgs_verify.probes.errors import ProbeError


def read_capped(path: Path, limit: int) -> bytes:
    """Up to limit + 1 bytes of path (more than `limit` means: too large to be what it should be)."""
    try:
        with open(path, "rb") as f:
            return f.read(limit + 1)
    except OSError as exc:
        raise ProbeError(f"cannot read {path}: {exc.strerror}") from None
