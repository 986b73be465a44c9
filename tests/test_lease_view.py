"""The pure rules of _lease_view, from tables: no trio, no store, times passed in.

Each row is a history of states one candidate ("me") observed, at the times given, and
when that candidate may take the Lease afterwards.
"""

from __future__ import annotations

import math

import pytest

from lease_guard._lease_view import LeaseView
from lease_guard._record import INT32_MAX, LeaseRecord, LeaseSpec

ME = "me"
versions = iter(range(1, 10**9))


def state(
    holder: str | None, *, duration: int | None = 15, term: int | None = 1, proof: str | None = None
) -> LeaseRecord:
    return LeaseRecord("ns", "jobs", str(next(versions)), LeaseSpec(holder, duration, None, None, term, proof))


HELD_BY_X = ("held", "x")
DELETED = ("deleted",)
CLEARED = ("cleared",)  # holder "" as client-go's release, kubectl or `release --force` write it
RELEASED_BY_X = ("released", "x")  # x's own release, with the proof


def record_for(step: tuple[str, ...]) -> LeaseRecord | None:
    match step:
        case ("held", holder):
            return state(holder, duration=40 if holder == "slow" else 15)
        case ("deleted",):
            return None
        case ("cleared",):
            return state("", duration=1)
        case ("released", holder):
            return state("", duration=1, proof=holder)
    raise AssertionError(step)


@pytest.mark.parametrize(
    ("history", "takeable_at"),
    [
        pytest.param([(0, DELETED)], -math.inf, id="no-lease-nobody-seen: take it now"),
        pytest.param([(0, HELD_BY_X)], 15, id="held: after its duration of silence"),
        pytest.param([(0, HELD_BY_X), (4, HELD_BY_X)], 19, id="renewed: silence counts from the last change"),
        pytest.param([(0, HELD_BY_X), (4, RELEASED_BY_X)], -math.inf, id="its own release with proof: at once"),
        pytest.param([(0, HELD_BY_X), (4, DELETED)], 4 + 15, id="deleted by someone else: silence from the delete"),
        pytest.param([(0, HELD_BY_X), (4, CLEARED)], 4 + 15, id="cleared by someone else: silence from the clear"),
        pytest.param(
            [(0, HELD_BY_X), (4, CLEARED), (5, DELETED)], 5 + 15, id="cleared then deleted: from the last change"
        ),
        pytest.param([(0, ("held", "slow"))], 40, id="a holder's longer stated duration is honoured"),
        pytest.param([(0, ("held", "slow")), (4, CLEARED)], 4 + 40, id="and waited out after a clear"),
        pytest.param([(0, CLEARED)], 15, id="found cleared, holder never seen: our duration from first sight"),
        pytest.param(
            [(0, CLEARED), (9, CLEARED)],
            9 + 15,
            id="cleared again: a holder may have come and gone unseen in between",
        ),
        pytest.param(
            [(0, HELD_BY_X), (4, RELEASED_BY_X), (6, DELETED)],
            6 + 15,
            id="released, then deleted: a holder in between may have gone unseen",
        ),
        pytest.param([(0, DELETED), (3, HELD_BY_X), (5, DELETED)], 5 + 15, id="absent, created, deleted: waits"),
        pytest.param(
            [(0, HELD_BY_X), (4, RELEASED_BY_X), (6, ("held", "y")), (7, CLEARED)],
            7 + 15,
            id="y took it, then y was cleared: silence from the clear",
        ),
    ],
)
def test_when_a_lease_becomes_takeable(history: list[tuple[float, tuple[str, ...]]], takeable_at: float) -> None:
    view = LeaseView(ME, lease_duration=15.0)
    for at, step in history:
        view.observe(record_for(step), now=at)
    assert view.takeable_at() == takeable_at


def test_after_a_release_with_proof_only_our_own_duration_is_waited_out() -> None:
    # The released holder's stated duration no longer counts (its code has ended), also
    # when ours is shorter than the 1 s a release states: a deletion after it waits 0.5 s.
    view = LeaseView(ME, lease_duration=0.5)
    for at, step in [(0, HELD_BY_X), (4, RELEASED_BY_X), (6, DELETED)]:
        view.observe(record_for(step), now=at)
    assert view.takeable_at() == 6 + 0.5


def test_our_own_state_from_an_unanswered_create_is_takeable_only_renew_deadline_later() -> None:
    view = LeaseView(ME, lease_duration=15.0)
    view.observe(state("x"), now=0)
    view.observe(None, now=4)  # deleted
    mine = state(ME, term=0)
    view.sending(mine.spec)
    view.unanswered_create(takeable_from=30 + 10)  # the create's answer never came; gave up at 30
    assert view.takeable_at() == 4 + 15  # still absent: it may be created again meanwhile
    view.observe(mine, now=31)  # the create's echo
    assert view.holding(mine) and view.takeable_at() == 40


def test_our_own_state_is_ours_at_once_and_a_duplicate_identity_is_not() -> None:
    view = LeaseView(ME, lease_duration=15.0)
    mine = state(ME)
    view.sending(mine.spec)
    view.observe(mine, now=0)
    assert view.holding(mine)
    assert view.takeable_at() == -math.inf
    # another process writing as "me" (its own renewTime makes it a write we never sent)
    duplicate = LeaseRecord("ns", "jobs", "dup", LeaseSpec(ME, 15, None, "2026-01-01T00:00:00.000000Z", 1))
    view.observe(duplicate, now=1)
    assert not view.holding(duplicate)
    assert view.takeable_at() == 1 + 15
    assert view.tenure_end(duplicate) == "another process is writing the lease as 'me' (duplicate identity)"


def test_our_own_tenure_cleared_by_someone_else_is_waited_out_too() -> None:
    # Others may have held it since, unseen: after a deletion even the term restarts at 0.
    view = LeaseView(ME, lease_duration=15.0)
    mine = state(ME)
    view.sending(mine.spec)
    view.observe(mine, now=0)
    view.observe(state("", duration=1), now=3)
    assert view.takeable_at() == 3 + 15


@pytest.mark.parametrize(
    ("record", "takeable_at"),
    [
        pytest.param(state("x", duration=None), 15, id="no duration: ours"),
        pytest.param(state("x", duration=0), 15, id="zero duration: ours"),
        pytest.param(state("x", duration=-5), 15, id="negative duration: ours"),
        pytest.param(state("x", duration=40), 40, id="a longer stated duration is honoured"),
        pytest.param(state("x", duration=1), 1, id="a shorter stated duration too (the holder's intent)"),
        pytest.param(state("x", duration=INT32_MAX), INT32_MAX, id="huge duration honoured"),
        pytest.param(state(None, term=INT32_MAX, proof="x"), math.inf, id="exhausted term: never"),
        pytest.param(state("", duration=1, proof="x"), -math.inf, id="proof is enough whoever we saw"),
    ],
)
def test_foreign_contents(record: LeaseRecord, takeable_at: float) -> None:
    view = LeaseView(ME, lease_duration=15.0)
    view.observe(record, now=0)
    assert view.takeable_at() == takeable_at


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        pytest.param(None, "the Lease was deleted", id="deleted"),
        pytest.param(state("y"), "'y' took the lease", id="taken"),
        pytest.param(state(""), "someone else cleared the holder", id="cleared"),
    ],
)
def test_what_ends_our_tenure(record: LeaseRecord | None, reason: str) -> None:
    view = LeaseView(ME, lease_duration=15.0)
    assert view.tenure_end(record) == reason


def test_the_same_version_twice_is_no_change() -> None:
    view = LeaseView(ME, lease_duration=15.0)
    record = state("x")
    assert view.observe(record, now=0)
    assert not view.observe(record, now=10)
    assert view.takeable_at() == 15  # the repeat did not restart the silence


def test_the_answer_to_our_write_is_old_news_once_a_later_state_was_seen() -> None:
    view = LeaseView(ME, lease_duration=15.0)
    view.observe(None, now=0)
    changes = view.changes  # our create is sent now
    ours = state(ME)
    assert not view.superseded(ours, changes)  # nothing seen since: take the answer in
    view.observe(ours, now=0.1)  # the watch delivered our own write first
    assert not view.superseded(ours, changes)
    view.observe(state("thief"), now=0.2)  # then a later state
    assert view.superseded(ours, changes)
    view.observe(None, now=0.3)  # or a deletion
    assert view.superseded(ours, changes)


def test_a_short_lease_duration_of_our_own_is_waited_out_after_a_foreign_clear() -> None:
    view = LeaseView(ME, lease_duration=0.5)
    view.observe(state("", duration=1), now=0)
    assert view.takeable_at() == 0.5


def test_a_write_is_ours_by_its_version_when_the_store_rewrites_its_fields() -> None:
    # A store may hand back the fields in its own format (a normalised time, say): the
    # version it answered with still tells our write from another process's.
    view = LeaseView(ME, lease_duration=15.0)
    sent = LeaseSpec(ME, 15, "2026-01-01T00:00:00.000000Z", "2026-01-01T00:00:00.000000Z", 1)
    view.sending(sent)
    answered = LeaseRecord("ns", "jobs", "41", LeaseSpec(ME, 15, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", 1))
    view.written(answered)
    view.observe(answered, now=0)
    assert view.holding(answered)
    assert view.takeable_at() == -math.inf


def test_only_the_last_writes_are_remembered() -> None:
    view = LeaseView(ME, lease_duration=15.0)
    first = state(ME)
    view.sending(first.spec)
    view.written(first)
    for _ in range(32):
        later = state(ME, term=7)
        view.sending(later.spec)
        view.written(later)
    assert not view.is_ours(first)
