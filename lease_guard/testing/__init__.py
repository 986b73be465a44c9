"""Testing kit for code that uses lease_guard: in-memory Leases driven from your tests.

Registered as a pytest plugin (entry point ``pytest11``), so installing lease_guard gives
every test these fixtures:

- ``lease_store``: a fresh :class:`~lease_guard.MemoryLeaseStore`;
- ``lease_kit``: a :class:`LeaseKit` over that store, to make this replica lead, lose the
  lease, suffer an API-server outage, and assert on who led when.

Use them with pytest-trio's ``autojump_clock`` so lease timeouts take no real time::

    async def test_controller_stops_when_leadership_is_lost(lease_kit, autojump_clock):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_app, lease_kit.store)       # your app, given the store
            await lease_kit.wait_holder("my-operator", "me")
            lease_kit.take("my-operator")                       # another replica takes over
            ...
        assert lease_kit.holders("my-operator") == ["me", "other-replica"]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from .._record import LeaseSpec, micro_time
from ..stores.memory import MemoryLeaseStore

__all__ = ["LeaseKit", "lease_kit", "lease_store"]


class LeaseKit:
    """Controls over a MemoryLeaseStore, phrased as what happens to a replica.

    Every helper takes the Lease's name and, optionally, its ``namespace``. Without one,
    it acts on the Lease of that name wherever it is, so ``take("x")`` reaches the leader
    of ``ops/x``; a Lease that exists nowhere yet is taken in the kit's ``namespace``; a
    name that exists in two namespaces needs ``namespace=``.

    Args:
        store: the store your code under test uses.
        namespace: where a Lease that exists nowhere yet is created ("default").
    """

    def __init__(self, store: MemoryLeaseStore, namespace: str = "default") -> None:
        self.store = store
        self.namespace = namespace

    def _namespace(self, lease: str, namespace: str | None) -> str:
        if namespace is not None:
            return namespace
        found = self.store.namespaces_of(lease)
        if len(found) > 1:
            raise ValueError(f"lease {lease!r} exists in namespaces {found}: pass namespace= to say which")
        return found[0] if found else self.namespace

    def take(
        self, lease: str, identity: str = "other-replica", *, lease_duration: int = 15, namespace: str | None = None
    ) -> None:
        """Another replica takes the Lease now: the current leader's guarded code is cancelled.

        The other replica never renews, so after ``lease_duration`` of silence the Lease
        can be taken back by a candidate that is still campaigning.
        """
        namespace = self._namespace(lease, namespace)
        record = self.store.record(lease, namespace)
        now = micro_time()
        term = record.transitions + 1 if record is not None else 0
        self.store.put(lease, LeaseSpec(identity, lease_duration, now, now, term), namespace)

    def free(self, lease: str, *, namespace: str | None = None) -> None:
        """The holder releases the Lease itself, as a graceful shutdown does: a waiting
        candidate leads at once.

        It writes what lease_guard's own release writes: no holder, and the holder's
        identity as the release proof (``released_by``), which vouches that the holder's
        guarded code has stopped. Use it for a holder your test put there with
        :meth:`take`. To clear the Lease under a leader of your own code, as ``kubectl``
        or ``lease-guard release --force`` would, use :meth:`clear`. Does nothing if
        nobody holds the Lease.
        """
        namespace = self._namespace(lease, namespace)
        record = self.store.record(lease, namespace)
        if record is None or record.holder is None:
            return
        spec = record.spec
        released = LeaseSpec(
            "", spec.lease_duration_seconds, spec.acquire_time, micro_time(), spec.lease_transitions, record.holder
        )
        self.store.put(lease, released, namespace)

    def clear(self, lease: str, *, namespace: str | None = None) -> None:
        """Someone other than the holder clears it (``kubectl``, client-go's release,
        ``lease-guard release --force``): the leader's guarded code is cancelled when it
        sees the change.

        No release proof is written, so candidates take the Lease only after its
        ``leaseDurationSeconds`` of silence since the holder's last renewal: the holder's
        guarded code may still be running until then. Does nothing if nobody holds the Lease.
        """
        namespace = self._namespace(lease, namespace)
        record = self.store.record(lease, namespace)
        if record is None or record.holder is None:
            return
        spec = record.spec
        cleared = LeaseSpec("", spec.lease_duration_seconds, spec.acquire_time, spec.renew_time, spec.lease_transitions)
        self.store.put(lease, cleared, namespace)

    @contextlib.contextmanager
    def outage(self, *, error: bool = False) -> Iterator[None]:
        """The API server is unreachable inside the block (see MemoryLeaseStore.outage).

        A leader's guarded code is cancelled renew_deadline after its last renewal was sent.
        """
        with self.store.outage(error=error):
            yield

    def holder(self, lease: str, *, namespace: str | None = None) -> str | None:
        """Who holds the Lease now (None if free or absent)."""
        return self.store.holder(lease, self._namespace(lease, namespace))

    def holders(self, lease: str, *, namespace: str | None = None) -> list[str]:
        """The identities that held the Lease, in order, each listed again only after someone
        else held it in between.

        Renewals, releases and a holder taking the Lease again after its own release (as
        an ``@only_when_leading`` job does on each call) do not add an entry; for each
        tenure with its term and time, see :meth:`MemoryLeaseStore.tenures`.

        >>> kit = LeaseKit(MemoryLeaseStore())
        >>> kit.take("jobs", "a"); kit.free("jobs"); kit.take("jobs", "a"); kit.take("jobs", "b")
        >>> kit.holders("jobs")
        ['a', 'b']
        """
        held: list[str] = []
        for identity, _term, _at in self.store.tenures(lease, self._namespace(lease, namespace)):
            if not held or held[-1] != identity:
                held.append(identity)
        return held

    async def wait_holder(self, lease: str, identity: str | None = None, *, namespace: str | None = None) -> str:
        """Wait until someone (``identity``, if given) holds the Lease; return the holder.

        Without ``namespace``, the Lease may appear in any namespace.
        """
        while True:
            holder = self.holder(lease, namespace=namespace)
            if holder is not None and (identity is None or holder == identity):
                return holder
            await self.store.changed(lease, namespace)


@pytest.fixture
def lease_store() -> MemoryLeaseStore:
    """A fresh in-memory Lease store, shared by every candidate of the test."""
    return MemoryLeaseStore()


@pytest.fixture
def lease_kit(lease_store: MemoryLeaseStore) -> LeaseKit:
    """Controls over ``lease_store``: take, free, clear, outage, holder, holders, wait_holder."""
    return LeaseKit(lease_store)
