"""What the campaign tells operators: every log line, and every reason a tenure ends, word for word.

Operators read and grep these lines, so their level and text are behaviour. Each scenario
produces its situation the way a user or a fault would (another client stealing, clearing or
deleting the Lease, a partition, a refusing or failing API server, a store with no headroom,
guarded code that never reaches a checkpoint), in virtual time, and the test checks the exact
records on the ``lease_guard`` logger. Every record must format and name its Lease the way
``Campaign.where`` does (``lease NAMESPACE/NAME``), which :func:`logged` checks for all of them.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from lease_guard import (
    Elector,
    LeadershipLost,
    LeaseConflict,
    LeaseRecord,
    LeaseSpec,
    MemoryLeaseStore,
    NamespaceNotFound,
    PermissionDenied,
    StoreUnavailable,
    leadership,
    only_when_leading,
)
from lease_guard._record import INT32_MAX, micro_time

from .faults import FaultyStore
from .test_campaign import LEASE, NoHeadroom, ShieldedWrites, lead_until_lost, steal_at
from .test_guarantees import clear

WHERE = f"lease default/{LEASE}"
"""How every line names the Lease (``Campaign.where``)."""

REFUSED = (
    "the API server refused a request ({verb}); retrying for up to renew_deadline (a restarted API server does "
    "this until its authorizer has synced; if it persists, check RBAC): {exc}"
)

Line = tuple[str, str]


@pytest.fixture(autouse=True)
def _capture_everything(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="lease_guard")


def logged(caplog: pytest.LogCaptureFixture) -> list[Line]:
    """The lease_guard records so far, as (level, message).

    The contract of every line is checked here: it formats (its arguments fit its format
    string), comes from the ``lease_guard`` logger, and names its Lease.
    """
    lines = []
    for record in caplog.records:
        if not record.name.startswith("lease_guard"):
            continue
        message = record.getMessage()
        assert record.name == "lease_guard"
        assert WHERE in message, f"a log line that does not name its Lease: {message!r}"
        lines.append((record.levelname, message))
    return lines


# -- helpers of the scenarios --------------------------------------------------------------------


@dataclass
class FlakyWatch(FaultyStore):
    """A store whose watch can break off (a reset connection): with ``break_watch`` set it
    ends after the next state it delivers, and the campaign opens it again, meeting
    ``watch_errors`` first."""

    break_watch: bool = False
    watch_errors: list[Exception] = field(default_factory=list)

    async def watch(self, namespace: str, name: str) -> AsyncIterator[LeaseRecord | None]:
        if self.watch_errors:
            raise self.watch_errors.pop(0)
        async for record in super().watch(namespace, name):
            yield record
            if self.break_watch:
                self.break_watch = False
                return


async def at(when: float, action: Callable[[], object]) -> None:
    """Do ``action`` at trio time ``when``, as another client or a fault would."""
    await trio.sleep_until(when)
    action()


async def lead_with_faults(store: FaultyStore, *faults: tuple[float, Callable[[], object]], until: float) -> None:
    """Lead as "a" until ``until`` (however the tenure ends meanwhile), the faults striking on time."""
    async with trio.open_nursery() as nursery, Elector(LEASE, identity="a", store=store) as elector:
        for when, action in faults:
            nursery.start_soon(at, when, action)
        await elector.wait_leading()
        await trio.sleep_until(until)


# -- the scenarios ---------------------------------------------------------------------------------


async def lead_and_exit() -> None:
    async with leadership(LEASE, identity="a", store=MemoryLeaseStore()):
        await trio.sleep(1)


async def stolen() -> None:
    store = MemoryLeaseStore()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(steal_at, store, 3)
        _, lost = await lead_until_lost(store, "a")
    assert lost.reason == "'operator' took the lease"


async def cleared() -> None:
    store = MemoryLeaseStore()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(at, 3, lambda: clear(store))
        _, lost = await lead_until_lost(store, "a")
    assert lost.reason == "someone else cleared the holder"


async def deleted() -> None:
    store = MemoryLeaseStore()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(at, 3, lambda: store.delete(LEASE))
        _, lost = await lead_until_lost(store, "a")
    assert lost.reason == "the Lease was deleted"


async def duplicate_identity() -> None:
    store = MemoryLeaseStore()

    def impostor_writes() -> None:
        record = store.record(LEASE)
        assert record is not None
        store.put(LEASE, LeaseSpec("a", 15, record.spec.acquire_time, micro_time(), record.spec.lease_transitions))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(at, 3, impostor_writes)
        _, lost = await lead_until_lost(store, "a")
    assert lost.reason == "another process is writing the lease as 'a' (duplicate identity)"


async def stepped_down() -> None:
    async with Elector(LEASE, identity="a", store=MemoryLeaseStore()) as elector:
        await elector.wait_leading()

        async def guarded() -> None:
            with pytest.raises(LeadershipLost) as lost:
                async with elector.leading():
                    await trio.sleep_forever()
            assert lost.value.reason == "stepped down"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(guarded)
            await trio.sleep(3)
            elector.step_down()
        await trio.sleep(1)


async def renewal_unavailable() -> None:
    store = FaultyStore(MemoryLeaseStore())
    await lead_with_faults(store, (1, lambda: store.errors.append(StoreUnavailable("503"))), until=3)


async def renewal_refused() -> None:
    store = FaultyStore(MemoryLeaseStore())
    await lead_with_faults(store, (1, lambda: store.errors.append(PermissionDenied("update forbidden"))), until=3)


async def renewal_fails_for_good() -> None:
    store = FaultyStore(MemoryLeaseStore())
    gone = NamespaceNotFound('namespace "default" was deleted')
    with pytest.raises(LeadershipLost) as lost:
        async with leadership(LEASE, identity="a", store=store):
            store.errors.append(gone)
            await trio.sleep_forever()
    assert lost.value.reason == 'renewal failed: namespace "default" was deleted'
    assert lost.value.__cause__ is gone


async def refusals_outlast_a_write_that_cannot_be_abandoned() -> None:
    # Renewals refused from 4; the one sent at 6 hangs in a partition (5 to 15) and cannot be
    # abandoned at the deadline (12). Its refusal at 15 comes after refusals have lasted
    # renew_deadline: believed, it ends the tenure.
    store = ShieldedWrites(MemoryLeaseStore())
    forbidden = PermissionDenied("update forbidden")

    def partition() -> None:
        store.stall()
        store.errors.append(forbidden)

    await lead_with_faults(
        store, (3, lambda: store.errors.append(forbidden)), (5, partition), (15, store.heal), until=16
    )


async def renewals_stop_answering() -> None:
    # A partition from 5: the renewal sent at 6 never returns. No guarded block runs, so the
    # campaign's own deadline check ends the tenure; at the exit the release cannot get through.
    store = FaultyStore(MemoryLeaseStore())
    await lead_with_faults(store, (5, store.stall), until=15)


async def late_answers() -> None:
    # Writes that cannot be abandoned, answered 12 s late from 5: the renewal sent at 6 is
    # answered at 18, after the deadline (14); the acquire sent then is answered at 30.
    store = ShieldedWrites(MemoryLeaseStore())
    await lead_with_faults(
        store,
        (5, lambda: setattr(store, "answer_delay", 12)),
        (29, lambda: setattr(store, "answer_delay", 0)),
        until=31,
    )


async def recreated() -> None:
    store = MemoryLeaseStore()
    store.steal(LEASE, "z")
    async with trio.open_nursery() as nursery, Elector(LEASE, identity="a", store=store) as elector:
        nursery.start_soon(at, 1, lambda: store.delete(LEASE))
        await elector.wait_leading()
        assert trio.current_time() == 1 + 15 + 10


async def takeover_seen_before_the_answer() -> None:
    memory = MemoryLeaseStore()
    store = FaultyStore(memory, answer_delay=1)

    @only_when_leading(lease=LEASE, identity="a", store=store)
    async def job() -> str:
        raise AssertionError("ran on a stale answer")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(at, 0.5, lambda: memory.steal(LEASE, "thief"))
        assert await job() is None


async def lost_race_and_reread_fails() -> None:
    memory = MemoryLeaseStore()
    memory.steal(LEASE, "z")
    store = FaultyStore(memory)
    async with Elector(LEASE, identity="a", store=store) as elector:
        # The acquire at 15 loses a race (409), and the re-read after it finds no server.
        store.errors.extend([LeaseConflict("409"), StoreUnavailable("503")])
        await elector.wait_leading()
        assert trio.current_time() == 15


async def exhausted_term() -> None:
    store = MemoryLeaseStore()
    spec = LeaseSpec("", 1, None, None, INT32_MAX, released_by="old")
    store.put(LEASE, spec)
    async with Elector(LEASE, identity="a", store=store) as elector:
        await trio.sleep(30)
        store.put(LEASE, spec)  # written again: still no larger token, and said once only
        await trio.sleep(30)
        assert not elector.is_leader


async def no_headroom_twice() -> None:
    store = NoHeadroom(MemoryLeaseStore())
    async with Elector(LEASE, identity="a", store=store) as elector:
        await trio.sleep(5)
        store.headroom = True
        await elector.wait_leading()
        elector.step_down()  # it stays away for lease_duration
        store.headroom = False
        await trio.sleep(30)
        store.headroom = True
        await elector.wait_leading()


async def refused_create() -> None:
    store = FaultyStore(MemoryLeaseStore())
    store.write_errors.append(PermissionDenied("cannot create leases"))
    async with Elector(LEASE, identity="a", store=store) as elector:
        await elector.wait_leading()


async def refused_update() -> None:
    memory = MemoryLeaseStore()
    memory.put(LEASE, LeaseSpec("", 1, None, None, 3, released_by="z"))
    store = FaultyStore(memory)
    store.write_errors.append(PermissionDenied("cannot update leases"))
    async with Elector(LEASE, identity="a", store=store) as elector:
        await elector.wait_leading()


async def refused_watch() -> None:
    memory = MemoryLeaseStore()
    memory.steal(LEASE, "z")
    store = FlakyWatch(memory)
    async with Elector(LEASE, identity="a", store=store):
        store.break_watch = True
        store.watch_errors.append(PermissionDenied("cannot watch leases"))
        memory.steal(LEASE, "y")  # delivered, then the watch breaks and its re-opening is refused
        await trio.sleep(3)


async def acquire_not_answered() -> None:
    memory = MemoryLeaseStore()
    memory.steal(LEASE, "z")
    store = FaultyStore(memory)
    async with Elector(LEASE, identity="a", store=store):
        store.stall()  # the acquire at 15 is never answered
        await trio.sleep(25.1)


async def acquire_unavailable() -> None:
    store = FaultyStore(MemoryLeaseStore())
    store.write_errors.extend([StoreUnavailable("503"), StoreUnavailable("503")])
    async with Elector(LEASE, identity="a", store=store) as elector:
        await elector.wait_leading()


async def release_conflict() -> None:
    memory = MemoryLeaseStore()
    store = FaultyStore(memory)
    async with Elector(LEASE, identity="a", store=store) as elector:
        await elector.wait_leading()
        await trio.sleep(1)
        store.watch_held = True  # we do not see the steal before we release
        memory.steal(LEASE, "thief")
        await trio.sleep(0.5)
    assert memory.holder(LEASE) == "thief"


async def release_fails() -> None:
    store = FaultyStore(MemoryLeaseStore())
    async with Elector(LEASE, identity="a", store=store) as elector:
        await elector.wait_leading()
        await trio.sleep(1)
        store.errors.append(StoreUnavailable("503"))


async def guarded_code_stuck() -> None:
    store = MemoryLeaseStore()

    async def stuck(elector: Elector) -> None:
        with pytest.raises(LeadershipLost):
            async with elector.leading():
                with trio.CancelScope(shield=True):  # as code that never reaches a checkpoint
                    await trio.sleep(20)

    async with trio.open_nursery() as outer:
        async with Elector(LEASE, identity="a", store=store) as elector:
            await elector.wait_leading()
            outer.start_soon(stuck, elector)
            await trio.sleep(1)
        assert trio.current_time() == 10  # the exit waited until the deadline, no longer
    assert store.holder(LEASE) == "a"  # not released: it expires instead


async def events_not_recordable() -> None:
    store = FaultyStore(MemoryLeaseStore())  # no record_event: not an EventRecorder
    async with Elector(LEASE, identity="a", store=store, record_events=True) as elector:
        await elector.wait_leading()


async def job_call_overlaps() -> None:
    store = MemoryLeaseStore()

    @only_when_leading(lease=LEASE, identity="a", store=store)
    async def nightly() -> str:
        await trio.sleep(5)
        return "ran"

    async with trio.open_nursery() as nursery:
        nursery.start_soon(nightly)
        await trio.sleep(1)
        assert await nightly() is None


async def job_call_overlaps_under_an_elector() -> None:
    @only_when_leading(lease=LEASE)
    async def nightly() -> str:
        await trio.sleep(5)
        return "ran"

    async with Elector(LEASE, identity="a", store=MemoryLeaseStore()) as elector, trio.open_nursery() as nursery:
        await elector.wait_leading()
        nursery.start_soon(nightly)
        await trio.sleep(1)
        assert await nightly() is None


async def job_finds_the_lease_not_takeable() -> None:
    store = MemoryLeaseStore()
    store.steal(LEASE, "b")

    @only_when_leading(lease=LEASE, identity="a", store=store)
    async def nightly() -> str:
        raise AssertionError("must not run")

    assert await nightly() is None
    clear(store)  # free, but without b's release proof: b may still run
    assert await nightly() is None


async def job_cleanup_fails_while_the_campaign_fails() -> None:
    store = FlakyWatch(MemoryLeaseStore())

    @only_when_leading(lease=LEASE, identity="a", store=store)
    async def nightly() -> None:
        try:
            await trio.sleep(100)
        finally:
            raise ValueError("cleanup failed")

    def refuse_the_watch() -> None:
        store.break_watch = True  # at the echo of the renewal at 2
        store.watch_errors.extend(PermissionDenied("cannot watch leases") for _ in range(10))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(at, 1, refuse_the_watch)
        with pytest.raises(ValueError, match="cleanup failed"):
            await nightly()


def refused(verb: str, exc: str) -> Line:
    return ("ERROR", f"{WHERE}: " + REFUSED.format(verb=verb, exc=exc))


SCENARIOS = [
    pytest.param(
        lead_and_exit,
        [
            ("INFO", f"{WHERE}: a started leading (term 0)"),
            ("INFO", f"{WHERE}: stopped leading (term 0): the Elector exited"),
            ("INFO", f"{WHERE}: released by a"),
        ],
        id="lead-and-exit",
    ),
    pytest.param(
        stolen,
        [
            ("WARNING", f"{WHERE}: stopped leading (term 0): 'operator' took the lease"),
            ("INFO", f"{WHERE}: leader is now operator"),
        ],
        id="stolen",
    ),
    pytest.param(
        cleared,
        [
            ("WARNING", f"{WHERE}: stopped leading (term 0): someone else cleared the holder"),
            ("INFO", f"{WHERE}: leader is now nobody"),
        ],
        id="cleared",
    ),
    pytest.param(
        deleted,
        [
            ("WARNING", f"{WHERE}: stopped leading (term 0): the Lease was deleted"),
            ("INFO", f"{WHERE}: leader is now nobody"),
        ],
        id="deleted",
    ),
    pytest.param(
        duplicate_identity,
        [
            (
                "ERROR",
                f"{WHERE} was renewed as 'a' by a write this process did not make: another process is configured "
                "with the same identity. Both would believe they lead, so this one stops leading. Give every "
                "replica a unique identity (the default adds a random suffix).",
            ),
            (
                "WARNING",
                f"{WHERE}: stopped leading (term 0): another process is writing the lease as 'a' (duplicate identity)",
            ),
        ],
        id="duplicate-identity",
    ),
    pytest.param(
        stepped_down,
        [
            ("INFO", f"{WHERE}: stopped leading (term 0): stepped down"),
            ("INFO", f"{WHERE}: released by a"),
        ],
        id="stepped-down",
    ),
    pytest.param(
        renewal_unavailable,
        [("WARNING", f"{WHERE}: renewal failed, will retry: 503")],
        id="renewal-unavailable",
    ),
    pytest.param(renewal_refused, [refused("update", "update forbidden")], id="renewal-refused"),
    pytest.param(
        renewal_fails_for_good,
        [("WARNING", f'{WHERE}: stopped leading (term 0): renewal failed: namespace "default" was deleted')],
        id="renewal-fails-for-good",
    ),
    pytest.param(
        refusals_outlast_a_write_that_cannot_be_abandoned,
        [
            refused("update", "update forbidden"),
            ("WARNING", f"{WHERE}: stopped leading (term 0): renewal failed: update forbidden"),
        ],
        id="refusals-outlast-a-write-that-cannot-be-abandoned",
    ),
    pytest.param(
        renewals_stop_answering,
        [
            (
                "WARNING",
                f"{WHERE}: stopped leading (term 0): no renewal succeeded within renew_deadline (10s) of the last "
                "one sent",
            ),
            ("WARNING", f"{WHERE}: release timed out after 2s; the lease expires by itself"),
        ],
        id="renewals-stop-answering",
    ),
    pytest.param(
        late_answers,
        [
            (
                "WARNING",
                f"{WHERE}: stopped leading (term 0): the renewal's answer arrived after the deadline "
                "(renew_deadline 10s)",
            ),
            ("WARNING", f"{WHERE}: the acquire answer came too late to lead"),
        ],
        id="late-answers",
    ),
    pytest.param(
        recreated,
        [
            ("INFO", f"{WHERE}: leader is now z"),
            ("INFO", f"{WHERE}: leader is now nobody"),  # deleted
            ("INFO", f"{WHERE}: re-created the Lease; leading from renew_deadline after it"),
            ("INFO", f"{WHERE}: a started leading (term 1)"),
            ("INFO", f"{WHERE}: leader is now nobody"),  # our own release at the exit
        ],
        id="recreated",
    ),
    pytest.param(
        takeover_seen_before_the_answer,
        [
            ("INFO", f"{WHERE}: leader is now thief"),
            ("INFO", f"{WHERE}: the Lease changed again right after our acquire; not leading"),
        ],
        id="takeover-seen-before-the-answer",
    ),
    pytest.param(
        lost_race_and_reread_fails,
        [
            ("DEBUG", f"{WHERE}: lost the race to acquire; re-reading"),
            ("WARNING", f"{WHERE}: could not re-read: 503"),
            ("INFO", f"{WHERE}: a started leading (term 1)"),
        ],
        id="lost-race-and-reread-fails",
    ),
    pytest.param(
        exhausted_term,
        [
            (
                "ERROR",
                f"{WHERE} has leaseTransitions 2147483647, the int32 maximum, so no larger fencing token exists and "
                "this candidate will not take it. Delete the Lease to reset the count (after resetting the systems "
                "that check fencing tokens).",
            )
        ],
        id="exhausted-term",
    ),
    pytest.param(
        no_headroom_twice,
        2
        * [
            (
                "WARNING",
                f"{WHERE}: not trying to take the Lease: this process has no headroom to renew another one on time",
            ),
            ("INFO", f"{WHERE}: the store has headroom again; campaigning"),
        ],
        id="no-headroom-twice",
    ),
    pytest.param(refused_create, [refused("create", "cannot create leases")], id="refused-create"),
    pytest.param(refused_update, [refused("update", "cannot update leases")], id="refused-update"),
    pytest.param(refused_watch, [refused("get", "cannot watch leases")], id="refused-watch"),
    pytest.param(
        acquire_not_answered,
        [
            (
                "WARNING",
                f"{WHERE}: taking the Lease failed, retrying: no answer to a write of {WHERE} within renew_deadline "
                "(10s)",
            )
        ],
        id="acquire-not-answered",
    ),
    pytest.param(
        acquire_unavailable,
        [("WARNING", f"{WHERE}: taking the Lease failed, retrying: 503")],
        id="acquire-unavailable",
    ),
    pytest.param(
        release_conflict,
        [
            ("INFO", f"{WHERE}: leader is now thief"),
            ("INFO", f"{WHERE}: not ours any more; nothing to release"),
        ],
        id="release-conflict",
    ),
    pytest.param(release_fails, [("WARNING", f"{WHERE}: release failed: 503")], id="release-fails"),
    pytest.param(
        guarded_code_stuck,
        [
            (
                "ERROR",
                f"{WHERE}: guarded code of term 0 is still running past its deadline (it does not reach a trio "
                "checkpoint); not releasing, so the Lease expires after lease_duration instead",
            )
        ],
        id="guarded-code-stuck",
    ),
    pytest.param(
        events_not_recordable,
        [("WARNING", f"{WHERE}: record_events: FaultyStore cannot record events; ignored")],
        id="events-not-recordable",
    ),
    pytest.param(
        job_call_overlaps,
        [
            ("INFO", f"{WHERE}: a started leading (term 0)"),
            (
                "INFO",
                f"{WHERE}: job_call_overlaps.<locals>.nightly is still running from an earlier call; this call is "
                "skipped",
            ),
            ("INFO", f"{WHERE}: stopped leading (term 0): the call returned"),
        ],
        id="job-call-overlaps",
    ),
    pytest.param(
        job_call_overlaps_under_an_elector,
        [
            (
                "INFO",
                f"{WHERE}: job_call_overlaps_under_an_elector.<locals>.nightly is still running from an earlier "
                "call; this call is skipped",
            )
        ],
        id="job-call-overlaps-under-an-elector",
    ),
    pytest.param(
        job_finds_the_lease_not_takeable,
        [
            ("DEBUG", f"{WHERE}: not taking it now (leader: b); not waiting"),
            ("DEBUG", f"{WHERE}: not taking it now (leader: nobody); not waiting"),
        ],
        id="job-finds-the-lease-not-takeable",
    ),
    pytest.param(
        job_cleanup_fails_while_the_campaign_fails,
        # refused at 2, 4, 6, 8 and 10; at 12 the refusals have lasted renew_deadline: the campaign fails
        5 * [refused("get", "cannot watch leases")]
        + [
            (
                "ERROR",
                f"{WHERE}: the campaign failed too, while the block was raising ValueError('cleanup failed'): "
                "PermissionDenied('cannot watch leases')",
            )
        ],
        id="job-cleanup-fails-while-the-campaign-fails",
    ),
]


@pytest.mark.parametrize(("scenario", "expected"), SCENARIOS)
async def test_each_situation_logs_exactly_its_lines(
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
    scenario: Callable[[], Awaitable[None]],
    expected: list[Line],
) -> None:
    """Each expected line is logged exactly as often as listed, and no other WARNING or ERROR is."""
    await scenario()
    lines = logged(caplog)
    counts = Counter(lines)
    assert {line: counts[line] for line in expected} == Counter(expected)
    # and no alarm beyond those expected
    assert [line for line in lines if line[0] in ("WARNING", "ERROR") and line not in expected] == []


@pytest.mark.parametrize(
    ("unanswered", "message"),
    [
        pytest.param("read", f"no answer to a read of {WHERE} within renew_deadline (10s)", id="read"),
        pytest.param(
            "write",
            # the write's own deadline is the call's: the call's message wins
            f"could not decide whether to run: no answer to a write of {WHERE} within renew_deadline (10s) of the call",
            id="write",
        ),
    ],
)
async def test_a_decorated_call_that_cannot_decide_says_what_went_unanswered(
    autojump_clock: trio.testing.MockClock, unanswered: str, message: str
) -> None:
    store = FaultyStore(MemoryLeaseStore())
    if unanswered == "read":
        store.stall()
    else:
        store.answer_delay = 20  # the create takes effect, but its answer comes too late

    @only_when_leading(lease=LEASE, identity="a", store=store)
    async def nightly() -> None:
        raise AssertionError("must not run")

    with pytest.raises(StoreUnavailable) as raised:
        await nightly()
    assert str(raised.value) == message
    assert trio.current_time() == 10


async def test_a_skipped_call_of_a_job_without_a_qualname_names_it_by_its_repr(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def nightly(seconds: float) -> str:
        await trio.sleep(seconds)
        return "ran"

    work = functools.partial(nightly, 5)
    job = only_when_leading(lease=LEASE, identity="a", store=MemoryLeaseStore())(work)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(job)
        await trio.sleep(1)
        assert await job() is None
    assert ("INFO", f"{WHERE}: {work!r} is still running from an earlier call; this call is skipped") in logged(caplog)
