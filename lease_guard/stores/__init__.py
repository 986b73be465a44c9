"""Where Leases live: the LeaseStore protocol and its two implementations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._protocol import AcquisitionGate, EventRecorder, LeaseStore
from .memory import MemoryLeaseStore

if TYPE_CHECKING:
    from .kubernetes import KubernetesLeaseStore, shared_store


def __getattr__(name: str) -> Any:
    # Imported on first use, so that importing lease_guard does not import lightkube and httpx.
    if name in ("KubernetesLeaseStore", "shared_store"):
        from . import kubernetes

        return getattr(kubernetes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AcquisitionGate",
    "EventRecorder",
    "KubernetesLeaseStore",
    "LeaseStore",
    "MemoryLeaseStore",
    "shared_store",
]
