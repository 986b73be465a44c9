"""The registry of Leases this process has seen exist (``_campaign.SeenLeases``), at unit level.

What it decides (a new candidate that finds no Lease waits if its process saw the Lease
exist) is tested through the public API in tests/test_guarantees.py. What is left is
bookkeeping no candidate can observe: entries are per store, namespace and name, and the
entry of a garbage-collected store is dropped, so a long-lived process creating stores does
not grow the registry forever, and a new store that happens to get a collected one's id()
does not inherit its history (which would only make it wait for nothing). A store that
cannot be weakly referenced is kept for good instead of failing the campaign.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator

import trio
import trio.testing

from lease_guard import LeaseRecord, LeaseSpec, MemoryLeaseStore, leadership
from lease_guard._campaign import SeenLeases


def test_a_lease_is_seen_per_store_namespace_and_name() -> None:
    registry = SeenLeases()
    store, other_store = MemoryLeaseStore(), MemoryLeaseStore()
    registry.saw(store, "default", "jobs")
    registry.saw(store, "default", "jobs")
    assert registry.seen(store, "default", "jobs")
    assert not registry.seen(store, "other", "jobs")
    assert not registry.seen(store, "default", "other")
    assert not registry.seen(other_store, "default", "jobs")


def test_a_collected_store_is_forgotten() -> None:
    """A unit test on purpose: forgetting is a memory property, not reachable through the API."""
    registry = SeenLeases()
    kept = MemoryLeaseStore()
    registry.saw(kept, "default", "jobs")
    store = MemoryLeaseStore()
    registry.saw(store, "default", "jobs")
    registry.saw(store, "ops", "nightly")
    del store
    gc.collect()
    assert registry._seen == {id(kept): {("default", "jobs")}}


class SlottedStore:
    """A LeaseStore written with ``__slots__``: it cannot be weakly referenced."""

    __slots__ = ("inner",)

    def __init__(self, inner: MemoryLeaseStore) -> None:
        self.inner = inner

    @property
    def default_namespace(self) -> str:
        return self.inner.default_namespace

    async def get(self, namespace: str, name: str) -> LeaseRecord | None:
        return await self.inner.get(namespace, name)

    async def create(self, namespace: str, name: str, spec: LeaseSpec) -> LeaseRecord:
        return await self.inner.create(namespace, name, spec)

    async def update(self, current: LeaseRecord, spec: LeaseSpec) -> LeaseRecord:
        return await self.inner.update(current, spec)

    def watch(self, namespace: str, name: str) -> AsyncIterator[LeaseRecord | None]:
        return self.inner.watch(namespace, name)


async def test_a_store_that_cannot_be_weakly_referenced_is_remembered_for_good(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Through the public API: such a store works, and the rule still holds on it."""
    memory = MemoryLeaseStore()
    store = SlottedStore(memory)
    async with leadership("jobs", identity="a", store=store):
        pass
    memory.delete("jobs")
    async with leadership("jobs", identity="b", store=store):
        assert trio.current_time() == 15 + 10  # it saw the Lease exist: the absence is a deletion
