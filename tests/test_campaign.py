"""The campaign's timing, in virtual time: deadlines, late answers, steals, crashes, races."""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio

from lease_guard import (
    Elector,
    LeadershipLost,
    LeaseRecord,
    LeaseSpec,
    MemoryLeaseStore,
    PermissionDenied,
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


# -- Pinned down by the mutation run: what each of these would let through is named -------


@pytest.fixture
def least_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every backoff pause takes the low end of its jitter, so pauses can be checked exactly."""
    monkeypatch.setattr(random, "uniform", lambda low, high: low)


@pytest.mark.parametrize("verb", ["watch", "create"])
async def test_backoff_starts_at_a_quarter_retry_period_and_doubles_to_four(
    autojump_clock: trio.testing.MockClock, least_jitter: None, verb: str
) -> None:
    # Jitter takes each pause to between half and all of retry_period/4 * 2**n, capped at
    # 4 * retry_period; at the low end of the jitter: 0.25, 0.5, 1, 2, 4, 4 (retry_period 2).
    store = FaultyStore(MemoryLeaseStore())
    failures = [StoreUnavailable("503") for _ in range(6)]
    if verb == "watch":
        store.errors.extend(failures)
    else:
        store.write_errors.extend(failures)
    async with Elector(LEASE, identity="a", store=store) as elector:
        await elector.wait_leading()
    attempts = [at for at, seen in store.requests if seen == verb]
    assert [later - earlier for earlier, later in itertools.pairwise(attempts)] == [0.25, 0.5, 1, 2, 4, 4]


@pytest.mark.parametrize("verb", ["watch", "create"])
async def test_a_retry_after_from_the_server_is_waited_out(autojump_clock: trio.testing.MockClock, verb: str) -> None:
    store = FaultyStore(MemoryLeaseStore())
    failure = StoreUnavailable("429 Too Many Requests", retry_after=30)
    (store.errors if verb == "watch" else store.write_errors).append(failure)
    async with Elector(LEASE, identity="a", store=store) as elector:
        await elector.wait_leading()
    attempts = [at for at, seen in store.requests if seen == verb]
    assert len(attempts) == 2 and attempts[1] - attempts[0] == 30


async def test_a_watch_opened_again_is_not_given_up_later(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # Only the first read of a campaign is bounded by renew_deadline; a watch opened again
    # after it ended runs as long as it delivers, without outage warnings or re-opening.
    store = WatchEndsOnce(MemoryLeaseStore())
    async with Elector(LEASE, identity="a", store=store) as elector:
        await trio.sleep(60)
        assert elector.is_leader
    assert store.ended
    assert [seen for _, seen in store.requests].count("watch") == 2
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


class WatchEndsAt(FaultyStore):
    """A store whose watch ends at the given times; after each end, the next ``refusals``
    openings of it are refused (a restarted API server refusing until its authorizer syncs)."""

    def __init__(
        self, inner: MemoryLeaseStore, ends: list[float], refusals: int, refusal: type[Exception] = PermissionDenied
    ) -> None:
        super().__init__(inner)
        self.ends = ends
        self.refusals = refusals
        self.refusal = refusal
        self.to_refuse = 0

    async def watch(self, namespace: str, name: str) -> AsyncIterator[LeaseRecord | None]:
        if self.to_refuse:
            self.to_refuse -= 1
            self.requests.append((trio.current_time(), "watch"))
            raise self.refusal("watch refused")
        records = super().watch(namespace, name)
        end = self.ends.pop(0) if self.ends else math.inf
        while True:
            record: LeaseRecord | None = None
            with trio.move_on_at(end):
                record = await records.__anext__()
            if trio.current_time() >= end:
                self.to_refuse = self.refusals
                return
            yield record


async def test_refused_reads_of_a_running_campaign_are_retried_and_each_stretch_judged_alone(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The watch ends at 5 and at 31; each time the API server refuses to open it again three
    # times (6 s of refusals, retried each retry_period). Each stretch is judged on its own:
    # 6 s < renew_deadline, so neither ends the campaign, and the watch is back after each.
    store = WatchEndsAt(MemoryLeaseStore(), ends=[5, 31], refusals=3)
    async with Elector(LEASE, identity="a", store=store) as elector:
        await trio.sleep(50)
        assert elector.running and elector.is_leader
    watches = [at for at, seen in store.requests if seen == "watch"]
    assert watches == [0, 5, 7, 9, 11, 31, 33, 35, 37]


async def test_renewals_refused_until_the_deadline_end_the_tenure_caused_by_the_refusal(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FaultyStore(MemoryLeaseStore())
    with pytest.raises(LeadershipLost) as lost:
        async with Elector(LEASE, identity="a", store=store) as elector, elector.leading():
            store.write_errors.extend(PermissionDenied("update forbidden") for _ in range(100))
            await trio.sleep_forever()
    assert isinstance(lost.value.__cause__, PermissionDenied)
    assert trio.current_time() == 10  # renew_deadline after the acquire, the last write that succeeded


async def test_refusals_of_create_and_update_are_separate_stretches(autojump_clock: trio.testing.MockClock) -> None:
    # 0-4: creates refused, then one succeeds (a restarted API server's authorizer syncing).
    # 20-24: renewals (updates) refused, then they succeed: a stretch of its own, so the
    # tenure goes on. 40: stolen; 55-59: acquiring updates refused, then one succeeds.
    # 100: stolen again; 115-119: refused again, and again only 4 s: taken once more.
    memory = MemoryLeaseStore()
    store = FaultyStore(memory)
    terms: list[int] = []

    def refuse(verb: str) -> None:
        store.write_errors.extend(PermissionDenied(f"{verb} forbidden") for _ in range(2))

    async def operator() -> None:
        await trio.sleep_until(19)
        refuse("update")
        await trio.sleep_until(40)
        memory.steal(LEASE, "x")
        await trio.sleep_until(54.5)
        refuse("update")
        await trio.sleep_until(100)
        memory.steal(LEASE, "y")
        await trio.sleep_until(114.5)
        refuse("update")

    refuse("create")
    async with trio.open_nursery() as nursery, Elector(LEASE, identity="a", store=store) as elector:
        nursery.start_soon(operator)
        for _ in range(3):
            with contextlib.suppress(LeadershipLost):
                async with elector.leading() as lead:
                    terms.append(lead.term)
                    if len(terms) < 3:
                        await trio.sleep_forever()
        assert elector.running
    assert terms == [0, 2, 4]
    assert memory.tenures(LEASE)[-1][0] == "a"


async def test_the_written_lease_states_its_duration_and_keeps_its_acquire_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Other clients (client-go, kubectl) read leaseDurationSeconds and acquireTime.
    store = MemoryLeaseStore()
    async with Elector(LEASE, identity="a", store=store, lease_duration=20, renew_deadline=12) as elector:
        await elector.wait_leading()
        first = store.record(LEASE)
        await trio.sleep(9)
        later = store.record(LEASE)
    assert first is not None and later is not None
    assert first.spec.lease_duration_seconds == later.spec.lease_duration_seconds == 20
    assert first.spec.acquire_time is not None and later.spec.acquire_time == first.spec.acquire_time
    assert later.spec.renew_time != first.spec.renew_time


class ShieldedCreates(FaultyStore):
    """A store whose creates cannot be abandoned midway: their answers arrive, however late."""

    async def create(self, namespace: str, name: str, spec: LeaseSpec) -> LeaseRecord:
        with trio.CancelScope(shield=True):
            record = await super().create(namespace, name, spec)
        return record


async def test_an_acquire_answered_too_late_is_not_led_on_and_retried_after_a_backoff(
    autojump_clock: trio.testing.MockClock, least_jitter: None
) -> None:
    # The create is sent at 0 and answered at 12, past its tenure's deadline (0 + 10): no
    # tenure. The Lease is ours, so the next attempt (an update) comes after a backoff
    # pause of retry_period/4 at the low end of its jitter: 0.25 s.
    store = ShieldedCreates(MemoryLeaseStore(), answer_delay=12)
    async with Elector(LEASE, identity="a", store=store) as elector:
        await trio.sleep(1)
        store.answer_delay = 0  # the create's answer is already on its slow way
        await elector.wait_leading()
        assert trio.current_time() == 12.25
    assert [(at, seen) for at, seen in store.requests if seen != "watch"][:2] == [(0, "create"), (12.25, "update")]


async def test_renewals_failing_until_the_deadline_end_the_tenure_caused_by_the_last_failure(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FaultyStore(MemoryLeaseStore())

    async def outage_from(when: float) -> None:
        await trio.sleep_until(when)
        store.errors.extend(StoreUnavailable(f"503 number {n}") for n in range(100))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(outage_from, 1)
        when, lost = await lead_until_lost(store, "a")
    assert when == 10  # renew_deadline after the acquire was sent: no renewal succeeded
    assert lost.reason == "no renewal succeeded within renew_deadline (10s) of the last one sent"
    assert isinstance(lost.__cause__, StoreUnavailable) and str(lost.__cause__) == "503 number 3"


class RereadFails(FaultyStore):
    """A store whose reads fail while ``reads_fail`` is set (the watch is separate)."""

    reads_fail: bool = False

    async def get(self, namespace: str, name: str) -> LeaseRecord | None:
        if self.reads_fail:
            self.requests.append((trio.current_time(), "get"))
            raise StoreUnavailable("503")
        return await super().get(namespace, name)


@pytest.mark.parametrize("reread_fails", [False, True])
async def test_a_renewal_conflict_is_decided_on_a_fresh_read(
    autojump_clock: trio.testing.MockClock, reread_fails: bool
) -> None:
    # The renewal sent at 4 takes effect but its answer is lost, and the watch is held, so
    # the renewal at 4 + 2 is sent on the version before it and conflicts. If the re-read
    # shows the newer version (ours), the renewal is sent again at once, on it; if the
    # re-read fails, the next attempt waits the usual retry_period.
    store = RereadFails(MemoryLeaseStore())

    async def lose_an_answer() -> None:
        await trio.sleep_until(3.5)
        store.watch_held = True
        store.errors_after_effect.append(StoreUnavailable("connection reset"))
        store.reads_fail = reread_fails

    async with trio.open_nursery() as nursery, Elector(LEASE, identity="a", store=store) as elector:
        nursery.start_soon(lose_an_answer)
        await trio.sleep(8.5)
        assert elector.is_leader
    writes = [(at, seen) for at, seen in store.requests if seen in ("update", "get")]
    expected_after_conflict = [(8, "update")] if reread_fails else [(6, "update")]
    assert writes[:4] == [(2, "update"), (4, "update"), (6, "update"), (6, "get")]
    assert writes[4:5] == expected_after_conflict


async def test_a_release_after_a_lost_renewal_answer_keeps_the_term(autojump_clock: trio.testing.MockClock) -> None:
    # The last renewal took effect but its answer was lost and the watch is held: the
    # release is sent on the version before it, conflicts, re-reads, and releases the newer
    # version, keeping its leaseTransitions (the fencing token's continuity).
    memory = MemoryLeaseStore()
    memory.steal(LEASE, "old")
    memory.put(LEASE, LeaseSpec("", 15, None, None, 6, released_by="old"))
    store = FaultyStore(memory)
    async with Elector(LEASE, identity="a", store=store) as elector, elector.leading() as lead:
        await trio.sleep(1.5)
        store.watch_held = True
        store.errors_after_effect.append(StoreUnavailable("connection reset"))
        await trio.sleep(1)
    record = memory.record(LEASE)
    assert lead.term == 7
    assert record is not None and (record.spec.holder, record.spec.released_by) == ("", "a")
    assert record.transitions == 7


async def lead_lose_and_lead_again(store: FaultyStore, operator: Callable[[], Awaitable[None]]) -> tuple[float, float]:
    """Lead as "a" while ``operator`` runs, until the tenure is lost; return when "a" first
    led and when it led again."""
    async with trio.open_nursery() as nursery, Elector(LEASE, identity="a", store=store) as elector:
        nursery.start_soon(operator)
        await elector.wait_leading()
        first = trio.current_time()
        with contextlib.suppress(LeadershipLost):
            async with elector.leading():
                await trio.sleep_forever()
        await elector.wait_leading()
        return first, trio.current_time()


@pytest.mark.parametrize("slow", ["watch held", "answer after its echo"])
async def test_a_recreated_lease_is_led_by_an_update_renew_deadline_after_the_create(
    autojump_clock: trio.testing.MockClock, slow: str
) -> None:
    # The Lease a leads is deleted at 5 (its tenure ends); it is taken again once 15 s of
    # silence have passed: created at 20, and led only from 30, by an update conditioned on
    # the create's answer. Whether the watch says nothing meanwhile or brings the create's
    # echo before its answer, the answer is what the update is based on.
    memory = MemoryLeaseStore()
    store = FaultyStore(memory)

    async def operator() -> None:
        await trio.sleep_until(5)
        memory.delete(LEASE)
        await trio.sleep_until(19)
        if slow == "watch held":
            store.watch_held = True
        else:
            store.answer_delay = 1

    _, led_at = await lead_lose_and_lead_again(store, operator)
    writes = [(at, seen) for at, seen in store.requests if seen in ("create", "update", "get") and at >= 19]
    if slow == "watch held":
        assert (led_at, writes[:2]) == (30, [(20, "create"), (30, "update")])
    else:
        assert (led_at, writes[:2]) == (32, [(20, "create"), (31, "update")])


async def test_after_a_step_down_whose_release_finds_a_new_holder_that_holder_is_the_leader(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The watch is held, so the candidate has not seen "x" take the Lease when it steps
    # down: its release conflicts, the re-read shows "x", and nothing is released.
    memory = MemoryLeaseStore()
    store = FaultyStore(memory)
    async with Elector(LEASE, identity="a", store=store) as elector:
        await elector.wait_leading()
        store.watch_held = True
        memory.steal(LEASE, "x")
        elector.step_down()
        await trio.sleep(1)
        assert (elector.leader, memory.holder(LEASE)) == ("x", "x")


async def test_after_a_step_down_the_lease_is_taken_back_by_an_update_of_the_release(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # With the watch held, the release's answer is all the candidate knows of the Lease:
    # lease_duration later it takes it back by updating that release, not by a create.
    store = FaultyStore(MemoryLeaseStore())
    async with Elector(LEASE, identity="a", store=store) as elector:
        await elector.wait_leading()
        store.watch_held = True
        elector.step_down()
        await trio.sleep(1)
        assert not elector.is_leader
        await elector.wait_leading()
        assert trio.current_time() == 15
    # Released at 0; at 15 taken back, then released again as the Elector exits.
    assert [(at, seen) for at, seen in store.requests if seen != "watch"] == [
        (0, "create"),
        (0, "update"),
        (15, "update"),
        (15, "update"),
    ]


class WritesFailUntil(FaultyStore):
    """A store whose writes fail with 503 until ``until`` (an API server down for a while)."""

    def __init__(self, inner: MemoryLeaseStore, until: float) -> None:
        super().__init__(inner)
        self.until = until

    async def _before(self, verb: str) -> None:
        await super()._before(verb)
        if verb in ("create", "update") and trio.current_time() < self.until:
            raise StoreUnavailable("503 Service Unavailable")


async def test_an_acquisition_outage_is_logged_at_its_start_each_minute_and_at_its_end(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, least_jitter: None
) -> None:
    # Creates fail for 150 s (pauses 0.25, 0.5, 1, 2, 4, then 4 s each): a WARNING with the
    # cause at the first failure, then at the first failure a minute or more after the last
    # WARNING, and an INFO when it is over.
    caplog.set_level(logging.INFO, logger="lease_guard")
    store = WritesFailUntil(MemoryLeaseStore(), until=150)
    async with Elector(LEASE, identity="a", store=store) as elector:
        await elector.wait_leading()
    outage = [(r.levelname, r.getMessage()) for r in caplog.records if "taking the Lease" in r.getMessage()]
    assert outage == [
        ("WARNING", "lease default/jobs: taking the Lease failed, retrying: 503 Service Unavailable"),
        (
            "WARNING",
            "lease default/jobs: taking the Lease still failing after 64s (20 attempts), retrying: "
            "503 Service Unavailable",
        ),
        (
            "WARNING",
            "lease default/jobs: taking the Lease still failing after 124s (35 attempts), retrying: "
            "503 Service Unavailable",
        ),
        ("INFO", "lease default/jobs: taking the Lease succeeded again after 151.8s of failures"),
    ]


async def test_refused_creates_after_a_deletion_are_a_stretch_of_their_own(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Creates refused at 0 and 2, the Lease created at 4. Deleted at 30 (the tenure ends);
    # 15 s later the re-creates are refused at 45 and 47, 4 s only, so the one at 49 is made
    # and led from renew_deadline after it.
    memory = MemoryLeaseStore()
    store = FaultyStore(memory)
    store.write_errors.extend(PermissionDenied("create forbidden") for _ in range(2))

    async def operator() -> None:
        await trio.sleep_until(30)
        memory.delete(LEASE)
        await trio.sleep_until(44)
        store.write_errors.extend(PermissionDenied("create forbidden") for _ in range(2))

    assert await lead_lose_and_lead_again(store, operator) == (4, 49 + 10)


async def test_a_decorated_call_outlives_a_watch_outage_that_starts_after_its_decision(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The bound on a decorated call's first read is not a bound on its watch: a watch that
    # ends at 15, 25 s into a 30 s job, and cannot be re-opened for a while, is waited out
    # (the renewals, and the tenure's deadline, are what guard the job).
    store = WatchEndsAt(MemoryLeaseStore(), ends=[15], refusals=3, refusal=StoreUnavailable)

    @only_when_leading(lease=LEASE, identity="a", store=store)
    async def job() -> str:
        await trio.sleep(30)
        return "done"

    assert await job() == "done"
    assert trio.current_time() == 30
    assert [at for at, seen in store.requests if seen == "watch"][:2] == [0, 15]


async def test_a_refusal_that_ends_a_tenure_is_the_cause_seen_by_guarded_code_that_outlived_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Renewals refused from 4; the one sent at 6 hangs in a partition (5 to 15) and cannot be
    # abandoned at the deadline (14). Its refusal at 15 comes after refusals have lasted
    # renew_deadline, so it ends the tenure. The guarded block, stuck in a shield until 16,
    # then learns why: the refusal is the LeadershipLost's cause.
    store = ShieldedWrites(MemoryLeaseStore())
    forbidden = PermissionDenied("update forbidden")

    async def faults() -> None:
        await trio.sleep_until(3)
        store.errors.append(forbidden)
        await trio.sleep_until(5)
        store.stall()
        store.errors.append(forbidden)
        await trio.sleep_until(15)
        store.heal()

    async with trio.open_nursery() as nursery, Elector(LEASE, identity="a", store=store) as elector:
        nursery.start_soon(faults)
        with pytest.raises(LeadershipLost) as lost:
            async with elector.leading():
                with trio.CancelScope(shield=True):
                    await trio.sleep(16)
    assert lost.value.reason == "renewal failed: update forbidden"
    assert lost.value.__cause__ is forbidden


@pytest.mark.parametrize("how", ["answer lost", "no answer"])
async def test_a_recreate_whose_answer_is_lost_is_led_no_sooner_than_one_answered(
    autojump_clock: trio.testing.MockClock, how: str
) -> None:
    # The Lease a leads is deleted at 5; a re-creates it at 20, and the create takes effect
    # but its answer is lost (a reset connection) or comes too late (after renew_deadline).
    # The echo of the create on the watch makes the Lease a's, but a holder
    # that created the Lease while the create travelled, and was cut off and deleted in
    # turn, may run until renew_deadline after that: a leads only renew_deadline after it
    # learnt that the create went unanswered, not after the next backoff pause.
    memory = MemoryLeaseStore()
    store = FaultyStore(memory)

    async def operator() -> None:
        await trio.sleep_until(5)
        memory.delete(LEASE)
        await trio.sleep_until(19)
        if how == "answer lost":
            store.errors_after_effect.append(StoreUnavailable("connection reset"))
        else:
            store.answer_delay = 12  # past the create's deadline, 30
            await trio.sleep_until(21)
            store.answer_delay = 0

    _, led_at = await lead_lose_and_lead_again(store, operator)
    assert memory.tenures(LEASE)[-1][0] == "a"
    assert led_at == (20 + 10 if how == "answer lost" else 20 + 10 + 10)
