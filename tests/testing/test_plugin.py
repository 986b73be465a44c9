"""The pytest plugin's fixtures, used the way users' tests use them."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from lease_guard import Elector, LeadershipLost, MemoryLeaseStore, leadership
from lease_guard.testing import LeaseKit

LEASE = "my-operator"


def test_fixtures_are_registered(lease_store: MemoryLeaseStore, lease_kit: LeaseKit) -> None:
    assert lease_kit.store is lease_store
    assert lease_store.holder(LEASE) is None


async def test_take_cancels_the_leader_and_holders_tell_the_story(
    lease_kit: LeaseKit, autojump_clock: trio.testing.MockClock
) -> None:
    async with Elector(LEASE, identity="me", store=lease_kit.store) as elector:
        assert await lease_kit.wait_holder(LEASE, "me") == "me"
        with pytest.raises(LeadershipLost, match="'other-replica' took the lease"):
            async with elector.leading():
                lease_kit.take(LEASE)
                await trio.sleep_forever()
        # the other replica never renews: after 15 s of silence we lead again
        await elector.wait_leading()
        assert trio.current_time() == 15
    assert lease_kit.holders(LEASE) == ["me", "other-replica", "me"]


async def test_free_lets_a_waiting_replica_lead_at_once(
    lease_kit: LeaseKit, autojump_clock: trio.testing.MockClock
) -> None:
    lease_kit.take(LEASE, "someone", lease_duration=3600)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_lead_once, lease_kit.store)
        await trio.sleep(10)
        assert lease_kit.holder(LEASE) == "someone"
        lease_kit.free(LEASE)
        assert await lease_kit.wait_holder(LEASE, "me") == "me"
        assert trio.current_time() == 10


async def _lead_once(store: MemoryLeaseStore) -> None:
    async with leadership(LEASE, identity="me", store=store):
        pass


async def test_outage_cancels_guarded_work_at_the_deadline(
    lease_kit: LeaseKit, autojump_clock: trio.testing.MockClock
) -> None:
    with pytest.raises(LeadershipLost, match="renew_deadline"):
        async with leadership(LEASE, identity="me", store=lease_kit.store):
            await trio.sleep(5)  # renewals at 2 and 4
            with lease_kit.outage():
                await trio.sleep(60)
    # cancelled at 4 + 10; leaving the block ended the outage, so the release went through at once
    assert trio.current_time() == 4 + 10
    assert lease_kit.holder(LEASE) is None
