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

    Args:
        store: the store your code under test uses.
        namespace: the namespace of the Leases the helpers act on.
    """

    def __init__(self, store: MemoryLeaseStore, namespace: str = "default") -> None:
        self.store = store
        self.namespace = namespace

    def take(self, lease: str, identity: str = "other-replica", *, lease_duration: int = 15) -> None:
        """Another replica takes the Lease now: the current leader's guarded code is cancelled.

        The other replica never renews, so after ``lease_duration`` of silence the Lease
        can be taken back by a candidate that is still campaigning.
        """
        record = self.store.record(lease, self.namespace)
        now = micro_time()
        term = record.transitions + 1 if record is not None else 0
        self.store.put(lease, LeaseSpec(identity, lease_duration, now, now, term), self.namespace)

    def free(self, lease: str) -> None:
        """Clear the holder, as a graceful release does: a waiting candidate leads at once."""
        record = self.store.record(lease, self.namespace)
        now = micro_time()
        transitions = record.spec.lease_transitions if record is not None else 0
        self.store.put(lease, LeaseSpec("", 1, now, now, transitions), self.namespace)

    @contextlib.contextmanager
    def outage(self, *, error: bool = False) -> Iterator[None]:
        """The API server is unreachable inside the block (see MemoryLeaseStore.outage).

        A leader's guarded code is cancelled renew_deadline after its last renewal was sent.
        """
        with self.store.outage(error=error):
            yield

    def holder(self, lease: str) -> str | None:
        """Who holds the Lease now (None if free or absent)."""
        return self.store.holder(lease, self.namespace)

    def holders(self, lease: str) -> list[str]:
        """Everyone who took the Lease, in order (renewals and releases left out)."""
        return [identity for identity, _term, _at in self.store.tenures(lease, self.namespace)]

    async def wait_holder(self, lease: str, identity: str | None = None) -> str:
        """Wait until someone (``identity``, if given) holds the Lease; return the holder."""
        while True:
            holder = self.holder(lease)
            if holder is not None and (identity is None or holder == identity):
                return holder
            await self.store.changed(lease, self.namespace)


@pytest.fixture
def lease_store() -> MemoryLeaseStore:
    """A fresh in-memory Lease store, shared by every candidate of the test."""
    return MemoryLeaseStore()


@pytest.fixture
def lease_kit(lease_store: MemoryLeaseStore) -> LeaseKit:
    """Controls over ``lease_store``: take, free, outage, holders, wait_holder."""
    return LeaseKit(lease_store)
