"""No two leaders, ever: random fault schedules in virtual time, and a checker shown to fail.

Safety: the intervals during which guarded code of different owners runs never overlap,
whatever the faults, while the candidates' clocks' rates differ by less than
lease_duration / renew_deadline. An owner is one Elector (every task running guarded code
under it: its own loop and workers started in outer nurseries) or one call of a decorated
job; several candidates run in one trio run, as several replicas in one process would.
Liveness: once the faults stop, someone's guarded code runs within lease_duration plus
renew_deadline, and ``leadership()`` never gives up waiting (StoreUnavailable) because the
store was unreachable for a while. No hang: every decorated call returns or raises within renew_deadline (its
decision) plus the function's run time, and no task waits in ``elector.leading()`` of an
Elector that has exited.

Written against the public API only (plus ``Elector._clock``, the clock hook).
``HYPOTHESIS_PROFILE=chaos`` (``nox -s chaos``) runs many more schedules than CI does.
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import datetime
import itertools
import math
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, cast

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lease_guard import (
    Elector,
    LeadershipLost,
    LeaseConflict,
    LeaseGuardError,
    LeaseNotFound,
    LeaseRecord,
    LeaseSpec,
    MemoryLeaseStore,
    StoreUnavailable,
    leadership,
    only_when_leading,
)

from ..faults import AnswerCountedClock, DriftingClock, FaultyStore, Intervals, first_violation

LEASE = "jobs"
#: The lease of the decorated jobs that every candidate process also runs.
JOB_LEASE = "nightly"
LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD = 15.0, 10.0, 2.0  # the defaults
#: Rates within [1/1.2, 1.2] differ by at most 1.44 < 15 / 10.
SAFE_DRIFT = 1.2
PARTITION_AFTER_LATE_ANSWER = 30.0
#: Candidates 0 and 1 run an Elector (with a drifting clock), stepping down after each
#: piece of work; candidates 2 and 3 re-enter ``leadership()`` after every tenure.
ELECTOR_CANDIDATES = 2
#: External writes (delete, clear, forced release) of faults longer than this cut the
#: holder off from the store for the fault's length first, so it cannot see the write.
CUT_OFF = 12.5
#: Overlapping calls: a decorated job is called this many times, each call starting a third
#: of the job's run time after the previous one.
OVERLAPPING_CALLS = 3

settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("chaos", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

NETWORK_KINDS = [
    "stall",
    "delay",
    "late-answer-then-partition",
    "errors",
    "errors-after-effect",
    "conflict",
    "steal",
    "crash",
    "release",
]
#: Usage patterns and other writers (issue 10).
USAGE_KINDS = [
    "delete",
    "clear",
    "force-release",
    "elector-exit",
    "overlapping-calls",
    "job-in-elector",
    "reenter-partition",
    "race",
]
FAULT_KINDS = NETWORK_KINDS + USAGE_KINDS
faults_injected: collections.Counter[str] = collections.Counter()


def call_bound(seconds: float) -> float:
    """How long a decorated call may take: its decision (renew_deadline), the function's run
    time, and a release (retry_period), with a second to spare."""
    return RENEW_DEADLINE + seconds + RETRY_PERIOD + 1


@dataclass(frozen=True)
class Fault:
    at: float
    candidate: int
    kind: str
    length: float

    @property
    def exit_after(self) -> float:
        """elector-exit: how long after the worker starts the Elector's block is left."""
        return 0.1 + self.length % 3

    @property
    def end(self) -> float:
        """When this fault's effects are over."""
        match self.kind:
            case "late-answer-then-partition":
                return self.at + PARTITION_AFTER_LATE_ANSWER + 0.6
            case "elector-exit":
                return self.at + self.exit_after + RENEW_DEADLINE + RETRY_PERIOD
            case "overlapping-calls":
                return self.at + (OVERLAPPING_CALLS - 1) * self.length / 3 + call_bound(self.length)
            case "job-in-elector":
                return self.at + call_bound(self.length)
            case "race":
                return self.at + call_bound(self.length) + 3
            case "reenter-partition":
                return self.at + RENEW_DEADLINE + self.length
        return self.at + self.length


faults = st.builds(
    Fault,
    at=st.floats(0, 120).map(lambda t: round(t, 2)),
    candidate=st.integers(0, 3),
    kind=st.sampled_from(FAULT_KINDS),
    length=st.floats(0.1, 25).map(lambda t: round(t, 2)),
)

ClockFactory = Callable[[FaultyStore, float], DriftingClock]


def honest_clock(store: FaultyStore, rate: float) -> DriftingClock:
    return DriftingClock(rate)


#: The clock each Elector-run candidate gets; ``deadline_counted_from_the_answer`` swaps it.
clock_factory: ClockFactory = honest_clock


def micro_time() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def cleared(spec: LeaseSpec, *, keep_rest: bool) -> LeaseSpec:
    """An empty holder without release proof. client-go's release keeps the record's other
    fields (``keep_rest``); ``lease-guard release --force`` writes a new spec; both say
    leaseDurationSeconds 1."""
    now = micro_time()
    if keep_rest:
        return replace(spec, holder="", lease_duration_seconds=1, acquire_time=now, renew_time=now, released_by=None)
    return LeaseSpec("", 1, now, now, spec.lease_transitions)


async def scenario(candidates: int, schedule: list[Fault], work: list[float], rates: list[float]) -> Intervals:
    """Run candidates that lead, work, release and campaign again, under ``schedule``."""
    memory = MemoryLeaseStore()
    stores = [FaultyStore(memory) for _ in range(candidates)]
    deletes: dict[str, list[float]] = {LEASE: [], JOB_LEASE: []}
    born: dict[str, float] = {}  # owner -> when its candidate first looked at the Lease
    candidate_of: dict[str, int] = {}  # owner -> candidate

    def excuse_for(lease: str) -> Callable[[str, float, str], bool]:
        # A candidate (a process: one store) whose first answer came after a delete finds no
        # Lease at all and takes it at once, while a holder cut off from the store may still
        # run until its deadline: allowed, the one case no candidate can see.
        def excuse(earlier: str, since: float, later: str) -> bool:
            n = candidate_of.get(later)
            first = stores[n].first_answer_at if n is not None else None
            looked = max(born.get(later, -math.inf), first if first is not None else math.inf)
            return any(since <= deleted <= looked for deleted in deletes[lease])

        return excuse

    intervals = Intervals(excuse=excuse_for(LEASE))
    job_intervals = Intervals(excuse=excuse_for(JOB_LEASE))
    crashed: set[int] = set()
    scopes = [trio.CancelScope() for _ in range(candidates)]
    step_down = [trio.Event() for _ in range(candidates)]
    processes: dict[int, trio.Nursery] = {}  # candidate -> the nursery its process's tasks run in
    contexts: dict[int, contextvars.Context] = {}  # candidate -> the context inside its guard
    electors: dict[int, tuple[Elector, str, trio.CancelScope, trio.Event]] = {}
    generations = [itertools.count() for _ in range(candidates)]
    calls = itertools.count()
    first_call: dict[str, float] = {}

    def steal(lease: str, holder: str) -> None:
        """Overwrite the holder, as an operator would, stating the default leaseDurationSeconds
        (a steal that states less, after a clear that wrote 1, is unsafe for any lease scheme:
        the cut-off holder runs on while the thief's short lease expires)."""
        record = memory.record(lease)
        now = micro_time()
        term = record.transitions + 1 if record is not None else 0
        memory.put(lease, LeaseSpec(holder, int(LEASE_DURATION), now, now, term))

    def new_owner(n: int, prefix: str) -> str:
        owner = f"c{n}.{prefix}{next(generations[n])}"
        born[owner] = trio.current_time()
        candidate_of[owner] = n
        return owner

    def leading_candidate() -> int | None:
        owners = {owner for owner, _ in intervals.open}
        return next((candidate_of[owner] for owner in sorted(owners)), None)

    async def guarded_work(n: int, owner: str) -> None:
        intervals.start(owner)
        try:
            with trio.move_on_after(work[n % len(work)]):
                await step_down[n].wait()
                step_down[n] = trio.Event()
        finally:
            intervals.stop(owner)

    async def candidate(n: int) -> None:
        await trio.sleep(0.01 * n)  # c0 campaigns first
        with scopes[n]:
            async with trio.open_nursery() as process:
                processes[n] = process
                while True:
                    if n >= ELECTOR_CANDIDATES:
                        await leadership_campaign(n)
                        continue
                    try:
                        await elector_campaign(n, process)
                    except StoreUnavailable:  # a supervisor restarts an Elector that could not start
                        await trio.sleep(1)

    async def elector_campaign(n: int, process: trio.Nursery) -> None:
        owner = new_owner(n, "e")
        elector = Elector(LEASE, identity=f"c{n}", store=stores[n])
        # The clock hook: any object with now() and at(local) (typed by the core, not here).
        cast(Any, elector)._clock = clock_factory(stores[n], rates[n % len(rates)])
        gone = trio.Event()
        try:
            async with elector:
                contexts[n] = contextvars.copy_context()
                with trio.CancelScope() as body:
                    electors[n] = (elector, owner, body, gone)
                    while True:
                        try:
                            async with elector.leading():
                                await guarded_work(n, owner)
                            elector.step_down()  # the work is done: hand over
                        except LeadershipLost:
                            pass
        finally:
            electors.pop(n, None)
            gone.set()

    async def leadership_campaign(n: int) -> None:
        owner = new_owner(n, "l")
        try:
            async with leadership(LEASE, identity=f"c{n}", store=stores[n]):
                contexts[n] = contextvars.copy_context()
                await guarded_work(n, owner)
        except LeadershipLost:
            return  # re-enter at once
        except StoreUnavailable as exc:
            # Entering waits for as long as it takes to lead; a transient failure is part of
            # that wait. Raising it ends the app (or its retry loop) on an API-server blip.
            raise AssertionError(f"liveness: {owner}'s leadership() gave up at {trio.current_time()}: {exc}") from exc
        await trio.sleep(RETRY_PERIOD)  # the work is done: leave the others a chance

    def decorated(lease: str, n: int, identity: str, checker: Intervals) -> Callable[[str, float], Awaitable[None]]:
        @only_when_leading(lease=lease, identity=identity, store=stores[n])
        async def job(owner: str, seconds: float) -> None:
            checker.start(owner)
            try:
                await trio.sleep(seconds)
            finally:
                checker.stop(owner)

        async def call(owner: str, seconds: float) -> None:
            await job(owner, seconds)

        return call

    nightly = [decorated(JOB_LEASE, n, f"c{n}-job", job_intervals) for n in range(candidates)]
    inside = [decorated(LEASE, n, f"c{n}-x", intervals) for n in range(candidates)]

    async def call(n: int, job: Callable[[str, float], Awaitable[None]], identity: str, seconds: float) -> None:
        """One call of a decorated job; it must return (None or a result) or raise in time."""
        called = trio.current_time()
        owner = f"{identity}#{next(calls)}"
        born[owner] = first_call.setdefault(identity, called)
        candidate_of[owner] = n
        with trio.move_on_after(call_bound(seconds)) as limit, contextlib.suppress(LeaseGuardError):
            await job(owner, seconds)
        if limit.cancelled_caught:
            raise AssertionError(f"hang: {identity}'s call at {called} had not returned {call_bound(seconds)} s later")

    async def external_write(fault: Fault) -> None:
        holder = leading_candidate()
        cut_off = holder is not None and fault.length > CUT_OFF
        if cut_off:
            assert holder is not None
            stores[holder].stall()
            await trio.sleep(0.5)
        record = memory.record(LEASE)
        if fault.kind == "delete":
            memory.delete(LEASE)
            deletes[LEASE].append(trio.current_time())
        elif record is not None and fault.kind == "clear":
            memory.put(LEASE, cleared(record.spec, keep_rest=True))  # client-go's release
        elif record is not None:
            with contextlib.suppress(LeaseConflict, LeaseNotFound):  # lease-guard release --force
                await memory.update(record, cleared(record.spec, keep_rest=False))
        if cut_off:
            assert holder is not None
            await trio.sleep(fault.length - 0.5)
            if holder not in crashed:
                stores[holder].heal()

    async def exit_elector(fault: Fault, n: int) -> None:
        """A worker in an outer nursery enters ``elector.leading()``; then the Elector's block is left."""
        if n not in electors or n in crashed:
            return
        elector, owner, body, gone = electors[n]
        rate = rates[n % len(rates)]
        worker_done = trio.Event()

        async def worker() -> None:
            try:
                async with elector.leading():
                    await guarded_work(n, owner)
            except (LeaseGuardError, RuntimeError):  # lost, or the Elector has exited
                pass
            finally:
                worker_done.set()

        processes[n].start_soon(worker)
        await trio.sleep(fault.exit_after)
        body.cancel()
        grace = (RENEW_DEADLINE + RETRY_PERIOD) / rate + 1
        with trio.move_on_after(grace):
            await gone.wait()
        if n in crashed:
            return
        if not gone.is_set():
            raise AssertionError(f"hang: {owner} had not exited {grace:.1f} s after its block was left")
        with trio.move_on_after(grace):
            await worker_done.wait()
        if not worker_done.is_set() and n not in crashed:
            raise AssertionError(f"hang: a task in {owner}'s leading() was still there {grace:.1f} s after it exited")

    async def race(fault: Fault, n: int) -> None:
        """A decorated call's write takes effect; right after it (before, with or after its
        answer: the answer may be delayed), another candidate takes the Lease and runs guarded
        code, or the Lease is deleted. The call must return in time and never run its function
        beside the new holder's code."""
        holder = memory.holder(JOB_LEASE) or ""
        if holder.endswith("-job") and holder[1:-4].isdigit() and int(holder[1:-4]) < candidates:
            n = int(holder[1:-4])  # the job that holds it: its next call renews
        if n in crashed:
            return
        identity = f"c{n}-job"
        store = stores[n]
        answer_delay = round(fault.length % 3, 2) if fault.length % 2 < 1 else 0.0
        taken_after = round(fault.length % 1.5, 2)
        written = trio.Event()

        def after_write(record: LeaseRecord) -> None:
            if record.name == JOB_LEASE and record.holder == identity:
                store.after_write = None
                written.set()

        async def racer() -> None:
            await written.wait()
            await trio.sleep(taken_after)
            faults_injected["race (ended right after the write)"] += 1
            if fault.length > CUT_OFF:
                memory.delete(JOB_LEASE)
                deletes[JOB_LEASE].append(trio.current_time())
                return
            # Another candidate takes it and, as a holder may, runs guarded code for a while
            # (from a moment after its write, which the racing call sees at once).
            thief = f"thief#{next(calls)}"
            steal(JOB_LEASE, thief)
            if store.stalled:
                return  # the call cannot see it: an overwrite, not a race (see "steal")
            await trio.sleep(0.001)
            job_intervals.start(thief)
            await trio.sleep(RENEW_DEADLINE / 2)
            job_intervals.stop(thief)

        store.after_write = after_write
        delayed = answer_delay > 0 and store.answer_delay == 0
        if delayed:
            store.answer_delay = answer_delay
        try:
            async with trio.open_nursery() as both:
                both.start_soon(racer)
                await call(n, nightly[n], identity, fault.length)
                if not written.is_set():  # the call took nothing: no race
                    both.cancel_scope.cancel()
        finally:
            if delayed and store.answer_delay == answer_delay:
                store.answer_delay = 0
            if store.after_write is after_write:
                store.after_write = None

    async def inject(fault: Fault) -> None:
        await trio.sleep_until(fault.at)
        n = fault.candidate % candidates
        store = stores[n]
        faults_injected[fault.kind] += 1
        if fault.kind == "steal":
            steal(LEASE, "operator")
        elif fault.kind == "release":
            step_down[n].set()
        elif fault.kind == "crash" and n != 0 and n not in crashed:
            crashed.add(n)
            store.stall()  # no further request of a dead process reaches the server
            scopes[n].cancel()
        elif fault.kind == "stall":
            store.stall()
            await trio.sleep(fault.length)
            if n not in crashed:
                store.heal()
        elif fault.kind == "delay":
            store.answer_delay = fault.length
            await trio.sleep(fault.length)
            store.answer_delay = 0
        elif fault.kind == "late-answer-then-partition":
            # The hazard of counting the deadline from answers: a write takes effect, its answer
            # comes back late (but before the deadline), then the network goes silent.
            store.answer_delay = fault.length % RENEW_DEADLINE
            await trio.sleep(0.6)
            store.stall()
            store.answer_delay = 0
            await trio.sleep(PARTITION_AFTER_LATE_ANSWER)
            if n not in crashed:
                store.heal()
        elif fault.kind == "errors":
            count = int(fault.length) % 4 + 1
            store.errors.extend(StoreUnavailable("injected 503", retry_after=fault.length % 3) for _ in range(count))
        elif fault.kind == "errors-after-effect":
            store.errors_after_effect.append(StoreUnavailable("timeout after the write took effect"))
        elif fault.kind == "conflict":
            store.write_errors.append(LeaseConflict("injected 409"))
        elif fault.kind in ("delete", "clear", "force-release"):
            await external_write(fault)
        elif fault.kind == "elector-exit":
            await exit_elector(fault, n % ELECTOR_CANDIDATES)
        elif fault.kind == "overlapping-calls" and n not in crashed:
            for _ in range(OVERLAPPING_CALLS):
                if n in processes and n not in crashed:
                    processes[n].start_soon(call, n, nightly[n], f"c{n}-job", fault.length)
                await trio.sleep(fault.length / 3)
        elif fault.kind == "job-in-elector" and n in contexts and n not in crashed:
            # A job decorated for another identity, called inside this candidate's guard: a
            # second candidate in the same process, never merged into the first.
            contexts[n].run(processes[n].start_soon, call, n, inside[n], f"c{n}-x", fault.length)
        elif fault.kind == "reenter-partition":
            # A leadership() block cut off from the store ends by its deadline and is entered
            # again at once, while the store is still unreachable.
            targets = list(range(ELECTOR_CANDIDATES, candidates))
            if not targets:
                return
            leader = leading_candidate()
            n = leader if leader in targets else targets[fault.candidate % len(targets)]
            stores[n].stall()
            await trio.sleep(RENEW_DEADLINE + fault.length)
            if n not in crashed:
                stores[n].heal()
        elif fault.kind == "race":
            await race(fault, n)

    async with trio.open_nursery() as nursery:
        for n in range(candidates):
            nursery.start_soon(candidate, n)
        for fault in schedule:
            nursery.start_soon(inject, fault)
        quiet_from = max((f.end for f in schedule), default=0)
        slowest = min([rates[n % len(rates)] for n in range(min(candidates, ELECTOR_CANDIDATES))] + [1.0])
        # lease_duration of silence, an acquire already sent into a partition giving up, and
        # after a delete the renew_deadline a re-created Lease is held before it is led.
        recreate = RENEW_DEADLINE if any(f.kind == "delete" for f in schedule) else 0.0
        bound = quiet_from + (LEASE_DURATION + RENEW_DEADLINE + recreate) / slowest
        await trio.sleep_until(bound + 1)
        led = [span for span in intervals.closed() if span[2] > quiet_from and span[1] <= bound]
        assert led, f"liveness: nobody led between {quiet_from} and {bound}: {intervals.closed()[-3:]}"
        nursery.cancel_scope.cancel()
    intervals.assert_disjoint()
    job_intervals.assert_disjoint()
    return intervals


def run(candidates: int, schedule: list[Fault], work: list[float], rates: list[float]) -> Intervals:
    """Run a scenario; a safety, liveness or hang violation raises AssertionError (not in a group)."""
    try:
        return trio.run(scenario, candidates, schedule, work, rates, clock=trio.testing.MockClock(autojump_threshold=0))
    except BaseExceptionGroup as group:
        violation = first_violation(group)
        if violation is None:
            raise
        raise violation from None


works = st.lists(st.floats(0.5, 40).map(lambda t: round(t, 2)), min_size=1, max_size=4)


@given(
    candidates=st.integers(2, 4),
    schedule=st.lists(faults, max_size=12),
    work=works,
    rates=st.lists(st.floats(1 / SAFE_DRIFT, SAFE_DRIFT), min_size=1, max_size=4),
)
def test_no_two_leaders_and_someone_leads_again(
    candidates: int, schedule: list[Fault], work: list[float], rates: list[float]
) -> None:
    run(candidates, schedule, work, rates)


# -- one schedule per usage pattern: what the semantics promise ----------------------------


def first_span(intervals: Intervals, owner: str) -> tuple[float, float]:
    return next((start, end) for who, start, end in sorted(intervals.spans, key=lambda span: span[1]) if who == owner)


def test_a_candidate_that_finds_no_lease_takes_it_at_once_and_a_release_is_taken_at_once() -> None:
    intervals = run(2, [Fault(at=3, candidate=0, kind="release", length=1)], [1000], [1.0])
    assert first_span(intervals, "c0.e0") == (0, 3)
    assert 3 <= first_span(intervals, "c1.e0")[0] < 3.1


@pytest.mark.parametrize("kind", ["delete", "clear", "force-release"])
def test_an_external_write_while_the_holder_is_cut_off_waits_for_silence(kind: str) -> None:
    # c0 renews at 0 and 2; at 3 it is cut off, at 3.5 someone else deletes the Lease or
    # clears its holder without release proof. c0 runs on until its deadline, 12; c1 may take
    # the Lease lease_duration after it saw the delete or clear (18.5), not at 3.5: it cannot
    # know whether a holder it never saw renewed after the last renewal it did see.
    # A Lease c1 has to re-create it leads renew_deadline after the create (28.5).
    intervals = run(2, [Fault(at=3, candidate=0, kind=kind, length=20)], [1000], [1.0])
    assert first_span(intervals, "c0.e0") == (0, 12)
    takeover = 18.5 + (10 if kind == "delete" else 0)
    assert takeover <= first_span(intervals, "c1.e0")[0] < takeover + 0.1


def test_leaving_an_elector_ends_the_guarded_code_of_its_outer_tasks_before_the_lease_is_released() -> None:
    # At 3 a worker started in an outer nursery enters c0's elector.leading(); at 4.1 the
    # Elector's block is left. The worker's code must end before anyone else leads.
    run(2, [Fault(at=3, candidate=0, kind="elector-exit", length=1)], [1000], [1.0])


def test_an_elector_left_while_a_task_waits_in_leading_does_not_leave_it_waiting() -> None:
    # c1 does not lead: its worker waits in elector.leading() when the Elector is left.
    run(2, [Fault(at=3, candidate=1, kind="elector-exit", length=1)], [1000], [1.0])


def test_overlapping_calls_of_a_decorated_job_run_one_at_a_time() -> None:
    # Calls at 3, 6 and 9, each running 9 s: the later two return None.
    run(2, [Fault(at=3, candidate=0, kind="overlapping-calls", length=9)], [1000], [1.0])


def test_a_job_for_another_identity_called_inside_a_guard_campaigns_on_its_own() -> None:
    # c0 leads; a job decorated for identity c0-x is called inside c0's Elector: it is another
    # candidate for the same Lease, so it must return None instead of running beside c0.
    run(2, [Fault(at=3, candidate=0, kind="job-in-elector", length=5)], [1000], [1.0])


@pytest.mark.parametrize(
    "length",
    [
        3.2,  # answered at once; the Lease taken 0.2 s after the write
        4.5,  # answer delayed 1.5 s; taken at once after the write
        6.3,  # answer delayed 0.3 s; taken 0.3 s after the write (with the answer)
        8.9,  # answer delayed 2.9 s; taken 1.4 s after the write
        13.0,  # deleted 1 s after the write
    ],
)
def test_a_decorated_call_whose_tenure_ends_right_after_its_write_returns_in_time(length: float) -> None:
    run(2, [Fault(at=3, candidate=0, kind="race", length=length)], [1000], [1.0])


# -- the checker can fail ---------------------------------------------------------------


def partition_of_the_leader() -> list[Fault]:
    """c0 leads from 0; at 1 its network goes silent for 30 s (a partition)."""
    return [Fault(at=1, candidate=0, kind="stall", length=30)]


def test_a_partitioned_leader_stops_before_the_follower_starts() -> None:
    intervals = run(2, partition_of_the_leader(), [1000], [1.0])
    (first, second) = intervals.spans[:2]
    assert first[0] == "c0.e0"
    assert first[2] == 10  # deadline: its send at 0 + renew_deadline
    assert second[0] == "c1.e0"
    assert second[1] == 15.01  # c1 saw c0's write when it started at 0.01: 15 s of silence


def test_the_checker_finds_overlap_when_drift_exceeds_the_bound() -> None:
    # c1's clock runs twice as fast: its 15 s of silence pass in 7.5 s of c0's time.
    with pytest.raises(AssertionError, match="started leading"):
        run(2, partition_of_the_leader(), [1000], [1.0, 2.0])


@contextlib.contextmanager
def deadline_counted_from_the_answer() -> Iterator[None]:
    """Break the Electors the way client-go's renew cycle is: a clock that reads each send
    time as the moment its answer arrives, so deadlines count from answers."""
    global clock_factory
    original = clock_factory
    clock_factory = AnswerCountedClock
    try:
        yield
    finally:
        clock_factory = original


def test_the_checker_finds_overlap_in_an_elector_that_counts_from_answers() -> None:
    # c0's renewal sent at 2 takes effect at once but is answered 7.9 s late, at 9.9, just
    # inside its deadline; from 3 its network is silent. Counting from the answer, c0 runs
    # to 19.9; c1 saw the write at 2 and takes over at 17.01. Counting from the send: 12.
    schedule = [Fault(at=1.5, candidate=0, kind="delay", length=7.9), Fault(at=3, candidate=0, kind="stall", length=40)]
    run(2, schedule, [1000], [1.0])  # the real elector: safe
    with deadline_counted_from_the_answer(), pytest.raises(AssertionError, match="started leading"):
        run(2, schedule, [1000], [1.0])
