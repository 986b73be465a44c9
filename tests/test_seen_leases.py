"""The registry of Leases this process has seen exist (``_campaign.SeenLeases``), at unit level.

What it decides (a new candidate that finds no Lease waits if its process saw the Lease
exist) is tested through the public API in tests/test_guarantees.py. What is left is
bookkeeping no candidate can observe: entries are per store, namespace and name, and the
entry of a garbage-collected store is dropped, so a long-lived process creating stores does
not grow the registry forever, and a new store that happens to get a collected one's id()
does not inherit its history (which would only make it wait for nothing).
"""

from __future__ import annotations

import gc

from lease_guard import MemoryLeaseStore
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
