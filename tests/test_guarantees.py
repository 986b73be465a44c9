"""The README's promises, attacked the way users and faults attack them, through the public API.

Each test produces its situation as a user or a fault would (tasks in outer nurseries,
several candidates in one test, other clients deleting or clearing the Lease, a scheduler
firing early, a Lease taken the instant after it was created) and checks, in virtual time,
that no two guarded blocks ever run at once and that no call hangs.
"""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing

from lease_guard import (
    Elector,
    LeadershipLost,
    LeaseRecord,
    LeaseSpec,
    MemoryLeaseStore,
    NoActiveElector,
    PermissionDenied,
    leadership,
    only_when_leading,
)

from .faults import FaultyStore, Intervals

LEASE = "jobs"


async def guarded_forever(intervals: Intervals, who: str, unwind: float = 0.0) -> None:
    """Guarded code that runs until cancelled and takes ``unwind`` seconds to clean up."""
    intervals.start(who)
    try:
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await trio.sleep(unwind)
        intervals.stop(who)


async def follower(store: MemoryLeaseStore | FaultyStore, identity: str, intervals: Intervals) -> None:
    while True:
        try:
            async with leadership(LEASE, identity=identity, store=store):
                await guarded_forever(intervals, identity)
        except LeadershipLost:
            pass


# -- item 1: an Elector that exits while work it guards runs in other tasks ---------------------


@pytest.mark.parametrize("unwind", [0.0, 3.0])
async def test_elector_exit_ends_guarded_work_in_outer_tasks_before_anyone_else_leads(
    autojump_clock: trio.testing.MockClock, unwind: float
) -> None:
    store = MemoryLeaseStore()
    intervals = Intervals()
    losses: list[LeadershipLost] = []

    async def worker(elector: Elector) -> None:
        try:
            async with elector.leading():
                await guarded_forever(intervals, "a-worker", unwind)
        except LeadershipLost as lost:
            losses.append(lost)

    async with trio.open_nursery() as outer:
        outer.start_soon(follower, store, "b", intervals)
        async with Elector(LEASE, identity="a", store=store) as elector:
            await elector.wait_leading()
            outer.start_soon(worker, elector)
            await trio.sleep(5)
        exited_at = trio.current_time()
        # The exit waited for the worker's block to unwind, then released with proof.
        assert [lost.reason for lost in losses] == ["the Elector exited"]
        assert exited_at == 5 + unwind
        await trio.sleep(1)
        assert store.holder(LEASE) == "b"
        outer.cancel_scope.cancel()
    intervals.assert_disjoint()
    [(who_a, _, a_end), (who_b, b_start, _)] = sorted(intervals.closed(), key=lambda span: span[1])
    assert (who_a, who_b) == ("a-worker", "b")
    assert b_start == a_end  # the handover is immediate, and not a moment earlier


async def test_leading_waiting_in_another_task_when_the_elector_exits_does_not_hang(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryLeaseStore()
    store.steal(LEASE, "someone-else")
    errors: list[BaseException] = []

    async def waiter(elector: Elector) -> None:
        try:
            async with elector.leading():
                raise AssertionError("must not lead")
        except NoActiveElector as exc:
            errors.append(exc)

    async with trio.open_nursery() as outer, Elector(LEASE, identity="a", store=store) as elector:
        outer.start_soon(waiter, elector)
        await trio.sleep(1)
    assert len(errors) == 1
    assert trio.current_time() == 1


# -- item 2: other clients deleting or clearing the Lease while its holder is cut off ----------


def clear(store: MemoryLeaseStore) -> None:
    """What client-go's release and `lease-guard release --force` write: an empty holder."""
    record = store.record(LEASE)
    assert record is not None
    spec = record.spec
    store.put(LEASE, LeaseSpec("", 1, spec.acquire_time, spec.renew_time, spec.lease_transitions))


@pytest.mark.parametrize("how", ["delete", "clear"])
async def test_a_lease_deleted_or_cleared_while_its_holder_is_cut_off_is_not_taken_until_it_stopped(
    autojump_clock: trio.testing.MockClock, how: str
) -> None:
    store = MemoryLeaseStore()
    cut_off = FaultyStore(store)
    intervals = Intervals()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(follower, cut_off, "a", intervals)
        await trio.sleep(0.5)
        nursery.start_soon(follower, store, "b", intervals)
        await trio.sleep(5)  # a renewed at t=4.0: its code runs until at most 14.0
        cut_off.stall()
        if how == "delete":
            store.delete(LEASE)
        else:
            clear(store)
        await trio.sleep(30)
        nursery.cancel_scope.cancel()
    intervals.assert_disjoint()
    spans = sorted(intervals.closed(), key=lambda span: span[1])
    assert [who for who, _, _ in spans] == ["a", "b"]
    assert spans[0][2] == 14  # a's hard deadline: last renewal sent at 4, plus renew_deadline
    # b: lease_duration after it saw the Lease deleted or cleared; a Lease it re-creates it
    # leads renew_deadline later (a holder of a copy created and deleted meanwhile stops by then)
    assert spans[1][1] == 5.5 + 15 + (10 if how == "delete" else 0)


async def test_a_holders_own_release_is_still_taken_over_at_once(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    intervals = Intervals()
    async with trio.open_nursery() as nursery:
        async with leadership(LEASE, identity="a", store=store):
            nursery.start_soon(follower, store, "b", intervals)
            await trio.sleep(3)
        released_at = trio.current_time()
        await trio.sleep(1)
        nursery.cancel_scope.cancel()
    [(who, started, _)] = intervals.closed()
    assert (who, started) == ("b", released_at)


@pytest.mark.parametrize("candidate", ["leadership", "job"])
async def test_a_new_candidate_waits_out_a_deletion_when_its_process_saw_the_lease_exist(
    autojump_clock: trio.testing.MockClock, candidate: str
) -> None:
    """A candidate started after the delete (a re-entered leadership(), a job's first call)
    never saw the Lease itself; it finds none, but another candidate of its process saw the
    Lease exist, so the absence is a deletion whose holder may still run, and it waits. On a
    store where this process never saw the Lease (a new deployment) it leads at once."""
    store = MemoryLeaseStore()
    cut_off = FaultyStore(store)
    intervals = Intervals()

    async def new_candidate(on: MemoryLeaseStore) -> float:
        """When a new candidate of this process on ``on`` first runs guarded code."""
        if candidate == "leadership":
            async with leadership(LEASE, identity="p2", store=on):
                intervals.start("p2")
                intervals.stop("p2")
                return trio.current_time()

        @only_when_leading(lease=LEASE, identity="p2", store=on)
        async def job() -> float:
            intervals.start("p2")
            intervals.stop("p2")
            return trio.current_time()

        for _ in range(100):  # a call every 0.5 s
            started = await job()
            if started is not None:
                return started
            await trio.sleep(0.5)
        raise AssertionError("the job never ran")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(follower, cut_off, "q", intervals)  # another replica leads from 0
        await trio.sleep(0.5)
        with trio.move_on_after(1):  # a first candidate of this process sees q hold the Lease
            async with leadership(LEASE, identity="p1", store=store):
                raise AssertionError("p1 led while q held the Lease")
        await trio.sleep(3.5)  # q renewed at t=4.0: its code runs until at most 14.0
        cut_off.stall()
        store.delete(LEASE)
        started = await new_candidate(store)
        nursery.cancel_scope.cancel()
    intervals.assert_disjoint()
    # lease_duration after it first saw no Lease it re-creates it, and leads renew_deadline
    # later (a holder of a copy created and deleted meanwhile stops by then)
    assert started == 5 + 15 + 10
    fresh_at = trio.current_time()
    assert await new_candidate(MemoryLeaseStore()) == fresh_at


# -- item 3: overlapping calls of one decorated job -------------------------------------------


async def test_a_decorated_job_never_runs_twice_at_once(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    running = 0
    most = 0
    terms: list[int | None] = []

    @only_when_leading(lease=LEASE, store=store)
    async def job() -> str:
        nonlocal running, most
        running += 1
        most = max(most, running)
        terms.append(store.record(LEASE).transitions if store.record(LEASE) else None)  # type: ignore[union-attr]
        try:
            await trio.sleep(25)
        finally:
            running -= 1
        return "ran"

    results: list[str | None] = []

    async def tick() -> None:
        results.append(await job())

    async with trio.open_nursery() as scheduler:
        for _ in range(6):  # a 25 s job every 10 s
            scheduler.start_soon(tick)
            await trio.sleep(10)
    assert most == 1
    assert results.count("ran") == 2  # at t=0 and t=30 (t=10, 20, 40, 50 found it running)
    assert results.count(None) == 4


# -- item 4: several candidates in one process, one test ----------------------------------------


async def test_leadership_with_another_identity_inside_an_elector_is_a_separate_candidate(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryLeaseStore()
    b_store = FaultyStore(store)
    async with Elector(LEASE, identity="a", store=store) as elector:
        await elector.wait_leading()
        with trio.move_on_after(60) as waited:
            async with leadership(LEASE, identity="b", store=b_store):
                raise AssertionError("b led while a held the Lease")
        assert waited.cancelled_caught
        assert b_store.requests, "b campaigned on its own store"
        assert elector.is_leader


@pytest.mark.parametrize("conflict", ["identity", "namespace", "timings", "store"])
async def test_a_decorated_job_with_conflicting_options_is_a_separate_candidate(
    autojump_clock: trio.testing.MockClock, conflict: str
) -> None:
    store = MemoryLeaseStore()
    own_store = FaultyStore(store)
    store.steal(LEASE, "z", namespace="other")  # other/jobs is someone else's too
    ran: list[float] = []

    async def work() -> str:
        ran.append(trio.current_time())
        return "ran"

    job = {
        "identity": only_when_leading(lease=LEASE, store=store, identity="b"),
        "namespace": only_when_leading(lease=LEASE, store=store, namespace="other"),
        "timings": only_when_leading(lease=LEASE, store=store, lease_duration=20.0),
        "store": only_when_leading(lease=LEASE, store=own_store),
    }[conflict](work)
    async with Elector(LEASE, identity="a", store=store) as elector:
        await elector.wait_leading()
        assert await job() is None  # it campaigned for itself, and the Lease is not free
        assert ran == []
        assert elector.is_leader
    if conflict == "store":
        assert own_store.requests, "the job used the store it was given"


async def test_a_task_outliving_its_elector_never_finds_it_again(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    outcomes: list[object] = []

    @only_when_leading
    async def bare() -> str:
        return "ran"

    async def late(elector_exited: trio.Event) -> None:
        await elector_exited.wait()
        with pytest.raises(NoActiveElector):
            await bare()
        with trio.fail_after(1):
            async with leadership(LEASE, store=store) as lead:
                outcomes.append(lead.identity)

    exited = trio.Event()
    async with trio.open_nursery() as outer:
        async with Elector(LEASE, identity="a", store=store) as elector:
            await elector.wait_leading()
            outer.start_soon(late, exited)  # inherits the context in which the Elector ran
        exited.set()
    assert len(outcomes) == 1 and outcomes[0] != "a"


async def test_a_bare_decorator_follows_the_innermost_running_elector(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    store.steal("other", "someone-else")

    @only_when_leading
    async def job() -> str:
        return "ran"

    async with Elector(LEASE, identity="a", store=store) as outer:
        await outer.wait_leading()
        assert await job() == "ran"
        async with Elector("other", identity="a", store=store):
            assert await job() is None  # follows "other", which someone else holds
        assert await job() == "ran"


# -- item 5: a decorated call whose tenure ends the instant it began ------------------------------


class TakenRightAfterCreate(FaultyStore):
    """The Lease is taken by another replica the instant after our create took effect."""

    async def create(self, namespace: str, name: str, spec: LeaseSpec) -> LeaseRecord:
        record = await super().create(namespace, name, spec)
        assert isinstance(self.inner, MemoryLeaseStore)
        self.inner.steal(name, "quick-replica", namespace=namespace)
        return record


async def test_a_decorated_call_racing_a_takeover_returns_within_its_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = TakenRightAfterCreate(MemoryLeaseStore())
    ran = []

    @only_when_leading(lease=LEASE, store=store)
    async def job() -> str:
        ran.append(1)
        await trio.sleep(1)
        return "ran"

    # The thief does not wait its turn, so we may learn of it only after the function
    # started: then it is cancelled at once. Either way the call ends, within its bound.
    with trio.fail_after(10 + 2):
        try:
            result = await job()
        except LeadershipLost as lost:
            result = lost.reason
    assert (result, len(ran)) in ((None, 0), ("'quick-replica' took the lease", 1))
    assert trio.current_time() == 0


async def test_a_takeover_seen_before_our_acquires_answer_is_not_overwritten_by_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    memory = MemoryLeaseStore()
    store = FaultyStore(memory)
    store.answer_delay = 1.0  # our create takes effect at once; its answer comes a second later
    ran = []

    @only_when_leading(lease=LEASE, store=store)
    async def job() -> str:
        ran.append(trio.current_time())
        return "ran"

    async def thief() -> None:
        await trio.sleep(0.5)
        memory.steal(LEASE, "thief")  # the watch delivers this before our answer arrives

    async with trio.open_nursery() as nursery:
        nursery.start_soon(thief)
        assert await job() is None
    assert ran == [], "the job ran on a stale answer while the thief held the Lease"


# -- item 8: exceptions ------------------------------------------------------------------------------


async def test_a_users_exception_group_propagates_unchanged(autojump_clock: trio.testing.MockClock) -> None:
    group = ExceptionGroup("mine", [ValueError("one")])
    with pytest.raises(ExceptionGroup) as raised:
        async with leadership(LEASE, store=MemoryLeaseStore()):
            raise group
    assert raised.value is group


async def test_a_permanent_store_failure_while_leading_is_a_loss_caused_by_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FaultyStore(MemoryLeaseStore())
    with pytest.raises(LeadershipLost) as lost:
        async with leadership(LEASE, store=store):
            store.errors.extend(PermissionDenied("403: the Role was deleted") for _ in range(1000))
            await trio.sleep_forever()
    assert isinstance(lost.value.__cause__, PermissionDenied)


async def test_keyboard_interrupt_with_a_loss_comes_out_as_keyboard_interrupt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryLeaseStore()
    with pytest.raises(KeyboardInterrupt):
        async with leadership(LEASE, store=store):
            store.steal(LEASE, "other")
            try:
                await trio.sleep_forever()
            finally:
                raise KeyboardInterrupt


async def test_nothing_waits_forever_on_a_store_that_never_answers_a_decorated_call(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FaultyStore(MemoryLeaseStore())
    store.stall()

    @only_when_leading(lease=LEASE, store=store)
    async def job() -> None:
        raise AssertionError("must not run")

    start = trio.current_time()
    with pytest.raises(Exception, match="within renew_deadline"):
        await job()
    assert trio.current_time() - start <= 10 + 2
    assert not math.isnan(start)


async def test_no_new_tenure_starts_while_guarded_code_of_the_last_one_unwinds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryLeaseStore()
    intervals = Intervals()

    async def slow_to_unwind() -> None:
        with pytest.raises(LeadershipLost):
            async with elector.leading():
                await guarded_forever(intervals, "a-first", unwind=5)

    async def eager() -> None:
        await trio.sleep(3.5)  # after the first tenure ended
        async with elector.leading():  # waits for the next tenure
            intervals.start("a-second")
            intervals.stop("a-second")

    async with Elector(LEASE, identity="a", store=store) as elector, trio.open_nursery() as nursery:
        nursery.start_soon(slow_to_unwind)
        nursery.start_soon(eager)
        await trio.sleep(3)
        thief = store.steal(LEASE, "thief")  # ends a's tenure; a's first block unwinds until 8
        await trio.sleep(1)
        store.put(LEASE, LeaseSpec("", 1, None, None, thief.spec.lease_transitions, released_by="thief"))
    [(_, _, first_end), (_, second_start, _)] = sorted(intervals.closed(), key=lambda span: span[1])
    assert first_end == 8
    assert second_start >= first_end
