"""A decorated job's call (``@only_when_leading(lease=...)``): what it remembers between calls,
how it ends, and what it raises, through the public API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio
import trio.testing

from lease_guard import (
    Elector,
    LeaseRecord,
    LeaseStoreError,
    MemoryLeaseStore,
    StoreUnavailable,
    only_when_leading,
)

from .faults import FaultyStore

LEASE = "jobs"


class Boom(Exception):
    pass


class WatchBreaks(FaultyStore):
    """Once ``failure`` is set, the watch raises it right after delivering the next state."""

    failure: LeaseStoreError | None = None

    async def watch(self, namespace: str, name: str) -> AsyncIterator[LeaseRecord | None]:
        async for record in super().watch(namespace, name):
            yield record
            if self.failure is not None:
                raise self.failure


# -- what a job remembers between calls -----------------------------------------------------------


def test_a_call_in_a_new_trio_run_does_not_count_silence_on_the_last_runs_clock() -> None:
    """A job remembers since when it has seen the Lease unchanged, on its ``trio.run``'s clock.
    Another run's clock has another origin (trio's own clock starts at a random offset), so
    a call in a new run looks afresh: the holder it sees was seen just now, however far the
    new clock reads past the time of the last run's observation."""
    store = MemoryLeaseStore()  # the API server, which outlives both runs
    store.steal(LEASE, "other")  # another replica holds the Lease; nothing writes it between the runs
    ran: list[float] = []

    @only_when_leading(lease=LEASE, store=store)
    async def job() -> str:
        ran.append(trio.current_time())
        return "ran"

    async def next_run() -> tuple[str | None, str | None]:
        first = await job()  # the holder is seen at 100: its silence counts from now
        await trio.sleep(15)
        return first, await job()

    assert trio.run(job, clock=trio.testing.MockClock(autojump_threshold=0)) is None  # seen held at 0
    later = trio.testing.MockClock(autojump_threshold=0)
    later.jump(100)  # this run's clock starts elsewhere
    assert trio.run(next_run, clock=later) == (None, "ran")
    assert ran == [115]


async def test_two_jobs_reusing_one_elector_run_at_the_same_time(autojump_clock: trio.testing.MockClock) -> None:
    """Overlapping calls are refused per job; different jobs served by the same Elector run
    side by side (a job does not skip because another job happens to run)."""
    store = MemoryLeaseStore()
    results: dict[str, str | None] = {}

    def job(name: str) -> Callable[[], Awaitable[str | None]]:
        @only_when_leading(lease=LEASE, store=store)
        async def work() -> str:
            await trio.sleep(5)
            return name

        return work

    async def call(name: str) -> None:
        results[name] = await job(name)()

    async with Elector(LEASE, store=store) as elector, trio.open_nursery() as nursery:
        await elector.wait_leading()
        nursery.start_soon(call, "a")
        nursery.start_soon(call, "b")
    assert results == {"a": "a", "b": "b"}
    assert trio.current_time() == 5


# -- how a call ends --------------------------------------------------------------------------------


async def test_a_call_returns_as_soon_as_its_function_does_even_with_a_renewal_in_flight(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FaultyStore(MemoryLeaseStore())

    @only_when_leading(lease=LEASE, store=store)
    async def job() -> str:
        await trio.sleep(1)
        store.stall()  # the renewal sent at 2 gets no answer
        await trio.sleep(2)
        return "ran"

    assert await job() == "ran"
    assert trio.current_time() == 3  # not at the tenure's deadline (10), waiting for that renewal


@pytest.mark.parametrize("release_on_exit", [False, True])
async def test_a_call_makes_no_renewal_after_its_function_returned(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, release_on_exit: bool
) -> None:
    """The call's tenure ends when its function returns: the renewals stop, and the job's own
    release is not mistaken for a loss."""
    memory = MemoryLeaseStore()
    store = FaultyStore(memory)

    @only_when_leading(lease=LEASE, store=store, identity="a", release_on_exit=release_on_exit)
    async def job() -> str:
        await trio.sleep(3)
        return "ran"

    assert await job() == "ran"
    await trio.sleep(30)
    assert [(at, verb) for at, verb in store.requests if at >= 3] == ([(3, "update")] if release_on_exit else [])
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING] == []
    record = memory.record(LEASE)
    assert record is not None
    assert (record.holder, record.spec.released_by) == ((None, "a") if release_on_exit else ("a", None))


# -- what a call raises -----------------------------------------------------------------------------


async def test_a_call_that_cannot_write_in_time_gives_up_within_renew_deadline_of_the_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Reading and writing share one renew_deadline, counted from the call."""
    store = FaultyStore(MemoryLeaseStore())
    store.watch_held = True  # the first read takes 3 s
    store.answer_delay = 30.0  # the write's answer takes longer than any deadline

    @only_when_leading(lease=LEASE, store=store)
    async def job() -> None:
        raise AssertionError("must not run")

    async def answer_the_read() -> None:
        await trio.sleep(3)
        store.watch_held = False

    async with trio.open_nursery() as nursery:
        nursery.start_soon(answer_the_read)
        with pytest.raises(StoreUnavailable) as raised:
            await job()
    assert trio.current_time() == 10
    assert str(raised.value) == (
        "could not decide whether to run: no answer to a write of lease default/jobs within renew_deadline "
        "(10s) of the call"
    )


async def test_a_campaign_failure_while_the_function_raises_is_logged_beside_the_functions_exception(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = WatchBreaks(MemoryLeaseStore())

    @only_when_leading(lease=LEASE, store=store)
    async def job() -> None:
        store.failure = LeaseStoreError("the watch broke")  # at the renewal's echo, t=2
        try:
            await trio.sleep_forever()
        finally:
            raise Boom("its cleanup failed")

    with pytest.raises(Boom):
        await job()
    assert (
        "lease default/jobs: the campaign failed too, while the block was raising Boom('its cleanup failed'): "
        "LeaseStoreError('the watch broke')"
    ) in caplog.messages
