"""Elector: state, events, step_down, and errors surfaced at entry."""

from __future__ import annotations

import itertools
import logging

import pytest
import trio

from lease_guard import (
    Elector,
    EventKind,
    LeadershipEvent,
    LeadershipLost,
    LeaseSpec,
    MemoryLeaseStore,
    NamespaceNotFound,
    PermissionDenied,
    StoreUnavailable,
    leadership,
)

from .faults import FaultyStore

LEASE = "jobs"


async def test_state_follows_the_lease(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    async with Elector(LEASE, identity="a", store=store) as a:
        await a.wait_leading()
        assert (a.is_leader, a.leader, a.term) == (True, "a", 0)
        async with Elector(LEASE, identity="b", store=store) as b:
            await trio.sleep(1)
            assert (b.is_leader, b.leader, b.term) == (False, "a", None)
            store.steal(LEASE, "c")
            await trio.testing.wait_all_tasks_blocked()
            assert (a.is_leader, a.leader) == (False, "c")
            assert b.leader == "c"


async def test_events_report_every_change(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    seen: list[LeadershipEvent] = []
    store.steal(LEASE, "z")
    async with Elector(LEASE, identity="a", store=store) as elector:
        events = elector.events()  # subscribed from here on, nothing missed

        async def follow() -> None:
            async for event in events:
                seen.append(event)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await elector.wait_leading()  # z never renews: after 15 s of silence, a leads
            await trio.sleep(1)
            store.steal(LEASE, "b")
            await trio.sleep(20)  # nor does b
            nursery.cancel_scope.cancel()
    kinds = [(e.kind, e.leader, e.term) for e in seen]
    assert kinds == [
        (EventKind.NEW_LEADER, "z", None),
        (EventKind.STARTED_LEADING, "a", 1),
        (EventKind.STOPPED_LEADING, "b", 1),
        (EventKind.NEW_LEADER, "b", None),
        (EventKind.STARTED_LEADING, "a", 3),
    ]
    assert seen[2].reason == "'b' took the lease"


async def test_step_down_cancels_guards_releases_and_lets_another_lead(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    log: list[tuple[str, float]] = []
    async with Elector(LEASE, identity="a", store=store) as a, Elector(LEASE, identity="b", store=store) as b:
        await a.wait_leading()

        async def guarded() -> None:
            with pytest.raises(LeadershipLost, match="stepped down"):
                async with a.leading():
                    try:
                        await trio.sleep_forever()
                    finally:
                        log.append(("a stopped", trio.current_time()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(guarded)
            await trio.sleep(3)
            a.step_down()
            await b.wait_leading()
            log.append(("b leads", trio.current_time()))
        assert log == [("a stopped", 3), ("b leads", 3)]
        assert not a.is_leader
        # a stays a candidate but does not take the lease back for lease_duration
        await trio.sleep(5)
        b.step_down()
        await a.wait_leading()
        assert trio.current_time() == 3 + 15


async def test_step_down_waits_for_guarded_code_to_unwind_before_releasing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryLeaseStore()
    async with Elector(LEASE, identity="a", store=store) as a:
        await a.wait_leading()

        async def slow_to_unwind() -> None:
            with pytest.raises(LeadershipLost):
                async with a.leading():
                    try:
                        await trio.sleep_forever()
                    finally:
                        with trio.CancelScope(shield=True):
                            await trio.sleep(2)
                            assert store.holder(LEASE) == "a"  # not released while we still run

        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_to_unwind)
            await trio.sleep(1)
            a.step_down()
        await trio.testing.wait_all_tasks_blocked()
        assert store.holder(LEASE) is None


async def test_step_down_when_not_leading_does_nothing(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    store.steal(LEASE, "z")
    async with Elector(LEASE, identity="a", store=store) as a:
        a.step_down()
        await a.wait_leading()
        await trio.sleep(5)
        assert a.is_leader


async def test_setup_errors_are_raised_at_entry(autojump_clock: trio.testing.MockClock) -> None:
    store = FaultyStore(MemoryLeaseStore())
    store.errors.append(PermissionDenied("no get on leases"))
    with pytest.raises(PermissionDenied, match="no get on leases"):
        async with Elector(LEASE, store=store):
            raise AssertionError("unreachable")


async def test_missing_namespace_is_a_clear_error(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore(namespaces={"default"})
    with pytest.raises(NamespaceNotFound, match='namespace "nope" does not exist'):
        async with Elector(LEASE, namespace="nope", store=store) as elector:
            await elector.wait_leading()


async def test_permanent_error_while_leading_ends_the_block_as_loss(autojump_clock: trio.testing.MockClock) -> None:
    store = FaultyStore(MemoryLeaseStore())
    with pytest.raises(LeadershipLost) as lost:
        async with Elector(LEASE, store=store) as elector, elector.leading():
            store.errors.append(NamespaceNotFound('namespace "default" was deleted'))
            await trio.sleep_forever()
    assert isinstance(lost.value.__cause__, NamespaceNotFound)
    assert trio.current_time() == 2


async def test_entry_waits_through_a_store_that_does_not_answer(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = FaultyStore(MemoryLeaseStore())
    store.stall()  # a black-holed server: the first read hangs, no error ever comes

    async def heal_later() -> None:
        await trio.sleep(95)
        store.heal()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(heal_later)
        async with Elector(LEASE, identity="a", store=store) as elector:
            assert trio.current_time() >= 95
            await elector.wait_leading()
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "reading the Lease" in r.getMessage()]
    assert "no answer to a read of lease default/jobs within renew_deadline" in warnings[0].getMessage()
    # the first failure, then one every minute: not one per attempt
    assert 2 <= len(warnings) <= 3


async def test_a_refused_renewal_is_retried_within_the_deadline(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    # A restarted API server answers 403 until its authorizer has synced: not a reason to quit.
    store = FaultyStore(MemoryLeaseStore())
    async with Elector(LEASE, identity="a", store=store) as elector, elector.leading() as lead:
        await trio.sleep(5)  # renewals at 2 and 4 succeeded: update is allowed
        store.errors.extend(PermissionDenied("update forbidden (authorizer not ready)") for _ in range(3))
        await trio.sleep(10)  # refused at 6, 8, 10; renewed at 12, inside the deadline of 14
        assert elector.is_leader and lead.term == 0
    assert "refused a request (update); retrying" in caplog.text


async def test_a_refusal_that_outlasts_the_deadline_ends_the_tenure(autojump_clock: trio.testing.MockClock) -> None:
    store = FaultyStore(MemoryLeaseStore())
    with pytest.raises(LeadershipLost, match="renew_deadline"):
        async with Elector(LEASE, identity="a", store=store) as elector, elector.leading():
            await trio.sleep(3)
            store.errors.extend(PermissionDenied("update forbidden") for _ in range(100))
            await trio.sleep_forever()
    assert trio.current_time() == 12  # the last successful send at 2, plus renew_deadline


async def test_a_refused_acquire_is_retried_for_a_while(autojump_clock: trio.testing.MockClock) -> None:
    # A follower whose first acquire meets a restarted API server's 403s still takes over.
    store = FaultyStore(MemoryLeaseStore())
    store.write_errors.extend(PermissionDenied("forbidden (authorizer not ready)") for _ in range(3))
    async with Elector(LEASE, store=store) as elector:
        await elector.wait_leading()
    assert trio.current_time() == 6  # refused at 0, 2 and 4: one retry_period apart


async def test_a_refusal_that_persists_ends_the_campaign(autojump_clock: trio.testing.MockClock) -> None:
    store = FaultyStore(MemoryLeaseStore())
    store.write_errors.extend(PermissionDenied("cannot create leases: grant create") for _ in range(100))
    with pytest.raises(PermissionDenied, match="grant create"):
        async with Elector(LEASE, store=store) as elector:
            await elector.wait_leading()
    assert trio.current_time() == 10  # refused for renew_deadline, then believed


async def test_release_after_a_renewal_cancelled_in_flight(autojump_clock: trio.testing.MockClock) -> None:
    # Shutdown cancels a renewal that has already taken effect: the version we hold is stale,
    # the release conflicts, and the fresh version (still ours) must be released all the same.
    memory = MemoryLeaseStore()
    store = FaultyStore(memory)
    async with Elector(LEASE, identity="a", store=store) as elector:
        await elector.wait_leading()
        store.watch_held = True  # the echo of the next renewal does not arrive
        store.answer_delay = 5  # the renewal at 2 takes effect; its answer is late
        await trio.sleep(2.5)
        assert memory.holder(LEASE) == "a"
        store.answer_delay = 0  # the re-read is answered at once
    assert memory.holder(LEASE) is None
    assert trio.current_time() == 2.5


async def test_an_elector_is_entered_once(autojump_clock: trio.testing.MockClock) -> None:
    elector = Elector(LEASE, store=MemoryLeaseStore())
    async with elector:
        pass
    with pytest.raises(RuntimeError, match="only once"):
        async with elector:
            pass


async def test_using_an_elector_outside_its_block_says_so() -> None:
    with pytest.raises(RuntimeError, match="not running"):
        Elector(LEASE, store=MemoryLeaseStore()).is_leader  # noqa: B018


async def test_record_events_tells_the_store_when_leadership_starts_and_stops(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryLeaseStore()
    async with Elector(LEASE, identity="a", store=store, record_events=True) as elector:
        await elector.wait_leading()
        await trio.sleep(1)
        store.steal(LEASE, "b")
        await trio.sleep(1)
    assert store.events == [
        ("default", LEASE, "LeaderElection", "a became leader"),
        ("default", LEASE, "LeaderElection", "a stopped leading: 'b' took the lease"),
    ]


class NoEventsStore(MemoryLeaseStore):
    async def record_event(self, namespace: str, name: str, *, reason: str, message: str, identity: str) -> None:
        raise PermissionDenied("cannot create events")


async def test_a_failure_to_record_events_never_affects_leadership(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with Elector(LEASE, identity="a", store=NoEventsStore(), record_events=True) as elector:
        await elector.wait_leading()
        await trio.sleep(30)
        assert elector.is_leader
    assert [r.getMessage() for r in caplog.records if "cannot create events" in r.getMessage()] == [
        f"lease default/{LEASE}: cannot create events"
    ]


async def test_transient_failures_of_the_first_read_are_retried_with_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FaultyStore(MemoryLeaseStore())
    store.errors.extend([StoreUnavailable("429", retry_after=1), StoreUnavailable("503")])
    async with Elector(LEASE, identity="a", store=store) as elector:
        # Retry-After is a lower bound; then a jittered pause of 0.25-0.5 s, then 0.5-1 s
        assert 1 + 0.25 <= trio.current_time() <= 1 + 1 + 1
        await elector.wait_leading()


async def test_an_unreachable_server_at_entry_is_waited_out_and_can_be_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryLeaseStore()
    with store.outage(error=True), trio.move_on_after(600) as bound:
        async with leadership(LEASE, store=store):
            raise AssertionError("cannot lead while unreachable")
    assert bound.cancelled_caught  # waited, never raised; a caller bounds it the trio way

    async def outage_for(seconds: float) -> None:
        with store.outage(error=True):
            await trio.sleep(seconds)

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(outage_for, 300)
        await trio.sleep(1)
        async with leadership(LEASE, identity="a", store=store) as lead:
            # led within one capped backoff (4 * retry_period) of the end of the outage
            assert 300 <= trio.current_time() - start <= 300 + 8
            assert lead.identity == "a"


async def test_an_outage_with_errors_after_start_does_not_end_the_campaign(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryLeaseStore()
    async with Elector(LEASE, identity="a", store=store) as elector:
        await elector.wait_leading()
        with pytest.raises(LeadershipLost):
            async with elector.leading():
                with store.outage(error=True):
                    await trio.sleep(60)
        await elector.wait_leading()
        assert elector.is_leader


@pytest.mark.parametrize("verb", ["watch", "create"])
async def test_transient_failures_back_off_with_jitter_up_to_four_retry_periods(
    autojump_clock: trio.testing.MockClock, verb: str
) -> None:
    store = FaultyStore(MemoryLeaseStore())
    failures = [StoreUnavailable("503") for _ in range(12)]
    if verb == "watch":
        store.errors.extend(failures)  # the first read fails 12 times
    else:
        store.write_errors.extend(failures)  # the acquisition fails 12 times
    async with Elector(LEASE, identity="a", store=store) as elector:
        await elector.wait_leading()
    attempts = [at for at, seen in store.requests if seen == verb]
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    assert len(attempts) == 13
    assert 0.25 <= gaps[0] <= 0.5  # retry_period / 4, times a jitter in [0.5, 1]
    assert all(gap <= 8 for gap in gaps)  # capped at 4 * retry_period
    assert max(gaps) >= 4  # and it grew to the cap
    assert len({round(gap, 6) for gap in gaps[4:]}) > 1  # jittered, not a fixed period


async def test_each_stretch_of_refusals_is_judged_on_its_own(autojump_clock: trio.testing.MockClock) -> None:
    # Refusals at 6-10, a success at 12, refusals again at 30-34: the second stretch is 4 s
    # long, not 28 s since the first refusal, so it does not end the tenure.
    store = FaultyStore(MemoryLeaseStore())
    async with Elector(LEASE, identity="a", store=store) as elector, elector.leading() as lead:
        await trio.sleep(5)
        store.errors.extend(PermissionDenied("update forbidden") for _ in range(3))
        await trio.sleep(24)
        store.errors.extend(PermissionDenied("update forbidden") for _ in range(3))
        await trio.sleep(10)
        assert elector.is_leader and lead.term == 0


async def test_a_new_leader_is_announced_once_not_at_each_of_its_renewals(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryLeaseStore()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_lead_for, store, "other", 20.0)
        await trio.sleep(0.5)
        async with Elector(LEASE, identity="me", store=store) as elector:
            events = elector.events()
            seen = [await events.__anext__()]
            with trio.move_on_after(10):  # "other" renews five times meanwhile
                async for event in events:
                    seen.append(event)
            await events.aclose()
    assert seen == [LeadershipEvent(EventKind.NEW_LEADER, "other")]


async def _lead_for(store: MemoryLeaseStore, identity: str, seconds: float) -> None:
    async with leadership(LEASE, identity=identity, store=store):
        await trio.sleep(seconds)


async def test_an_exhausted_term_is_reported_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lease_guard")
    store = MemoryLeaseStore()
    exhausted_spec = LeaseSpec("", 1, None, None, 2**31 - 1, released_by="old")
    store.put(LEASE, exhausted_spec)
    async with Elector(LEASE, identity="me", store=store) as elector:
        for _ in range(3):  # each new version makes the candidate look again
            await trio.sleep(20)
            store.put(LEASE, exhausted_spec)
        assert not elector.is_leader
    exhausted = [r for r in caplog.records if "int32 maximum" in r.getMessage()]
    assert len(exhausted) == 1 and exhausted[0].levelname == "ERROR"
    # Free from the first look on: no change of leader to announce.
    assert not [r for r in caplog.records if "leader is now" in r.getMessage()]
