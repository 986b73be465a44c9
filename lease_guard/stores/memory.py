"""MemoryLeaseStore: Leases in memory, with the API server's semantics, for tests and demos."""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import AsyncIterator, Iterator

import trio

from .._errors import LeaseConflict, LeaseNotFound, NamespaceNotFound, StoreUnavailable
from .._options import check_namespace
from .._record import LeaseRecord, LeaseSpec, micro_time


def _now() -> float:
    """trio's clock inside a run; NaN for a write made before the run (test setup)."""
    try:
        return trio.current_time()
    except RuntimeError:
        return math.nan


class MemoryLeaseStore:
    """Leases kept in memory: resourceVersions, conflicts and watches behave as on the API server.

    One store stands for one API server: share it between the candidates of a test. It
    belongs to one ``trio.run``. Besides the :class:`LeaseStore` operations it offers the
    controls tests need.

    Example::

        store = MemoryLeaseStore()
        async with leadership(lease="jobs", store=store) as lead:
            assert store.holder("jobs") == lead.identity
            store.steal("jobs", "someone-else")   # the block is cancelled at its next checkpoint

    Args:
        namespaces: if given, only these namespaces exist, and creating a Lease elsewhere
            raises NamespaceNotFound as the API server does. By default every namespace exists.
    """

    def __init__(self, *, namespaces: set[str] | None = None) -> None:
        self._records: dict[tuple[str, str], LeaseRecord] = {}
        self._versions = itertools.count(1)
        self._changed: dict[tuple[str, str], trio.Event] = {}
        self._namespaces = namespaces
        self._outage: trio.Event | None = None
        self._outage_error = False
        self._tenures: dict[tuple[str, str], list[tuple[str, int, float]]] = {}
        self.events: list[tuple[str, str, str, str]] = []
        """Events recorded by Electors with ``record_events=True``: (namespace, lease, reason, message)."""
        self.requests = 0
        """How many get, create and update requests the store has answered or refused."""

    @property
    def default_namespace(self) -> str:
        """Always ``"default"``."""
        return "default"

    # -- controls for tests ---------------------------------------------------------------

    def holder(self, lease: str, namespace: str = "default") -> str | None:
        """The current holder identity of ``lease``, or None if it is free or absent.

        >>> MemoryLeaseStore().holder("nobody-here") is None
        True
        """
        record = self._records.get((namespace, lease))
        return record.holder if record else None

    def record(self, lease: str, namespace: str = "default") -> LeaseRecord | None:
        """The whole LeaseRecord of ``lease``, or None if absent."""
        return self._records.get((namespace, lease))

    def tenures(self, lease: str, namespace: str = "default") -> list[tuple[str, int, float]]:
        """Each change of holder, in order: (identity, term, trio time it was written).

        Renewals and releases are left out; a holder that takes the Lease again after a
        release appears again.
        """
        return list(self._tenures.get((namespace, lease), []))

    def namespaces_of(self, lease: str) -> list[str]:
        """The namespaces in which a Lease named ``lease`` exists, sorted.

        >>> store = MemoryLeaseStore()
        >>> _ = store.steal("jobs", "a", namespace="ops")
        >>> store.namespaces_of("jobs")
        ['ops']
        """
        return sorted(namespace for namespace, name in self._records if name == lease)

    async def changed(self, lease: str, namespace: str | None = "default") -> None:
        """Wait until the Lease is next written or deleted (in any namespace when ``namespace`` is None)."""
        key = (namespace, lease) if namespace is not None else ("", lease)
        await self._changed.setdefault(key, trio.Event()).wait()

    def steal(self, lease: str, identity: str, namespace: str = "default") -> LeaseRecord:
        """Overwrite the holder, as another replica or an operator would; returns the new record.

        The new holder gets a new term (leaseTransitions + 1). Works whether or not the Lease exists.
        """
        current = self._records.get((namespace, lease))
        now = micro_time()
        spec = LeaseSpec(
            holder=identity,
            lease_duration_seconds=current.spec.lease_duration_seconds if current else 15,
            acquire_time=now,
            renew_time=now,
            lease_transitions=(current.transitions + 1) if current else 0,
        )
        return self._write(namespace, lease, spec)

    def put(self, lease: str, spec: LeaseSpec, namespace: str = "default") -> LeaseRecord:
        """Write any spec unconditionally, e.g. the odd contents another client might leave."""
        return self._write(namespace, lease, spec)

    def delete(self, lease: str, namespace: str = "default") -> None:
        """Delete the Lease, as ``kubectl delete lease`` would."""
        if self._records.pop((namespace, lease), None) is not None:
            self._notify((namespace, lease))

    @contextlib.contextmanager
    def outage(self, *, error: bool = False) -> Iterator[None]:
        """Make the store unreachable inside the ``with`` block.

        By default requests hang (a black-holed network) and watches deliver nothing until
        the block ends; with ``error=True`` requests fail at once with StoreUnavailable.

        Example::

            with store.outage():
                await trio.sleep(30)    # the leader's guarded code is cancelled by its deadline
        """
        self._outage = trio.Event()
        self._outage_error = error
        try:
            yield
        finally:
            self._outage.set()
            self._outage = None

    # -- LeaseStore -----------------------------------------------------------------------

    async def get(self, namespace: str, name: str) -> LeaseRecord | None:
        """Read the Lease; None if absent."""
        await self._reach()
        return self._records.get((namespace, name))

    async def create(self, namespace: str, name: str, spec: LeaseSpec) -> LeaseRecord:
        """Create the Lease; LeaseConflict if it exists."""
        await self._reach()
        check_namespace(namespace)
        if self._namespaces is not None and namespace not in self._namespaces:
            raise NamespaceNotFound(f'namespace "{namespace}" does not exist: create it first')
        if (namespace, name) in self._records:
            raise LeaseConflict(f"lease {namespace}/{name} already exists")
        return self._write(namespace, name, spec)

    async def update(self, current: LeaseRecord, spec: LeaseSpec) -> LeaseRecord:
        """Replace the spec if the resourceVersion still matches."""
        await self._reach()
        key = (current.namespace, current.name)
        stored = self._records.get(key)
        if stored is None:
            raise LeaseNotFound(f"lease {current.namespace}/{current.name} was deleted")
        if stored.resource_version != current.resource_version:
            raise LeaseConflict(
                f"lease {current.namespace}/{current.name} changed: resourceVersion is "
                f"{stored.resource_version}, the write expected {current.resource_version}"
            )
        return self._write(current.namespace, current.name, spec)

    async def watch(self, namespace: str, name: str) -> AsyncIterator[LeaseRecord | None]:
        """Yield the current state, then every new state (coalescing bursts)."""
        key = (namespace, name)
        last_version: str | None = "unset"
        while True:
            await self._reach(count=False)
            changed = self._changed.setdefault(key, trio.Event())
            record = self._records.get(key)
            version = record.resource_version if record else None
            if version != last_version:
                last_version = version
                yield record
            await changed.wait()

    async def record_event(self, namespace: str, name: str, *, reason: str, message: str, identity: str) -> None:
        """Keep the event in :attr:`events`."""
        await self._reach()
        self.events.append((namespace, name, reason, message))

    # -- internals ------------------------------------------------------------------------

    def _write(self, namespace: str, name: str, spec: LeaseSpec) -> LeaseRecord:
        previous = self._records.get((namespace, name))
        record = LeaseRecord(namespace, name, str(next(self._versions)), spec)
        if record.holder is not None and (
            previous is None or previous.holder != record.holder or (previous.transitions != record.transitions)
        ):
            self._tenures.setdefault((namespace, name), []).append((record.holder, record.transitions, _now()))
        self._records[(namespace, name)] = record
        self._notify((namespace, name))
        return record

    def _notify(self, key: tuple[str, str]) -> None:
        # ("", name) is the key of changed(name, namespace=None): no namespace is named "".
        for waiting in (key, ("", key[1])):
            event = self._changed.pop(waiting, None)
            if event is not None:
                event.set()

    async def _reach(self, *, count: bool = True) -> None:
        """One round trip: a checkpoint, or the outage's effect."""
        if count:
            self.requests += 1
        while self._outage is not None:
            if self._outage_error:
                raise StoreUnavailable("the API server is unreachable (simulated outage)")
            await self._outage.wait()
        await trio.lowlevel.checkpoint()
