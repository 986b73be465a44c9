"""Property: whatever the schedule of faults, no two candidates' guarded code overlaps, and
someone leads again once the faults stop. Virtual time, in-memory store, hypothesis."""

from __future__ import annotations

from dataclasses import dataclass

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lease_guard import LeadershipLost, MemoryLeaseStore, StoreUnavailable, leadership

from .faults import FaultyStore, Intervals

LEASE = "jobs"
LEASE_DURATION, RENEW_DEADLINE = 15.0, 10.0  # the defaults


@dataclass(frozen=True)
class Fault:
    at: float
    candidate: int
    kind: str
    length: float


faults = st.builds(
    Fault,
    at=st.floats(0, 120).map(lambda t: round(t, 2)),
    candidate=st.integers(0, 3),
    kind=st.sampled_from(["stall", "delay", "errors", "steal", "crash"]),
    length=st.floats(0.1, 25).map(lambda t: round(t, 2)),
)


async def scenario(candidates: int, schedule: list[Fault], work: list[float]) -> Intervals:
    memory = MemoryLeaseStore()
    stores = [FaultyStore(memory) for _ in range(candidates)]
    intervals = Intervals()
    crashed: set[int] = set()
    scopes = [trio.CancelScope() for _ in range(candidates)]

    async def candidate(n: int) -> None:
        with scopes[n]:
            while True:
                try:
                    async with leadership(LEASE, identity=f"c{n}", store=stores[n]):
                        intervals.start(f"c{n}")
                        try:
                            await trio.sleep(work[n % len(work)])
                        finally:
                            intervals.stop(f"c{n}")
                except (LeadershipLost, StoreUnavailable):
                    pass

    async def inject(fault: Fault) -> None:
        await trio.sleep_until(fault.at)
        n = fault.candidate % candidates
        store = stores[n]
        if fault.kind == "steal":
            memory.steal(LEASE, "operator")
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
        elif fault.kind == "errors":
            store.errors.extend(StoreUnavailable("injected 503") for _ in range(int(fault.length) % 5 + 1))

    async with trio.open_nursery() as nursery:
        for n in range(candidates):
            nursery.start_soon(candidate, n)
        for fault in schedule:
            nursery.start_soon(inject, fault)
        quiet_from = max((f.at + f.length for f in schedule), default=0)
        # Liveness: once the faults stop, someone's guarded code runs within lease_duration
        # (a stolen or orphaned lease expiring) plus renew_deadline (an acquire already in
        # flight to a partitioned server giving up).
        bound = quiet_from + LEASE_DURATION + RENEW_DEADLINE
        await trio.sleep_until(bound + 1)
        led = [span for span in intervals.closed() if span[2] > quiet_from and span[1] <= bound]
        assert led, f"nobody led between {quiet_from} and {bound}: {intervals.closed()[-3:]}"
        nursery.cancel_scope.cancel()
    intervals.assert_disjoint()
    return intervals


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    candidates=st.integers(2, 4),
    schedule=st.lists(faults, max_size=12),
    work=st.lists(st.floats(0.5, 40).map(lambda t: round(t, 2)), min_size=1, max_size=4),
)
def test_no_two_leaders_and_someone_leads_again(candidates: int, schedule: list[Fault], work: list[float]) -> None:
    trio.run(scenario, candidates, schedule, work, clock=trio.testing.MockClock(autojump_threshold=0))
