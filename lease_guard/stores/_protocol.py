"""The LeaseStore protocol: the four operations a campaign needs from the API server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

from .._record import LeaseRecord, LeaseSpec


@runtime_checkable
class LeaseStore(Protocol):
    """Where Leases live. Implement it to elect leaders through something other than Kubernetes.

    Every write is optimistic: ``update`` succeeds only if the Lease still has the
    resourceVersion of ``current``, and ``create`` only if no Lease exists. A lost race
    raises :class:`~lease_guard.LeaseConflict`; transient failures raise
    :class:`~lease_guard.StoreUnavailable`, which the campaign retries.
    """

    @property
    def default_namespace(self) -> str:
        """The namespace used when the caller names none."""
        ...

    async def get(self, namespace: str, name: str) -> LeaseRecord | None:
        """Read the Lease; None if it does not exist."""
        ...

    async def create(self, namespace: str, name: str, spec: LeaseSpec) -> LeaseRecord:
        """Create the Lease; LeaseConflict if it exists, NamespaceNotFound if the namespace doesn't."""
        ...

    async def update(self, current: LeaseRecord, spec: LeaseSpec) -> LeaseRecord:
        """Replace the spec if the Lease is still at ``current.resource_version``.

        Raises LeaseConflict when it changed since, LeaseNotFound when it was deleted.
        """
        ...

    def watch(self, namespace: str, name: str) -> AsyncIterator[LeaseRecord | None]:
        """The Lease's state now (None if absent), then each new state as it changes.

        The iterator never ends by itself: it hides stream timeouts, expired
        resourceVersions (HTTP 410) and transient errors by re-reading and resuming, and may
        skip intermediate states or repeat the current one. Permanent errors (permission,
        namespace) are raised.
        """
        ...


@runtime_checkable
class EventRecorder(Protocol):
    """A store that can also record leadership events (Kubernetes Events on the Lease)."""

    async def record_event(self, namespace: str, name: str, *, reason: str, message: str, identity: str) -> None:
        """Record that something happened to the Lease; raise LeaseStoreError on failure."""
        ...


@runtime_checkable
class AcquisitionGate(Protocol):
    """A store that knows when its process has no headroom for another tenure.

    A campaign asks before every acquisition (never before a renewal): when the answer is
    False it does not try to take the Lease and asks again a retry_period later. This is
    how a process with more Leases than its CPU can renew keeps renewing the ones it holds
    instead of losing them all.
    """

    def admits_acquisition(self) -> bool:
        """True when one more tenure can be renewed on time."""
        ...
