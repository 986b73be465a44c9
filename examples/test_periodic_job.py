"""Testing a decorated periodic job with the lease_guard pytest plugin (fixtures lease_kit, lease_store).

    pip install pytest-trio && pytest examples/test_periodic_job.py

``pytestmark`` below marks every test of the file for pytest-trio; with trio mode on for the
whole project (``trio_mode = true``, see docs/testing.md) it can go.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from lease_guard import LeadershipLost, LeaseStore, only_when_leading
from lease_guard.testing import LeaseKit

pytestmark = pytest.mark.trio


def make_cleanup(store: LeaseStore, removed: list[str]):  # type: ignore[no-untyped-def]
    """The code under test: a job every replica schedules, that only the leader runs."""

    @only_when_leading(lease="nightly-cleanup", store=store)
    async def cleanup() -> int:
        await trio.sleep(5)  # stand-in for deleting rows
        removed.append("rows")
        return 1

    return cleanup


async def test_only_one_replica_runs_each_tick(lease_kit: LeaseKit, autojump_clock: trio.testing.MockClock) -> None:
    removed: list[str] = []
    replica_a, replica_b = make_cleanup(lease_kit.store, removed), make_cleanup(lease_kit.store, removed)
    for _tick in range(3):
        assert await replica_a() == 1
        assert await replica_b() is None  # skipped at once: a holds the lease between ticks
        await trio.sleep(60)
    assert removed == ["rows"] * 3


async def test_the_job_is_cancelled_when_another_replica_takes_over(
    lease_kit: LeaseKit, autojump_clock: trio.testing.MockClock
) -> None:
    cleanup = make_cleanup(lease_kit.store, [])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_take_over_after, lease_kit, 2)
        with pytest.raises(LeadershipLost):
            await cleanup()


async def _take_over_after(kit: LeaseKit, seconds: float) -> None:
    await trio.sleep(seconds)
    kit.take("nightly-cleanup")


async def test_a_crashed_leader_is_replaced_after_lease_duration(
    lease_kit: LeaseKit, autojump_clock: trio.testing.MockClock
) -> None:
    lease_kit.take("nightly-cleanup", "crashed-replica")  # it will never renew
    cleanup = make_cleanup(lease_kit.store, [])
    assert await cleanup() is None
    await trio.sleep(15)
    assert await cleanup() == 1
    assert lease_kit.holders("nightly-cleanup") == ["crashed-replica", cleanup.identity]
