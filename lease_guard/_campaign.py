"""The campaign: the state machine that acquires, renews and gives up one Lease.

Safety model
------------

Candidates agree on a leader through one Lease object. lease_guard guarantees, for any
two candidates whose clocks *run at rates* differing by less than the ratio
``lease_duration / renew_deadline``, that their guarded code never runs at the same time
(as far as the code reaches trio checkpoints; see below). It does not depend on the
clocks *agreeing*: no timestamp written by another process is ever compared with the
local wall clock.

Four rules make this so:

1. Every write is optimistic: it names the resourceVersion it was computed from, and a
   conflict is a lost race, never success. Exactly one of N concurrent writers wins.
2. A follower judges expiry on its own monotonic clock (``trio.current_time()``): the
   holder's lease expires ``leaseDurationSeconds`` after the follower *received* the
   holder's last change. That moment is after the holder *sent* it.
3. The leader's guarded scope has a hard deadline: the moment its last successful
   write was *sent*, plus ``renew_deadline``. trio enforces it as a cancel-scope deadline,
   so it holds even when the renewing task is stuck in a request that never returns, and
   an answer that arrives late cannot move it (the deadline counts from the send).
   client-go counts its renew deadline from the start of a renew cycle, after the previous
   answer arrived, which a delayed answer stretches.
4. Watches, not polls: followers see every change within one watch delivery, so a
   released Lease is taken over at once and an expired one when its timer fires.

So the old leader's scope ends at ``sent + renew_deadline``, and a follower can write
only after ``received >= sent`` plus ``lease_duration``: ``lease_duration - renew_deadline``
of margin absorbs clock-rate drift and the scheduling delay of cancellation.

What is *not* guaranteed: cancellation arrives at checkpoints, so guarded code that
blocks (CPU loops, synchronous I/O, threads) runs on past the deadline until it reaches
one. Pass the fencing token (:attr:`Leadership.term`, the Lease's leaseTransitions for
the tenure, strictly increasing across tenures) to downstream systems that can reject
stale writers, when the work must be safe even then.
"""

from __future__ import annotations

import collections
import enum
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from ._errors import (
    LeadershipLost,
    LeaseConflict,
    LeaseNotFound,
    LeaseStoreError,
    PermissionDenied,
    StoreUnavailable,
)
from ._groups import reraise, single_exception
from ._options import ElectionOptions
from ._record import INT32_MAX, LeaseRecord, LeaseSpec, micro_time
from .stores._protocol import LeaseStore

logger = logging.getLogger("lease_guard")

#: How many of our own recent writes we remember, to recognise their watch echoes.
_REMEMBERED_WRITES = 32


class Clock:
    """The candidate's clock: trio's, unless a test makes it run at another rate.

    Every time the campaign keeps (observations, deadlines, pauses) is on this clock;
    ``at`` turns one into a trio deadline. The reliability tests give each candidate a
    clock running fast or slow to check the clock-rate drift bound.
    """

    def __init__(self, rate: float = 1.0) -> None:
        self.rate = rate

    def now(self) -> float:
        return trio.current_time() * self.rate

    def at(self, local: float) -> float:
        """The trio time at which ``now()`` reaches ``local`` (never a rounding error early,
        or a timer would fire while ``now()`` still reads less and a loop would spin)."""
        if self.rate == 1.0 or not math.isfinite(local):
            return local
        moment = local / self.rate
        while moment * self.rate < local:
            moment = math.nextafter(moment, math.inf)
        return moment


class Signal:
    """An edge-triggered broadcast: ``wait()`` returns at the next ``fire()``."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


@dataclass
class Memory:
    """What one candidate knows of a Lease, kept across campaigns of the same identity.

    A decorated function runs a short campaign per call; this memory lets the next call
    tell its own earlier writes from others', and judge expiry over the silence it
    observed across calls.
    """

    run: object = None
    observed: LeaseRecord | None = None
    observed_version: str | None = "unread"
    observed_at: float = 0.0
    sent_specs: collections.deque[LeaseSpec] = field(
        default_factory=lambda: collections.deque(maxlen=_REMEMBERED_WRITES)
    )
    written_versions: collections.deque[str] = field(
        default_factory=lambda: collections.deque(maxlen=_REMEMBERED_WRITES)
    )

    def check_run(self) -> None:
        """Forget monotonic times taken under another ``trio.run``: each run's clock has its own origin."""
        run = trio.lowlevel.current_root_task()
        if run is not self.run:
            self.run = run
            self.observed_version = "unread"

    def is_ours(self, record: LeaseRecord | None) -> bool:
        return record is not None and (
            record.resource_version in self.written_versions or record.spec in self.sent_specs
        )


class EventKind(enum.Enum):
    """What changed, in a :class:`LeadershipEvent`."""

    STARTED_LEADING = "started_leading"
    STOPPED_LEADING = "stopped_leading"
    NEW_LEADER = "new_leader"


@dataclass(frozen=True)
class LeadershipEvent:
    """A change of leadership, as delivered by :meth:`Elector.events`.

    Attributes:
        kind: STARTED_LEADING (we lead; ``term`` is set), STOPPED_LEADING (our tenure
            ended; ``reason`` says why), or NEW_LEADER (someone else, or nobody when
            ``leader`` is None, now holds the Lease).
        leader: the holder identity after the change.
        term: the fencing token of the tenure that started or stopped.
        reason: why a tenure stopped.
    """

    kind: EventKind
    leader: str | None
    term: int | None = None
    reason: str | None = None


class Tenure:
    """One continuous period of leadership and the guarded scopes that live inside it."""

    def __init__(self, campaign: Campaign, term: int, acquire_time: str, sent_at: float) -> None:
        self.campaign = campaign
        self.term = term
        self.acquire_time = acquire_time
        self.sent_at = sent_at
        self.deadline = sent_at + campaign.options.renew_deadline
        self.lost_reason: str | None = None
        self.lost_cause: BaseException | None = None
        self._scopes: set[trio.CancelScope] = set()
        self._no_scopes = trio.Event()
        self._no_scopes.set()

    @property
    def lost(self) -> bool:
        return self.lost_reason is not None

    @property
    def active(self) -> bool:
        """Not ended, and its deadline not passed (the campaign may not have noticed yet)."""
        return not self.lost and self.campaign.clock.now() < self.deadline

    def extend(self, sent_at: float) -> bool:
        """Move the deadline to ``sent_at + renew_deadline``, unless the tenure already ended."""
        if self.lost or self.campaign.clock.now() >= self.deadline:
            return False
        self.sent_at = max(self.sent_at, sent_at)
        self.deadline = self.sent_at + self.campaign.options.renew_deadline
        for scope in self._scopes:
            scope.deadline = self.campaign.clock.at(self.deadline)
        return True

    def lose(self, reason: str, cause: BaseException | None = None) -> None:
        """End the tenure: cancel every guarded scope now."""
        if self.lost:
            return
        self.lost_reason = reason
        self.lost_cause = cause
        for scope in self._scopes:
            scope.cancel()
        self.campaign.tenure_ended(self)

    def attach(self, scope: trio.CancelScope) -> None:
        scope.deadline = self.campaign.clock.at(self.deadline)
        if self.lost:
            scope.cancel()
        self._scopes.add(scope)
        self._no_scopes = trio.Event()

    def detach(self, scope: trio.CancelScope) -> None:
        self._scopes.discard(scope)
        if not self._scopes:
            self._no_scopes.set()

    async def wait_guards_exited(self) -> None:
        await self._no_scopes.wait()

    def error(self) -> LeadershipLost:
        """The LeadershipLost to raise from a guarded scope that this tenure cancelled."""
        options = self.campaign.options
        reason = self.lost_reason or (
            f"no renewal succeeded within renew_deadline ({options.renew_deadline:g}s) of the last one sent"
        )
        error = LeadershipLost(
            lease=options.lease,
            namespace=self.campaign.namespace,
            identity=options.identity,
            term=self.term,
            reason=reason,
        )
        error.__cause__ = self.lost_cause
        return error


class Campaign:
    """Runs the election for one candidate on one Lease: observe, acquire, renew, release.

    Two tasks share the state: the observer follows the Lease through the store's watch;
    the actor writes. Data flows one way: store -> record -> campaign state -> tenure ->
    guarded scopes.
    """

    def __init__(
        self,
        store: LeaseStore,
        options: ElectionOptions,
        namespace: str,
        *,
        memory: Memory | None = None,
        patient: bool = True,
        on_event: Callable[[LeadershipEvent], None] = lambda event: None,
        clock: Clock | None = None,
    ) -> None:
        self.clock = clock or Clock()
        self.store = store
        self.options = options
        self.namespace = namespace
        self.memory = memory if memory is not None else Memory()
        self.patient = patient
        self.tenure: Tenure | None = None
        self.decided = trio.Event()
        self.declined = False
        self._on_event = on_event
        self._changed = Signal()
        self._step_down = trio.Event()
        self._pause_until = -math.inf
        self._last_leader: str | None = None
        self._exhausted_logged = False
        self._refused_since: dict[str, float] = {}
        self.renewal_observers: list[Callable[[float], None]] = []
        """Called with each successful renewal's round-trip time (metrics)."""

    # -- observation ----------------------------------------------------------------------

    @property
    def leader(self) -> str | None:
        record = self.memory.observed
        return record.holder if record is not None else None

    def see(self, record: LeaseRecord | None) -> None:
        """Take in a state of the Lease, from the watch or from the answer to a request."""
        memory = self.memory
        version = record.resource_version if record is not None else None
        if version == memory.observed_version:
            return
        memory.observed = record
        memory.observed_version = version
        memory.observed_at = self.clock.now()
        tenure = self.tenure
        if tenure is not None and not tenure.lost:
            if record is None:
                tenure.lose("the Lease was deleted")
            elif record.holder != self.options.identity:
                holder = record.holder
                tenure.lose(f"{holder!r} took the lease" if holder else "someone else cleared the holder")
            elif not memory.is_ours(record):
                logger.error(
                    "lease %s/%s was renewed as %r by a write this process did not make: another "
                    "process is configured with the same identity. Both would believe they lead, so "
                    "this one stops leading. Give every replica a unique identity (the default adds a "
                    "random suffix).",
                    self.namespace,
                    self.options.lease,
                    self.options.identity,
                )
                tenure.lose(f"another process is writing the lease as {self.options.identity!r} (duplicate identity)")
        holder = self.leader
        if holder != self._last_leader:
            self._last_leader = holder
            if holder != self.options.identity:
                logger.info("lease %s/%s: leader is now %s", self.namespace, self.options.lease, holder or "nobody")
                self._on_event(LeadershipEvent(EventKind.NEW_LEADER, holder))
        self._changed.fire()

    async def observe(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the Lease through the store's watch; started once the first state is in.

        The first read must succeed within renew_deadline: transient failures (429, 5xx,
        unreachable) are retried until then, honouring Retry-After, and a read that gets no
        answer at all is given up then; either way StoreUnavailable is raised, so a campaign
        started against a server that stays unreachable says so instead of hanging. Later
        failures re-open the watch; refusals (401/403) as :meth:`_refusal_is_transient` says.
        """
        started = False
        give_up_at = self.clock.now() + self.options.renew_deadline
        while True:
            try:
                with trio.CancelScope(deadline=math.inf if started else self.clock.at(give_up_at)) as first:
                    async for record in self.store.watch(self.namespace, self.options.lease):
                        self.see(record)
                        self._refused_since.pop("read", None)
                        if not started:
                            started = True
                            first.deadline = math.inf
                            task_status.started()
                if first.cancelled_caught:
                    raise StoreUnavailable(
                        f"no answer to a read of lease {self.namespace}/{self.options.lease} "
                        f"within renew_deadline ({self.options.renew_deadline:g}s)"
                    )
            except StoreUnavailable as exc:
                now = self.clock.now()
                if not started and now >= give_up_at:
                    raise
                logger.warning("lease %s/%s: cannot watch yet, retrying: %s", self.namespace, self.options.lease, exc)
                pause = exc.retry_after or self.options.retry_period
                await trio.sleep_until(self.clock.at(min(now + pause, give_up_at) if not started else now + pause))
            except PermissionDenied as exc:
                # A candidate that may not read its Lease is misconfigured: it says so at entry.
                if not started or not self._refusal_is_transient("read", exc):
                    raise
                await trio.sleep_until(self.clock.at(self.clock.now() + self.options.retry_period))

    def _refusal_is_transient(self, verb: str, exc: PermissionDenied) -> bool:
        """Whether to retry a refusal (401/403) of `verb`, logging it as an error.

        Called once the first read has succeeded (a refused first read is believed at
        once). A refusal is retried until refusals of that verb have lasted renew_deadline
        with no success in between: a restarted kube-apiserver refuses requests until its
        authorizer has synced (seconds), while a missing RBAC rule refuses for good and ends
        the campaign.
        """
        now = self.clock.now()
        since = self._refused_since.setdefault(verb, now)
        if now - since >= self.options.renew_deadline:
            return False
        logger.error(
            "lease %s/%s: the API server refused a request (%s); retrying for up to renew_deadline "
            "(a restarted API server does this until its authorizer has synced; if it persists, check RBAC): %s",
            self.namespace,
            self.options.lease,
            verb,
            exc,
        )
        return True

    # -- decisions ------------------------------------------------------------------------

    def _expiry(self) -> float:
        """The trio time at which the observed holder's lease expires, judged by silence."""
        record = self.memory.observed
        assert record is not None
        duration = record.spec.lease_duration_seconds
        # Absent or not positive (the API server refuses those; other stores may not): ours.
        seconds = float(duration) if duration is not None and duration > 0 else self.options.lease_duration
        return self.memory.observed_at + seconds

    def _chance_at(self) -> float:
        """When we may next try to acquire: now (or earlier), an expiry, or never until a change."""
        record = self.memory.observed
        if record is not None and record.transitions >= INT32_MAX:
            if not self._exhausted_logged:
                self._exhausted_logged = True
                logger.error(
                    "lease %s/%s has leaseTransitions %d, the int32 maximum, so no larger fencing token "
                    "exists and this candidate will not take it. Delete the Lease to reset the count "
                    "(after resetting the systems that check fencing tokens).",
                    self.namespace,
                    self.options.lease,
                    record.transitions,
                )
            return math.inf
        ours = record is not None and record.holder == self.options.identity and self.memory.is_ours(record)
        chance = -math.inf if record is None or record.holder is None or ours else self._expiry()
        return max(chance, self._pause_until)

    def _may_acquire(self) -> bool:
        return self.clock.now() >= self._chance_at()

    async def _wait_for_chance(self) -> None:
        """Sleep until the Lease is free, expired or ours: timers and watch events, no polling."""
        while not self._may_acquire():
            with trio.move_on_at(self.clock.at(self._chance_at())):
                await self._changed.wait()

    # -- writes ---------------------------------------------------------------------------

    def _spec(self, *, term: int, acquire_time: str) -> LeaseSpec:
        return LeaseSpec(
            holder=self.options.identity,
            lease_duration_seconds=self.options.lease_duration_seconds,
            acquire_time=acquire_time,
            renew_time=micro_time(),
            lease_transitions=term,
        )

    @staticmethod
    def _verb(current: LeaseRecord | None) -> str:
        return "create" if current is None else "update"

    async def _write(self, current: LeaseRecord | None, spec: LeaseSpec) -> LeaseRecord:
        self.memory.sent_specs.append(spec)
        if current is None:
            record = await self.store.create(self.namespace, self.options.lease, spec)
        else:
            record = await self.store.update(current, spec)
        self.memory.written_versions.append(record.resource_version)
        self._refused_since.pop(self._verb(current), None)
        return record

    async def _reread(self) -> bool:
        """Read the Lease after a lost race; False if the store is unreachable (the watch catches up)."""
        try:
            self.see(await self.store.get(self.namespace, self.options.lease))
        except StoreUnavailable as exc:
            logger.warning("lease %s/%s: could not re-read: %s", self.namespace, self.options.lease, exc)
            return False
        return True

    async def _try_acquire(self) -> Tenure | None:
        current = self.memory.observed
        term = current.transitions + 1 if current is not None else 0
        acquire_time = micro_time()
        spec = self._spec(term=term, acquire_time=acquire_time)
        sent_at = self.clock.now()
        with trio.move_on_at(self.clock.at(sent_at + self.options.renew_deadline)) as timeout:
            try:
                record = await self._write(current, spec)
            except (LeaseConflict, LeaseNotFound):
                logger.debug("lease %s/%s: lost the race to acquire; re-reading", self.namespace, self.options.lease)
                await self._reread()
                return None
            except StoreUnavailable as exc:
                if not self.patient:
                    raise
                logger.warning("lease %s/%s: could not acquire: %s", self.namespace, self.options.lease, exc)
                self._pause_until = self.clock.now() + min(
                    self.options.retry_period, exc.retry_after or self.options.retry_period
                )
                return None
            except PermissionDenied as exc:
                if not self.patient or not self._refusal_is_transient(self._verb(current), exc):
                    raise
                self._pause_until = self.clock.now() + self.options.retry_period
                return None
        if timeout.cancelled_caught:
            if not self.patient:
                raise StoreUnavailable(
                    f"no answer to a write of lease {self.namespace}/{self.options.lease} "
                    f"within renew_deadline ({self.options.renew_deadline:g}s)"
                )
            logger.warning(
                "lease %s/%s: no answer to an acquire within renew_deadline (%gs)",
                self.namespace,
                self.options.lease,
                self.options.renew_deadline,
            )
            return None
        self.see(record)
        tenure = Tenure(self, term, acquire_time, sent_at)
        # The answer may arrive after the deadline counted from the send: a tenure that
        # never had time to run. The record is ours, so the next attempt retries at once.
        if not tenure.extend(sent_at):
            logger.warning("lease %s/%s: the acquire answer came too late to lead", self.namespace, self.options.lease)
            return None
        return tenure

    async def _renew(self, tenure: Tenure) -> float:
        """One renewal attempt; returns when the next attempt is due."""
        current = self.memory.observed
        if current is None:
            tenure.lose("the Lease was deleted")
            return self.clock.now()
        spec = self._spec(term=tenure.term, acquire_time=tenure.acquire_time)
        sent_at = self.clock.now()
        retry_at = sent_at + self.options.retry_period
        try:
            record = await self._write(current, spec)
        except LeaseConflict:
            # Someone wrote since our last read: perhaps our own earlier write whose answer we
            # never saw, perhaps a new holder. The fresh state decides.
            return self.clock.now() if await self._reread() else retry_at
        except LeaseNotFound:
            self.see(None)
            return retry_at
        except StoreUnavailable as exc:
            logger.warning("lease %s/%s: renewal failed, will retry: %s", self.namespace, self.options.lease, exc)
            return sent_at + min(self.options.retry_period, exc.retry_after or self.options.retry_period)
        except PermissionDenied as exc:
            # Retried like an outage; the deadline still ends the tenure if it persists.
            if not self._refusal_is_transient("update", exc):
                tenure.lose(f"renewal failed: {exc}", exc)
            return retry_at
        except LeaseStoreError as exc:
            tenure.lose(f"renewal failed: {exc}", exc)
            return retry_at
        self.see(record)
        for observe in self.renewal_observers:
            observe(self.clock.now() - sent_at)
        if not tenure.extend(sent_at):
            tenure.lose(
                f"the renewal's answer arrived after the deadline (renew_deadline {self.options.renew_deadline:g}s)"
            )
        return retry_at

    async def release(self) -> None:
        """Clear the holder so a follower takes over at once; bounded in time, never raises.

        Runs shielded from cancellation for at most retry_period: if the API server
        cannot be reached by then, the Lease simply expires after lease_duration. A
        conflict is re-read once: a renewal cancelled in flight (the campaign is being
        shut down) may have taken effect after the version we hold was read, and that
        newer version is still ours to release.
        """
        current = self.memory.observed
        if current is None or not self._holding(current):
            return
        with trio.move_on_after(self.options.retry_period) as scope:
            scope.shield = True
            try:
                try:
                    record = await self._write(current, self._release_spec(current))
                except LeaseConflict:
                    current = await self.store.get(self.namespace, self.options.lease)
                    self.see(current)
                    if current is None or not self._holding(current):
                        logger.info("lease %s/%s: not ours any more; nothing to release", *self._where())
                        return
                    record = await self._write(current, self._release_spec(current))
                self.see(record)
            except LeaseStoreError as exc:
                logger.warning("lease %s/%s: release failed: %s", *self._where(), exc)
                return
            logger.info("lease %s/%s: released by %s", *self._where(), self.options.identity)
            return
        logger.warning(
            "lease %s/%s: release timed out after %gs; the lease expires by itself",
            *self._where(),
            self.options.retry_period,
        )

    def _where(self) -> tuple[str, str]:
        return self.namespace, self.options.lease

    def _holding(self, record: LeaseRecord) -> bool:
        """The record names us, and is one we wrote (not a duplicate of our identity)."""
        return record.holder == self.options.identity and self.memory.is_ours(record)

    @staticmethod
    def _release_spec(current: LeaseRecord) -> LeaseSpec:
        now = micro_time()
        return LeaseSpec(
            holder="",
            lease_duration_seconds=1,
            acquire_time=now,
            renew_time=now,
            lease_transitions=current.spec.lease_transitions,
        )

    # -- the actor ------------------------------------------------------------------------

    def tenure_ended(self, tenure: Tenure) -> None:
        if self.tenure is tenure:
            self.tenure = None
        logger.warning(
            "lease %s/%s: stopped leading (term %d): %s",
            self.namespace,
            self.options.lease,
            tenure.term,
            tenure.lost_reason,
        )
        self._on_event(LeadershipEvent(EventKind.STOPPED_LEADING, self.leader, tenure.term, tenure.lost_reason))
        self._changed.fire()

    async def _lead(self, tenure: Tenure) -> None:
        self.tenure = tenure
        logger.info(
            "lease %s/%s: %s started leading (term %d)",
            self.namespace,
            self.options.lease,
            self.options.identity,
            tenure.term,
        )
        self._on_event(LeadershipEvent(EventKind.STARTED_LEADING, self.options.identity, tenure.term))
        self._changed.fire()
        try:
            next_attempt = tenure.sent_at + self.options.retry_period
            while not tenure.lost:
                with trio.move_on_at(self.clock.at(min(next_attempt, tenure.deadline))):
                    while not (tenure.lost or self._step_down.is_set()):
                        await self._changed.wait()
                if self._step_down.is_set() and not tenure.lost:
                    self._step_down = trio.Event()
                    tenure.lose("stepped down")
                    # Release only once no guarded code runs any more, or a follower could start
                    # while ours still unwinds. Past the deadline, let the lease expire instead.
                    with trio.move_on_at(self.clock.at(tenure.deadline)) as waited:
                        await tenure.wait_guards_exited()
                    if not waited.cancelled_caught:
                        await self.release()
                    self._pause_until = self.clock.now() + self.options.lease_duration
                    return
                if tenure.lost:
                    return
                if self.clock.now() >= tenure.deadline:
                    tenure.lose(
                        f"no renewal succeeded within renew_deadline ({self.options.renew_deadline:g}s) "
                        "of the last one sent"
                    )
                    return
                with trio.move_on_at(self.clock.at(tenure.deadline)):
                    next_attempt = await self._renew(tenure)
        finally:
            if self.tenure is tenure:
                # Cancelled from outside (the campaign is shutting down): the guards are gone.
                self.tenure = None

    async def act(self) -> None:
        """Campaign until cancelled (patient), or decide once and lead or decline (impatient)."""
        while True:
            if self.patient:
                await self._wait_for_chance()
            elif not self._may_acquire():
                logger.debug("lease %s/%s: held by %s; not waiting", self.namespace, self.options.lease, self.leader)
                self.declined = True
                self.decided.set()
                await trio.sleep_forever()
            tenure = await self._try_acquire()
            if tenure is not None:
                self.decided.set()
                await self._lead(tenure)

    def step_down(self) -> None:
        if self.tenure is None or self.tenure.lost:
            return
        self._step_down.set()
        self._changed.fire()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Observe and act until cancelled; ``started`` once the Lease's first state is read."""
        self.memory.check_run()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.observe)
                task_status.started()
                await self.act()
        except BaseExceptionGroup as group:
            failure = single_exception(group)
            if isinstance(failure, LeaseStoreError):
                # A permanent store error (permission, namespace, term) ends the campaign; the
                # guarded code learns it as LeadershipLost caused by that error.
                if self.tenure is not None:
                    self.tenure.lose(f"the campaign failed: {failure}", failure)
                reraise(failure)
            raise
