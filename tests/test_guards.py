"""leadership() and only_when_leading: exit paths, exceptions, release, and the decorator between calls."""

from __future__ import annotations

import contextlib

import pytest
import trio

from lease_guard import (
    Elector,
    LeadershipLost,
    LeaseSpec,
    MemoryLeaseStore,
    NoActiveElector,
    StoreUnavailable,
    leadership,
    only_when_leading,
)
from lease_guard._record import micro_time

from .faults import FaultyStore

LEASE = "jobs"


class Boom(Exception):
    pass


async def test_exception_in_block_propagates_unwrapped_and_releases(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    with pytest.raises(Boom) as raised:
        async with leadership(LEASE, identity="a", store=store):
            raise Boom("from the block")
    assert type(raised.value) is Boom
    assert raised.value.__context__ is None
    assert store.holder(LEASE) is None


async def test_normal_exit_releases(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    async with leadership(LEASE, identity="a", store=store):
        await trio.sleep(5)
    record = store.record(LEASE)
    assert record is not None
    assert (record.holder, record.spec.lease_duration_seconds, record.transitions) == (None, 1, 0)


async def test_release_on_exit_false_keeps_the_lease(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    async with leadership(LEASE, identity="a", store=store, release_on_exit=False):
        pass
    assert store.holder(LEASE) == "a"


async def test_cancelled_from_outside_releases(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    with trio.move_on_after(3):
        async with leadership(LEASE, identity="a", store=store):
            await trio.sleep_forever()
    assert trio.current_time() == 3
    assert store.holder(LEASE) is None


async def test_keyboard_interrupt_releases(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    with pytest.raises(KeyboardInterrupt):
        async with leadership(LEASE, identity="a", store=store):
            await trio.sleep(1)
            raise KeyboardInterrupt
    assert store.holder(LEASE) is None


async def test_release_is_bounded_when_the_server_is_unreachable(autojump_clock: trio.testing.MockClock) -> None:
    store = FaultyStore(MemoryLeaseStore())
    async with leadership(LEASE, identity="a", store=store, retry_period=2):
        await trio.sleep(0.5)
        store.stall()
    # the release was given retry_period (2 s) and then abandoned: the lease expires by itself
    assert trio.current_time() == 2.5


async def test_waiting_for_leadership_can_be_cancelled(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    store.steal(LEASE, "someone")
    with trio.move_on_after(5) as waited:
        async with leadership(LEASE, identity="a", store=store):
            raise AssertionError("must not lead")
    assert waited.cancelled_caught
    assert store.holder(LEASE) == "someone"


async def test_loss_is_raised_even_if_the_block_swallows_the_cancellation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryLeaseStore()
    with pytest.raises(LeadershipLost):
        async with leadership(LEASE, identity="a", store=store):
            store.steal(LEASE, "b")
            # The block swallows the cancellation and returns normally: still not silent.
            with contextlib.suppress(trio.Cancelled):
                await trio.sleep(1)


async def test_loss_does_not_release_someone_elses_lease(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    with pytest.raises(LeadershipLost):
        async with leadership(LEASE, identity="a", store=store):
            store.steal(LEASE, "b")
            await trio.sleep(1)
    assert store.holder(LEASE) == "b"


# -- only_when_leading with a lease -------------------------------------------------------


async def test_decorated_job_runs_when_free_and_returns_its_value(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()

    @only_when_leading(lease=LEASE, store=store)
    async def job(x: int) -> int:
        await trio.sleep(1)
        return x * 2

    assert await job(21) == 42
    assert store.holder(LEASE) == job.identity  # type: ignore[attr-defined]


async def test_decorated_job_skips_promptly_when_another_holds_a_live_lease(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryLeaseStore()
    store.steal(LEASE, "other-replica")
    ran = []

    @only_when_leading(lease=LEASE, store=store)
    async def job() -> str:
        ran.append(trio.current_time())
        return "ran"

    assert await job() is None
    assert ran == []
    assert trio.current_time() == 0  # it did not wait for the lease


async def test_decorated_job_keeps_its_identity_and_term_grows(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    terms = []

    @only_when_leading(lease=LEASE, store=store)
    async def job() -> None:
        record = store.record(LEASE)
        assert record is not None
        terms.append(record.transitions)

    for _ in range(3):
        await job()
        await trio.sleep(60)
    assert terms == [0, 1, 2]
    assert store.holder(LEASE) == job.identity  # type: ignore[attr-defined]


async def test_offset_schedules_do_not_both_run_a_tick(autojump_clock: trio.testing.MockClock) -> None:
    """Two replicas call every 60 s, 3 s apart: only the first one ever runs."""
    store = MemoryLeaseStore()
    runs: list[tuple[str, float]] = []

    def replica(name: str):  # type: ignore[no-untyped-def]
        @only_when_leading(lease=LEASE, store=store, identity=name)
        async def tick() -> None:
            runs.append((name, trio.current_time()))
            await trio.sleep(5)

        return tick

    a, b = replica("a"), replica("b")

    async def schedule(job, offset: float) -> None:  # type: ignore[no-untyped-def]
        for tick in range(5):
            await trio.sleep_until(offset + 60 * tick)
            await job()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(schedule, a, 0)
        nursery.start_soon(schedule, b, 3)
    assert {name for name, _ in runs} == {"a"}
    assert len(runs) == 5


async def test_crashed_holder_does_not_block_the_job_forever(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    now = micro_time()
    store.put(LEASE, LeaseSpec("crashed-replica", 15, now, now, 0))
    runs = []

    @only_when_leading(lease=LEASE, store=store)
    async def job() -> None:
        runs.append(trio.current_time())

    for _ in range(4):
        await job()
        await trio.sleep(10)
    # seen unchanged at 0 and 10; at 20 the silence has lasted 15 s or more: taken over.
    assert runs == [20, 30]


async def test_decorated_job_raises_leadership_lost_in_mid_call(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()

    @only_when_leading(lease=LEASE, store=store)
    async def job() -> None:
        await trio.sleep(3)
        store.steal(LEASE, "operator")
        await trio.sleep(100)

    with pytest.raises(LeadershipLost, match="'operator' took the lease"):
        await job()
    assert trio.current_time() == 3


async def test_decorated_job_says_when_the_server_is_unreachable(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()

    @only_when_leading(lease=LEASE, store=store)
    async def job() -> None:
        raise AssertionError("must not run")

    with store.outage(error=True), pytest.raises(StoreUnavailable):
        await job()


# -- following an Elector -----------------------------------------------------------------


async def test_bare_decorator_follows_the_elector_without_api_calls(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    store.steal(LEASE, "other")
    calls = []

    @only_when_leading
    async def job() -> str:
        calls.append(trio.current_time())
        return "done"

    async with Elector(LEASE, identity="me", store=store) as elector:
        assert await job() is None
        await elector.wait_leading()
        before = store.requests
        assert await job() == "done"
        assert store.requests == before
    assert calls == [15]


async def test_bare_decorator_outside_an_elector_says_how_to_fix_it() -> None:
    @only_when_leading
    async def job() -> None:
        pass

    with pytest.raises(NoActiveElector, match=r"async with Elector\(lease=...\)"):
        await job()


async def test_leadership_inside_an_elector_reuses_its_campaign(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    async with Elector(LEASE, identity="me", store=store) as elector:
        async with leadership(LEASE, store=store) as lead:  # nothing explicit conflicts
            assert lead.identity == "me"
            assert store.holder(LEASE) == "me"
        # leaving the inner block does not release: the Elector still leads
        assert elector.is_leader
        assert store.holder(LEASE) == "me"


async def test_lease_decorator_inside_an_elector_for_that_lease_reuses_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryLeaseStore()

    @only_when_leading(lease=LEASE, store=store)
    async def job() -> str:
        return "ran"

    async with Elector(LEASE, identity="me", store=store) as elector:
        await elector.wait_leading()
        before = store.requests
        assert await job() == "ran"
        assert store.requests == before


async def test_decorated_calls_pass_their_arguments_in_every_form(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()

    @only_when_leading(lease=LEASE, store=store)
    async def with_lease(a: int, *, b: int) -> int:
        return a * 10 + b

    @only_when_leading
    async def bare(a: int, *, b: int) -> int:
        return a * 10 + b

    assert await with_lease(1, b=2) == 12  # its own campaign
    async with Elector(LEASE, store=store) as elector:
        await elector.wait_leading()
        assert await with_lease(3, b=4) == 34  # reusing the Elector
        assert await bare(5, b=6) == 56


async def test_a_job_with_release_on_exit_releases_after_each_call(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()

    @only_when_leading(lease=LEASE, store=store, identity="a", release_on_exit=True)
    async def job() -> str:
        return "ran"

    assert await job() == "ran"
    record = store.record(LEASE)
    assert record is not None and (record.holder, record.spec.released_by) == (None, "a")


async def test_bare_calls_of_one_job_do_not_overlap_under_an_elector(autojump_clock: trio.testing.MockClock) -> None:
    results: list[str | None] = []

    @only_when_leading
    async def job() -> str:
        await trio.sleep(5)
        return "ran"

    async def call() -> None:
        results.append(await job())

    async with Elector(LEASE, store=MemoryLeaseStore()) as elector, trio.open_nursery() as nursery:
        await elector.wait_leading()
        nursery.start_soon(call)
        await trio.sleep(1)
        nursery.start_soon(call)
    assert results == [None, "ran"]


async def test_a_silent_holder_is_taken_over_at_exactly_lease_duration(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    store.steal(LEASE, "crashed")

    @only_when_leading(lease=LEASE, store=store)
    async def job() -> str:
        return "ran"

    assert await job() is None  # sees the holder at 0
    await trio.sleep(15)
    assert await job() == "ran"  # at 15.0, not a moment later
