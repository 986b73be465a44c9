"""Kubernetes leader election for trio, as structured concurrency.

::

    async with leadership("my-operator"):
        await run_controller()      # cancelled the moment leadership can no longer be trusted

    @only_when_leading(lease="nightly-cleanup")
    async def cleanup(): ...        # scheduled on every replica; runs only on the leader
"""

from __future__ import annotations

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
from .stores import KubernetesLeaseStore, LeaseStore, MemoryLeaseStore

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
