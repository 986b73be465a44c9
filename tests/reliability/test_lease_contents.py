"""Fuzz the Lease contents a campaign reads: never a crash, always the documented treatment.

The documented treatment (README, "How Leases written by others are treated"): an empty or
absent holder with the release proof (``released_by``: the holder released it itself) is
taken at once; without it (``kubectl``-style clears, client-go's release, ``lease-guard
release --force``) only after our lease_duration of observed silence, since the cleared
holder's guarded code may still run and the clear's own leaseDurationSeconds (1, as
client-go writes it) says nothing about that holder; a held Lease is taken after its
leaseDurationSeconds of observed silence, or ours when that is absent or not positive;
times are never read; a term at the int32 maximum is never taken. The API server rejects some of these values (negative
numbers, bad times); other stores and future servers might not, so they are covered here.
"""

from __future__ import annotations

import math

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from lease_guard import Elector, LeaseSpec, MemoryLeaseStore

INT32_MAX = 2**31 - 1
LEASE = "fuzzed"
LEASE_DURATION = 15.0  # the default
OBSERVE_FOR = 100.0

holders = st.one_of(st.none(), st.just(""), st.just("me"), st.text(max_size=300))
numbers = st.one_of(st.none(), st.integers(-(2**63), 2**63), st.sampled_from([0, 1, INT32_MAX - 1, INT32_MAX]))
times = st.one_of(
    st.none(),
    st.text(max_size=40),
    st.sampled_from(["2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:00Z", "1970-01-01T00:00:00.000000Z"]),
)
specs = st.builds(LeaseSpec, holders, numbers, times, times, numbers, st.one_of(st.none(), holders))


def expected_takeover(spec: LeaseSpec) -> float:
    if spec.lease_transitions is not None and spec.lease_transitions >= INT32_MAX:
        return math.inf
    if not spec.holder:
        return 0.0 if spec.released_by else LEASE_DURATION
    duration = spec.lease_duration_seconds
    return float(duration) if duration is not None and duration > 0 else LEASE_DURATION


async def campaign_against(spec: LeaseSpec) -> tuple[float, int | None]:
    store = MemoryLeaseStore()
    store.put(LEASE, spec)
    led_at, term = math.inf, None
    with trio.move_on_after(OBSERVE_FOR):
        async with Elector(LEASE, identity="me", store=store) as elector:
            await elector.wait_leading()
            led_at, term = trio.current_time(), elector.term
    return led_at, term


@given(spec=specs)
def test_any_lease_contents_are_treated_as_documented(spec: LeaseSpec) -> None:
    led_at, term = trio.run(campaign_against, spec, clock=trio.testing.MockClock(autojump_threshold=0))
    expected = expected_takeover(spec)
    if expected >= OBSERVE_FOR:
        assert led_at == math.inf
    else:
        assert led_at == expected
        transitions = spec.lease_transitions if spec.lease_transitions and spec.lease_transitions > 0 else 0
        assert term == transitions + 1
