"""Kubernetes leader election for trio, as structured concurrency.

::

    async with leadership("my-operator"):
        await run_controller()      # cancelled the moment leadership can no longer be trusted

    @only_when_leading(lease="nightly-cleanup")
    async def cleanup(): ...        # scheduled on every replica; runs only on the leader
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._elector import Elector, Leadership
from ._errors import (
    ConfigurationError,
    LeadershipLost,
    LeaseConflict,
    LeaseGuardError,
    LeaseNotFound,
    LeaseStoreError,
    NamespaceNotFound,
    NoActiveElector,
    PermissionDenied,
    StoreUnavailable,
)
from ._events import EventKind, LeadershipEvent
from ._guards import leadership, only_when_leading
from ._record import LeaseRecord, LeaseSpec
from .stores import LeaseStore, MemoryLeaseStore

if TYPE_CHECKING:
    from .stores.kubernetes import KubernetesLeaseStore


def __getattr__(name: str) -> Any:
    # KubernetesLeaseStore is imported on first use: lightkube and httpx take a noticeable
    # part of a second to import, and the pytest plugin imports this package at every start.
    if name == "KubernetesLeaseStore":
        from .stores.kubernetes import KubernetesLeaseStore

        return KubernetesLeaseStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ConfigurationError",
    "Elector",
    "EventKind",
    "KubernetesLeaseStore",
    "Leadership",
    "LeadershipEvent",
    "LeadershipLost",
    "LeaseConflict",
    "LeaseGuardError",
    "LeaseNotFound",
    "LeaseRecord",
    "LeaseSpec",
    "LeaseStore",
    "LeaseStoreError",
    "MemoryLeaseStore",
    "NamespaceNotFound",
    "NoActiveElector",
    "PermissionDenied",
    "StoreUnavailable",
    "leadership",
    "only_when_leading",
]
