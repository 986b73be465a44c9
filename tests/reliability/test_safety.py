"""No two leaders, ever: random fault schedules in virtual time, and a checker shown to fail.

Safety: the intervals during which candidates' guarded code runs never overlap, whatever
the faults, while their clocks' rates differ by less than lease_duration / renew_deadline.
Liveness: once the faults stop, someone's guarded code runs within lease_duration plus
renew_deadline (an acquire already sent into a partition gives up within renew_deadline).

``HYPOTHESIS_PROFILE=chaos`` (``nox -s chaos``) runs many more schedules than CI does.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lease_guard import Elector, LeadershipLost, LeaseConflict, MemoryLeaseStore, StoreUnavailable
from lease_guard._campaign import Clock, Tenure
from lease_guard._groups import single_exception

from ..faults import FaultyStore, Intervals

LEASE = "jobs"
LEASE_DURATION, RENEW_DEADLINE = 15.0, 10.0  # the defaults
#: Rates within [1/1.2, 1.2] differ by at most 1.44 < 15 / 10.
SAFE_DRIFT = 1.2
PARTITION_AFTER_LATE_ANSWER = 30.0

settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("chaos", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

FAULT_KINDS = [
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
faults_injected: collections.Counter[str] = collections.Counter()


@dataclass(frozen=True)
class Fault:
    at: float
    candidate: int
    kind: str
    length: float

    @property
    def end(self) -> float:
        """When this fault's effects are over."""
        return self.at + (
            PARTITION_AFTER_LATE_ANSWER + 0.6 if self.kind == "late-answer-then-partition" else self.length
        )


faults = st.builds(
    Fault,
    at=st.floats(0, 120).map(lambda t: round(t, 2)),
    candidate=st.integers(0, 3),
    kind=st.sampled_from(FAULT_KINDS),
    length=st.floats(0.1, 25).map(lambda t: round(t, 2)),
)


async def scenario(candidates: int, schedule: list[Fault], work: list[float], rates: list[float]) -> Intervals:
    """Run candidates that lead, work, release and campaign again, under ``schedule``."""
    memory = MemoryLeaseStore()
    stores = [FaultyStore(memory) for _ in range(candidates)]
    intervals = Intervals()
    crashed: set[int] = set()
    scopes = [trio.CancelScope() for _ in range(candidates)]
    step_down: dict[int, trio.Event] = {}

    async def candidate(n: int) -> None:
        await trio.sleep(0.01 * n)  # c0 campaigns first
        with scopes[n]:
            while True:  # a supervisor restarts a candidate that could not start
                try:
                    await campaign(n)
                except StoreUnavailable:
                    await trio.sleep(1)

    async def campaign(n: int) -> None:
        elector = Elector(LEASE, identity=f"c{n}", store=stores[n])
        elector._clock = Clock(rates[n % len(rates)])
        async with elector:
            step_down[n] = trio.Event()
            while True:
                try:
                    async with elector.leading():
                        intervals.start(f"c{n}")
                        try:
                            with trio.move_on_after(work[n % len(work)]):
                                await step_down[n].wait()
                                step_down[n] = trio.Event()
                        finally:
                            intervals.stop(f"c{n}")
                    elector.step_down()  # the work is done: hand over
                except LeadershipLost:
                    pass

    async def inject(fault: Fault) -> None:
        await trio.sleep_until(fault.at)
        n = fault.candidate % candidates
        store = stores[n]
        faults_injected[fault.kind] += 1
        if fault.kind == "steal":
            memory.steal(LEASE, "operator")
        elif fault.kind == "release" and n in step_down:
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

    async with trio.open_nursery() as nursery:
        for n in range(candidates):
            nursery.start_soon(candidate, n)
        for fault in schedule:
            nursery.start_soon(inject, fault)
        quiet_from = max((f.end for f in schedule), default=0)
        slowest = min(rates[n % len(rates)] for n in range(candidates))
        bound = quiet_from + (LEASE_DURATION + RENEW_DEADLINE) / slowest
        await trio.sleep_until(bound + 1)
        led = [span for span in intervals.closed() if span[2] > quiet_from and span[1] <= bound]
        assert led, f"liveness: nobody led between {quiet_from} and {bound}: {intervals.closed()[-3:]}"
        nursery.cancel_scope.cancel()
    intervals.assert_disjoint()
    return intervals


def run(candidates: int, schedule: list[Fault], work: list[float], rates: list[float]) -> Intervals:
    """Run a scenario; a safety or liveness violation raises AssertionError (not in a group)."""
    try:
        return trio.run(scenario, candidates, schedule, work, rates, clock=trio.testing.MockClock(autojump_threshold=0))
    except BaseExceptionGroup as group:
        violation = single_exception(group)
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


# -- the checker can fail ---------------------------------------------------------------


def partition_of_the_leader() -> list[Fault]:
    """c0 leads from 0; at 1 its network goes silent for 30 s (a partition)."""
    return [Fault(at=1, candidate=0, kind="stall", length=30)]


def test_a_partitioned_leader_stops_before_the_follower_starts() -> None:
    intervals = run(2, partition_of_the_leader(), [1000], [1.0])
    (first, second) = intervals.spans[:2]
    assert first[0] == "c0"
    assert first[2] == 10  # deadline: its send at 0 + renew_deadline
    assert second[0] == "c1"
    assert second[1] == 15.01  # c1 saw c0's write when it started at 0.01: 15 s of silence


def test_the_checker_finds_overlap_when_drift_exceeds_the_bound() -> None:
    # c1's clock runs twice as fast: its 15 s of silence pass in 7.5 s of c0's time.
    with pytest.raises(AssertionError, match="started leading"):
        run(2, partition_of_the_leader(), [1000], [1.0, 2.0])


@contextmanager
def deadline_counted_from_the_answer() -> Iterator[None]:
    """Break the elector the way client-go's renew cycle is: extend from when an answer arrived."""
    original = Tenure.extend

    def broken(self: Tenure, sent_at: float) -> bool:
        return original(self, max(sent_at, self.campaign.clock.now()))

    Tenure.extend = broken  # type: ignore[method-assign]
    try:
        yield
    finally:
        Tenure.extend = original  # type: ignore[method-assign]


def test_the_checker_finds_overlap_in_an_elector_that_counts_from_answers() -> None:
    # c0's renewal sent at 2 takes effect at once but is answered 7.9 s late, at 9.9, just
    # inside its deadline; from 3 its network is silent. Counting from the answer, c0 runs
    # to 19.9; c1 saw the write at 2 and takes over at 17.01. Counting from the send: 12.
    schedule = [Fault(at=1.5, candidate=0, kind="delay", length=7.9), Fault(at=3, candidate=0, kind="stall", length=40)]
    run(2, schedule, [1000], [1.0])  # the real elector: safe
    with deadline_counted_from_the_answer(), pytest.raises(AssertionError, match="started leading"):
        run(2, schedule, [1000], [1.0])
