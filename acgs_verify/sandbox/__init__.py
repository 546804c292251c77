"""A local ACGS-like stack to run the checks against, with faults that can be switched on on purpose.

>>> from acgs_verify.sandbox import Sandbox, SandboxError, FAULTS
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from acgs_verify.sandbox.components.base import SandboxError
    from acgs_verify.sandbox.manager import FAULTS, Sandbox, fault_names

__all__ = ["FAULTS", "Sandbox", "SandboxError", "fault_names"]


def __getattr__(name: str) -> Any:
    # Lazy, because every service process imports acgs_verify.sandbox.service_app through this package,
    # and must not pay for httpx and yaml at start-up.
    if name == "SandboxError":
        from acgs_verify.sandbox.components.base import SandboxError

        return SandboxError
    if name in ("FAULTS", "Sandbox", "fault_names"):
        from acgs_verify.sandbox import manager

        return getattr(manager, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
