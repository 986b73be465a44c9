"""The campaign's timing, in virtual time: deadlines, late answers, steals, crashes, races."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator

import pytest
import trio

from lease_guard import (
    Elector,
    LeadershipLost,
    LeaseRecord,
    LeaseSpec,
    MemoryLeaseStore,
    StoreUnavailable,
    leadership,
    only_when_leading,
)
from lease_guard._record import INT32_MAX, micro_time

from .faults import FaultyStore, Intervals

LEASE = "jobs"


async def steal_at(store: MemoryLeaseStore, when: float) -> None:
    """Another client overwrites the holder at ``when``, as an operator would."""
    await trio.sleep_until(when)
    store.steal(LEASE, "operator")


async def lead_until_lost(
    store: FaultyStore | MemoryLeaseStore, identity: str, **options: float
) -> tuple[float, LeadershipLost]:
    """Lead with a block that never ends by itself; return when it was cancelled and why."""
    cancelled_at = math.nan
    with pytest.raises(LeadershipLost) as lost:
        async with leadership(LEASE, identity=identity, store=store, **options):  # type: ignore[arg-type]
            try:
                await trio.sleep_forever()
            finally:
                cancelled_at = trio.current_time()
    return cancelled_at, lost.value


async def test_first_candidate_leads_at_once_with_term_zero(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    async with leadership(LEASE, identity="a", store=store) as lead:
        assert trio.current_time() == 0
        assert (lead.identity, lead.term) == ("a", 0)
        assert store.holder(LEASE) == "a"
        assert lead.deadline == 10


async def test_renewals_every_retry_period_keep_the_deadline_moving(autojump_clock: trio.testing.MockClock) -> None:
    store = FaultyStore(MemoryLeaseStore())
    async with leadership(LEASE, identity="a", store=store) as lead:
        await trio.sleep(7)
        # renewals sent at 2, 4, 6: the deadline counts from the last one sent.
        assert lead.deadline == 16
    updates = [at for at, verb in store.requests if verb == "update"]
    assert updates[:3] == [2, 4, 6]


async def test_stuck_request_cancels_the_block_at_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    store = FaultyStore(MemoryLeaseStore())

    async def partition_at(when: float) -> None:
        await trio.sleep_until(when)
        store.stall()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(partition_at, 5)
        when, lost = await lead_until_lost(store, "a")
    # Last successful renewal sent at 4; renew_deadline 10: the scope ends at 14, exactly,
    # although the renewal sent at 6 never returns.
    assert when == 14
    assert "renew_deadline" in lost.reason


async def test_a_late_answer_does_not_extend_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    memory = MemoryLeaseStore()
    store = FaultyStore(memory)
    seen_deadlines: list[float] = []

    async def slow_answers_from(when: float) -> None:
        await trio.sleep_until(when)
        store.answer_delay = 3

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_answers_from, 5)
        async with leadership(LEASE, identity="a", store=store) as lead:
            await trio.sleep_until(9.5)
            seen_deadlines.append(lead.deadline)
    # The renewal sent at 6 answered at 9: the deadline is 6 + 10, not 9 + 10.
    assert seen_deadlines == [16]


class ShieldedWrites(FaultyStore):
    """A store whose writes cannot be abandoned midway (a LeaseStore may do that): their
    answers arrive, however late, instead of being cancelled at the deadline."""

    async def update(self, current: LeaseRecord, spec: LeaseSpec) -> LeaseRecord:
        with trio.CancelScope(shield=True):
            record = await super().update(current, spec)
        return record


async def test_an_answer_after_the_deadline_cannot_revive_the_tenure(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    memory = MemoryLeaseStore()
    store = ShieldedWrites(memory)

    async def very_slow_answers_from(when: float) -> None:
        await trio.sleep_until(when)
        store.answer_delay = 12

    async with trio.open_nursery() as nursery, Elector(LEASE, identity="a", store=store) as elector:
        nursery.start_soon(very_slow_answers_from, 5)
        with pytest.raises(LeadershipLost):
            async with elector.leading():
                await trio.sleep_forever()
        # The write sent at 6 took effect at once, but its answer arrives at 18: the scope
        # ended at 4 + 10, and the answer, when it comes, does not make us leader again.
        assert trio.current_time() == 14
        await trio.sleep_until(18.5)
        assert not elector.is_leader
    assert any("answer arrived after the deadline" in r.getMessage() for r in caplog.records)


async def test_a_steal_cancels_the_block_at_once(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(steal_at, store, 3.25)
        when, lost = await lead_until_lost(store, "a")
    assert when == 3.25
    assert lost.reason == "'operator' took the lease"
    assert (lost.identity, lost.term) == ("a", 0)
    assert store.holder(LEASE) == "operator"


async def test_deleting_the_lease_ends_the_tenure(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()

    async def delete_at(when: float) -> None:
        await trio.sleep_until(when)
        store.delete(LEASE)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(delete_at, 1)
        when, lost = await lead_until_lost(store, "a")
    assert (when, lost.reason) == (1, "the Lease was deleted")


async def test_released_lease_is_taken_over_at_once(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    started: dict[str, float] = {}

    async def candidate(identity: str, work: float) -> None:
        async with leadership(LEASE, identity=identity, store=store) as lead:
            started[identity] = trio.current_time()
            assert lead.term == len(started) - 1
            await trio.sleep(work)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(candidate, "a", 4.5)
        await trio.sleep(0.1)
        nursery.start_soon(candidate, "b", 1)
    # b follows a's release without any delay (watch-driven).
    assert started == {"a": 0, "b": 4.5}


async def test_crashed_holder_is_taken_over_after_a_full_lease_duration_of_silence(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryLeaseStore()
    crashed = FaultyStore(memory)
    taken_at: list[float] = []

    async def crash_at(when: float) -> None:
        await trio.sleep_until(when)
        crashed.stall()  # a process that stopped: no more writes, no release

    async def follower() -> None:
        async with leadership(LEASE, identity="b", store=memory):
            taken_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(crash_at, 5)
        nursery.start_soon(lead_until_lost, crashed, "a")
        await trio.sleep(0.5)
        nursery.start_soon(follower)
    # a's last write took effect at 4; b saw it then: b waits 15 s of silence, not less.
    assert taken_at == [19]


async def test_a_fresh_follower_waits_a_whole_lease_duration(autojump_clock: trio.testing.MockClock) -> None:
    """A Lease found held at start-up gets the full duration from when it was first seen."""
    store = MemoryLeaseStore()
    now = micro_time()
    store.put(LEASE, LeaseSpec("ghost", 30, now, now, 4))
    await trio.sleep(100)
    async with leadership(LEASE, identity="b", store=store) as lead:
        assert trio.current_time() == 130
        assert lead.term == 5


async def test_concurrent_candidates_exactly_one_wins(autojump_clock: trio.testing.MockClock) -> None:
    memory = MemoryLeaseStore()
    intervals = Intervals()
    terms: list[int] = []

    async def candidate(identity: str) -> None:
        # Each on its own network path, answers arriving at different times: not in lockstep,
        # so a write that ignored the resourceVersion would let two of them lead.
        store = FaultyStore(memory, answer_delay=0.01 * int(identity[1:]))
        async with leadership(LEASE, identity=identity, store=store) as lead:
            intervals.start(identity)
            terms.append(lead.term)
            await trio.sleep(1)
            intervals.stop(identity)

    async with trio.open_nursery() as nursery:
        for n in range(8):
            nursery.start_soon(candidate, f"c{n}")
    intervals.assert_disjoint()
    assert len(intervals.spans) == 8
    assert terms == sorted(terms) and len(set(terms)) == 8


async def test_transient_errors_are_retried_within_the_deadline(autojump_clock: trio.testing.MockClock) -> None:
    store = FaultyStore(MemoryLeaseStore())
    async with leadership(LEASE, identity="a", store=store) as lead:
        store.errors.extend([StoreUnavailable("503"), StoreUnavailable("429", retry_after=1)])
        await trio.sleep(8)
        # 2: 503, retried after retry_period; 4: 429 asking for 1 s; 5: success; then 7.
        assert lead.deadline == 17
    assert [at for at, verb in store.requests if verb == "update"][:4] == [2, 4, 5, 7]


async def test_duplicate_identity_stops_leading_and_says_why(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryLeaseStore()

    async def impostor_writes_at(when: float) -> None:
        await trio.sleep_until(when)
        record = store.record(LEASE)
        assert record is not None
        store.put(LEASE, LeaseSpec("a", 15, record.spec.acquire_time, micro_time(), record.spec.lease_transitions))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(impostor_writes_at, 3)
        when, lost = await lead_until_lost(store, "a")
    assert when == 3
    assert "duplicate identity" in lost.reason
    assert any(r.levelno == logging.ERROR and "same identity" in r.getMessage() for r in caplog.records)


async def test_same_identity_restarting_does_not_take_over_a_live_lease(autojump_clock: trio.testing.MockClock) -> None:
    """A second process with our identity is not us: it waits like any follower."""
    store = MemoryLeaseStore()
    async with Elector(LEASE, identity="a", store=store) as first:
        await first.wait_leading()
        async with Elector(LEASE, identity="a", store=store) as second:
            await trio.sleep(30)
            assert first.is_leader and not second.is_leader


@pytest.mark.parametrize(
    ("spec", "takeover_at"),
    [
        # Free without the release proof: whoever cleared it, its holder may still run.
        pytest.param(LeaseSpec("", 15, None, None, 3), 15, id="empty-holder-waits-out-our-duration"),
        pytest.param(LeaseSpec(None, None, None, None, None), 15, id="no-fields-waits-out-our-duration"),
        pytest.param(LeaseSpec("", 1, None, None, 3, released_by="x"), 0, id="released-with-proof-is-free"),
        pytest.param(LeaseSpec("x", None, None, None, None), 15, id="missing-duration-uses-ours"),
        pytest.param(LeaseSpec("x", 0, None, None, None), 15, id="zero-duration-uses-ours"),
        pytest.param(LeaseSpec("x", -5, "bad", "not a time", -3), 15, id="negative-and-garbage"),
        pytest.param(LeaseSpec("x", 40, "yesterday", "2026-13-45T99:99:99Z", 7), 40, id="unparseable-times-ignored"),
        pytest.param(LeaseSpec("x", INT32_MAX, None, None, 1), math.inf, id="huge-duration-honoured"),
        pytest.param(LeaseSpec(None, 15, None, None, INT32_MAX), math.inf, id="exhausted-term-never-taken"),
    ],
)
async def test_foreign_lease_contents(
    autojump_clock: trio.testing.MockClock, spec: LeaseSpec, takeover_at: float
) -> None:
    store = MemoryLeaseStore()
    store.put(LEASE, spec)
    with trio.move_on_after(1000):
        async with leadership(LEASE, identity="b", store=store) as lead:
            assert trio.current_time() == takeover_at
            expected_term = max(spec.lease_transitions or 0, 0) + 1
            assert lead.term == expected_term
            return
    assert takeover_at == math.inf


async def test_renewals_keep_the_acquire_time_and_term_of_the_tenure(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    async with leadership(LEASE, identity="a", store=store) as lead:
        acquired = store.record(LEASE)
        assert acquired is not None
        await trio.sleep(7)  # three renewals
        renewed = store.record(LEASE)
        assert renewed is not None and renewed.resource_version != acquired.resource_version
        assert renewed.spec.acquire_time == acquired.spec.acquire_time
        assert renewed.spec.renew_time != acquired.spec.renew_time
        assert renewed.spec.lease_transitions == acquired.spec.lease_transitions == lead.term


async def test_a_loss_names_its_lease_and_a_steal_after_a_failed_renewal_is_not_caused_by_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryLeaseStore()
    store = FaultyStore(memory)
    with pytest.raises(LeadershipLost) as lost:
        async with leadership(LEASE, identity="a", namespace="ops", store=store):
            store.errors.append(StoreUnavailable("503"))  # the renewal at 2 fails
            await trio.sleep(2.5)
            memory.steal(LEASE, "thief", namespace="ops")
            await trio.sleep_forever()
    assert (lost.value.lease, lost.value.namespace, lost.value.identity) == (LEASE, "ops", "a")
    assert lost.value.reason == "'thief' took the lease"
    assert lost.value.__cause__ is None


async def test_a_release_clears_the_holder_with_the_proof_and_keeps_the_term(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryLeaseStore()
    async with leadership(LEASE, identity="a", store=store) as lead:
        await trio.sleep(3)
        held = store.record(LEASE)
    released = store.record(LEASE)
    assert held is not None and released is not None
    spec = released.spec
    assert (spec.holder, spec.released_by, spec.lease_duration_seconds) == ("", "a", 1)
    assert spec.lease_transitions == held.spec.lease_transitions == lead.term
    assert spec.renew_time is not None and spec.acquire_time == spec.renew_time != held.spec.renew_time


class NoHeadroom(FaultyStore):
    """A store that says its process cannot renew another Lease on time (AcquisitionGate)."""

    headroom: bool = False

    def admits_acquisition(self) -> bool:
        return self.headroom


async def test_a_store_without_headroom_keeps_a_candidate_from_acquiring(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = NoHeadroom(MemoryLeaseStore())
    async with Elector(LEASE, identity="a", store=store) as elector:
        await trio.sleep(30)
        assert not elector.is_leader
        assert not [verb for _, verb in store.requests if verb in ("create", "update")]
        declined = [r for r in caplog.records if "no headroom" in r.getMessage()]
        assert len(declined) == 1  # said once, not every retry_period
        store.headroom = True
        await elector.wait_leading()
        assert trio.current_time() <= 30 + 2  # asked again within a retry_period

    @only_when_leading(lease="other", store=store)
    async def job() -> str:
        return "ran"

    store.headroom = False
    assert await job() is None
    store.headroom = True
    assert await job() == "ran"


async def test_renewal_round_trips_are_reported(autojump_clock: trio.testing.MockClock) -> None:
    store = FaultyStore(MemoryLeaseStore())
    store.answer_delay = 0.25
    seen: list[float] = []
    async with Elector(LEASE, identity="a", store=store) as elector:
        await elector.wait_leading()
        stop = elector._observe_renewals(seen.append)
        await trio.sleep(5)
        stop()
        await trio.sleep(5)
    assert seen == [0.25, 0.25]  # the renewals sent at 2.25 and 4.5, and none after stop()


class WatchEndsOnce(FaultyStore):
    """A store whose first watch ends after its first state (a store may hand back a watch
    that ends; the campaign opens it again)."""

    ended: bool = False

    async def watch(self, namespace: str, name: str) -> AsyncIterator[LeaseRecord | None]:
        async for record in super().watch(namespace, name):
            yield record
            if not self.ended:
                self.ended = True
                return


async def test_a_watch_that_ends_is_opened_again(autojump_clock: trio.testing.MockClock) -> None:
    memory = MemoryLeaseStore()
    store = WatchEndsOnce(memory)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(steal_at, memory, 3.25)
        when, lost = await lead_until_lost(store, "a")
    assert store.ended and lost.reason == "'operator' took the lease"
    assert when == 3.25  # seen on the watch at once, not at the next renewal (4)
