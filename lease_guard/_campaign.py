"""The campaign: the loops that follow one Lease, take it, keep it, and give it up.

Safety model
------------

Candidates agree on a leader through one Lease object. lease_guard guarantees, for any
two candidates whose clocks *run at rates* differing by less than the ratio
``lease_duration / renew_deadline``, that their guarded code never runs at the same time
(as far as the code reaches trio checkpoints; see below). It does not depend on the
clocks *agreeing*: no timestamp written by another process is ever compared with the
local clock. Five rules make this so, each decided in one place:

1. **Optimistic writes** (:meth:`Campaign.acquire`, :meth:`Campaign.renew`,
   :meth:`Campaign.release`): every write names the resourceVersion it was computed
   from; a conflict is a lost race, never success.
2. **The hard deadline** (``_tenure.Tenure``): the leader's guarded scopes end at the
   moment its last successful write was *sent*, plus ``renew_deadline``. trio enforces it
   as a cancel-scope deadline, so it holds when the renewing request never returns, and a
   late answer cannot move it.
3. **Expiry by observed silence** (``_lease_view.LeaseView.takeable_at``): a follower may
   write only ``leaseDurationSeconds`` after it *received* the holder's last change, which
   is after the holder sent it. A holder cleared or deleted by another client (kubectl,
   client-go, ``lease-guard release --force``) is waited out the same way.
4. **Release with proof** (:meth:`Campaign.release`): a holder releases only after all of
   its guarded scopes have exited, and marks the release as its own (``released_by``);
   only such a release is taken over at once.
5. **Watches, not polls** (:meth:`Campaign.follow`): followers see every change within one
   watch delivery, so a released Lease is taken at once and an expired one when its timer
   fires.

So the old leader's scope ends at ``sent + renew_deadline``, and a follower can write
only after ``received >= sent`` plus ``lease_duration``: ``lease_duration - renew_deadline``
of margin absorbs clock-rate drift and the scheduling delay of cancellation.

What is *not* guaranteed: cancellation arrives at checkpoints, so guarded code that
blocks (CPU loops, synchronous I/O, threads) runs on past the deadline until it reaches
one. Pass the fencing token (the tenure's term: the Lease's leaseTransitions, strictly
increasing across tenures) to downstream systems that can reject stale writers, when the
work must be safe even then.
"""

from __future__ import annotations

import contextlib
import logging
import math
import weakref
from collections.abc import Callable

import trio

from ._clock import Clock
from ._errors import (
    LeaseConflict,
    LeaseNotFound,
    LeaseStoreError,
    PermissionDenied,
    StoreUnavailable,
)
from ._events import EventHub, EventKind, LeadershipEvent
from ._lease_view import LeaseView
from ._options import ElectionOptions
from ._record import LeaseRecord, LeaseSpec, micro_time
from ._retry import Backoff, OutageLog
from ._tenure import Tenure
from .stores._protocol import AcquisitionGate, LeaseStore

logger = logging.getLogger("lease_guard")


class SeenLeases:
    """Which Leases candidates of this process have seen exist, per store.

    A candidate whose first look finds no Lease leads at once, unless another candidate of
    this process (an earlier ``leadership()`` block, say, re-entered after a loss) has seen
    that Lease exist: then its absence is a deletion, whose holder may still run.
    """

    def __init__(self) -> None:
        self._seen: dict[int, set[tuple[str, str]]] = {}

    def saw(self, store: LeaseStore, namespace: str, name: str) -> None:
        key = id(store)
        if key not in self._seen:
            self._seen[key] = set()
            # Forget the store once it is collected. A store that cannot be weakly referenced
            # (a class with __slots__) is remembered for good: at worst a later store that gets
            # its id() waits lease_duration for a Lease it finds absent.
            with contextlib.suppress(TypeError):
                weakref.finalize(store, self._seen.pop, key, None)
        self._seen[key].add((namespace, name))

    def seen(self, store: LeaseStore, namespace: str, name: str) -> bool:
        return (namespace, name) in self._seen.get(id(store), ())


seen_leases = SeenLeases()


class Signal:
    """An edge-triggered broadcast: ``wait()`` returns at the next ``fire()``."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class Campaign:
    """One candidate's election on one Lease: the state it shares between its loops.

    Data flows one way: store -> record -> :class:`LeaseView` -> :class:`Tenure` -> guarded
    scopes. :meth:`follow` feeds the view from the store's watch; :meth:`run` (an Elector's
    patient loop) or ``_job.call_if_leading`` (a decorated call's single decision) write.
    """

    def __init__(
        self,
        store: LeaseStore,
        options: ElectionOptions,
        namespace: str,
        *,
        view: LeaseView,
        clock: Clock,
        hub: EventHub | None = None,
    ) -> None:
        self.store = store
        self.options = options
        self.namespace = namespace
        self.view = view
        self.clock = clock
        self.hub = hub or EventHub()
        self.tenure: Tenure | None = None
        """The current tenure, or the last one until a new one starts."""
        self.changed = Signal()
        """Fired on every observed change and every change of tenure."""
        self.pause_until = -math.inf
        self.renewal_observers: list[Callable[[float], None]] = []
        """Called with each successful renewal's round-trip time (metrics)."""
        self._gate = store if isinstance(store, AcquisitionGate) else None
        self._gate_declined = False
        self._refused_since: dict[str, float] = {}
        self._exhausted_logged = False
        self._last_leader: str | None = None
        self._stepped_down: Tenure | None = None
        self._backoff = Backoff(initial=options.retry_period / 4, cap=options.retry_period * 4)

    @property
    def where(self) -> str:
        return f"lease {self.namespace}/{self.options.lease}"

    @property
    def leading(self) -> Tenure | None:
        """The current tenure, if it is not over."""
        tenure = self.tenure
        return tenure if tenure is not None and not tenure.over else None

    # -- following the Lease ----------------------------------------------------------------

    def see(self, record: LeaseRecord | None) -> None:
        """Take in a state of the Lease, from the watch or from the answer to a request."""
        if not self.view.observe(record, self.clock.now()):
            return
        if record is not None:
            seen_leases.saw(self.store, self.namespace, self.options.lease)
        tenure = self.tenure
        if tenure is not None and tenure.end_reason is None:
            reason = self.view.tenure_end(record)
            if reason is not None:
                if record is not None and record.holder == self.options.identity:
                    logger.error(
                        "%s was renewed as %r by a write this process did not make: another process is "
                        "configured with the same identity. Both would believe they lead, so this one stops "
                        "leading. Give every replica a unique identity (the default adds a random suffix).",
                        self.where,
                        self.options.identity,
                    )
                self.end(tenure, reason)
        leader = self.view.leader
        if leader != self._last_leader:
            self._last_leader = leader
            if leader != self.options.identity:
                logger.info("%s: leader is now %s", self.where, leader or "nobody")
                self.hub.publish(LeadershipEvent(EventKind.NEW_LEADER, leader))
        self.changed.fire()

    async def follow(
        self, *, give_up_after: float | None = None, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Follow the Lease through the store's watch; ``started`` once its first state is in.

        Transient failures of the first read (429, 5xx, unreachable, or no answer within
        renew_deadline) are retried with jittered backoff and logged, for as long as it
        takes, or until ``give_up_after`` seconds, when StoreUnavailable is raised. A
        refused first read (401/403) or a missing namespace raises at once: that candidate
        is misconfigured. Later refusals follow :meth:`_refusal_is_transient`.
        """
        options = self.options
        outage = OutageLog(f"{self.where}: reading the Lease")
        backoff = Backoff(initial=options.retry_period / 4, cap=options.retry_period * 4)
        give_up_at = math.inf if give_up_after is None else self.clock.now() + give_up_after
        started = False
        while True:
            attempt_until = math.inf if started else min(give_up_at, self.clock.now() + options.renew_deadline)
            try:
                with trio.move_on_at(self.clock.at(attempt_until)) as attempt:
                    async for record in self.store.watch(self.namespace, options.lease):
                        self.see(record)
                        self._refused_since.pop("get", None)
                        if not started:
                            started = True
                            give_up_at = math.inf  # it bounds the first read only
                            attempt.deadline = math.inf
                            outage.succeeded(self.clock.now())
                            task_status.started()
                if not attempt.cancelled_caught:
                    continue  # a store's watch ends only on failure; open it again
                raise StoreUnavailable(
                    f"no answer to a read of {self.where} within renew_deadline ({options.renew_deadline:g}s)"
                )
            except StoreUnavailable as exc:
                now = self.clock.now()
                if now >= give_up_at:
                    raise
                outage.failed(now, exc)
                await trio.sleep_until(self.clock.at(min(now + backoff.next(exc.retry_after), give_up_at)))
            except PermissionDenied as exc:
                if not started or not self._refusal_is_transient("get", exc):
                    raise
                await trio.sleep_until(self.clock.at(self.clock.now() + options.retry_period))

    def _refusal_is_transient(self, verb: str, exc: PermissionDenied) -> bool:
        """Whether to retry a refusal (401/403) of ``verb``, logging it as an error.

        A refusal is retried until refusals of that verb have lasted renew_deadline with no
        success in between: a restarted kube-apiserver refuses requests until its authorizer
        has synced (seconds), while a missing RBAC rule refuses for good and ends the campaign.
        """
        now = self.clock.now()
        since = self._refused_since.setdefault(verb, now)
        if now - since >= self.options.renew_deadline:
            return False
        logger.error(
            "%s: the API server refused a request (%s); retrying for up to renew_deadline (a restarted API "
            "server does this until its authorizer has synced; if it persists, check RBAC): %s",
            self.where,
            verb,
            exc,
        )
        return True

    # -- deciding to take it ----------------------------------------------------------------

    def chance_at(self) -> float:
        """When we may next try to acquire: the view's rule, and any pause of ours."""
        takeable = self.view.takeable_at()
        if takeable == math.inf and not self._exhausted_logged and self.view.record is not None:
            self._exhausted_logged = True
            logger.error(
                "%s has leaseTransitions %d, the int32 maximum, so no larger fencing token exists and this "
                "candidate will not take it. Delete the Lease to reset the count (after resetting the systems "
                "that check fencing tokens).",
                self.where,
                self.view.record.transitions,
            )
        return max(takeable, self.pause_until)

    def admitted(self) -> bool:
        """The store has headroom for another tenure (always, for stores that cannot tell)."""
        if self._gate is None or self._gate.admits_acquisition():
            if self._gate_declined:
                self._gate_declined = False
                logger.info("%s: the store has headroom again; campaigning", self.where)
            return True
        if not self._gate_declined:
            self._gate_declined = True
            logger.warning(
                "%s: not trying to take the Lease: this process has no headroom to renew another one on time",
                self.where,
            )
        return False

    async def wait_for_chance(self) -> None:
        """Sleep until we may try to acquire: on timers and watch events, no polling."""
        while True:
            chance = self.chance_at()
            if self.clock.now() >= chance:
                if self.admitted():
                    return
                self.pause_until = self.clock.now() + self.options.retry_period
                continue
            with trio.move_on_at(self.clock.at(chance)):
                await self.changed.wait()

    # -- writes -----------------------------------------------------------------------------

    def _spec(self, *, term: int, acquire_time: str) -> LeaseSpec:
        return LeaseSpec(
            holder=self.options.identity,
            lease_duration_seconds=self.options.lease_duration_seconds,
            acquire_time=acquire_time,
            renew_time=micro_time(),
            lease_transitions=term,
        )

    async def _write(self, current: LeaseRecord | None, spec: LeaseSpec) -> LeaseRecord:
        self.view.sending(spec)
        if current is None:
            record = await self.store.create(self.namespace, self.options.lease, spec)
        else:
            record = await self.store.update(current, spec)
        self.view.written(record)
        self._refused_since.pop("create" if current is None else "update", None)
        return record

    async def _reread(self) -> None:
        """Read the Lease after a lost race; on an outage the watch catches up instead."""
        try:
            self.see(await self.store.get(self.namespace, self.options.lease))
        except StoreUnavailable as exc:
            logger.warning("%s: could not re-read: %s", self.where, exc)

    async def acquire(self) -> Tenure | None:
        """One attempt to take the Lease; the new tenure, or None when another candidate won.

        The tenure's deadline counts from when the write was *sent*. A write with no answer
        within renew_deadline raises StoreUnavailable, as do 429/5xx; PermissionDenied and
        NamespaceNotFound are raised as they come.
        """
        current = self.view.record
        recreating = current is None and not self.view.first_state_absent
        term = current.transitions + 1 if current is not None else 0
        acquire_time = micro_time()
        spec = self._spec(term=term, acquire_time=acquire_time)
        sent_at = self.clock.now()
        changes = self.view.changes
        with trio.move_on_at(self.clock.at(sent_at + self.options.renew_deadline)) as timeout:
            try:
                record = await self._write(current, spec)
            except (LeaseConflict, LeaseNotFound):
                logger.debug("%s: lost the race to acquire; re-reading", self.where)
                await self._reread()
                return None
            except (StoreUnavailable, trio.Cancelled):
                # No answer, or one that does not say whether the write took effect.
                self._unanswered(recreating=recreating)
                raise
        if timeout.cancelled_caught:  # (the write was cancelled: _unanswered has been told)
            raise StoreUnavailable(
                f"no answer to a write of {self.where} within renew_deadline ({self.options.renew_deadline:g}s)"
            )
        if recreating:
            # Re-creating a Lease that was deleted. A create has no version to be conditioned on:
            # while it travelled, another candidate may have created the Lease, led, been cut off
            # and had the Lease deleted again, its guarded code running until renew_deadline
            # after that. The Lease is ours now; lead only renew_deadline after the answer, by
            # an update that proves nothing changed since.
            logger.info("%s: re-created the Lease; leading from renew_deadline after it", self.where)
            self.pause_until = self.clock.now() + self.options.renew_deadline
            if not self.view.superseded(record, changes):
                self.see(record)
            return None
        if self.view.superseded(record, changes):
            logger.info("%s: the Lease changed again right after our acquire; not leading", self.where)
            return None
        self.see(record)
        tenure = Tenure(
            lease=self.options.lease,
            namespace=self.namespace,
            identity=self.options.identity,
            term=term,
            acquire_time=acquire_time,
            sent_at=sent_at,
            renew_deadline=self.options.renew_deadline,
            clock=self.clock,
        )
        if tenure.over:
            # The answer came after the deadline counted from the send: a tenure with no
            # time to run. The record is ours, so the next attempt may retry at once.
            logger.warning("%s: the acquire answer came too late to lead", self.where)
            self.pause_until = self.clock.now() + self._backoff.next()
            return None
        self.tenure = tenure
        logger.info("%s: %s started leading (term %d)", self.where, self.options.identity, term)
        self.hub.publish(LeadershipEvent(EventKind.STARTED_LEADING, self.options.identity, term))
        self.changed.fire()
        return tenure

    def _unanswered(self, *, recreating: bool) -> None:
        """A write with no answer may still have taken effect, and its echo make the Lease
        ours. A re-create that did must be led no sooner than renew_deadline after it (see
        :meth:`acquire`): it came before now, so the view holds our state back as if it had
        been answered now. A Lease still absent may be created again meanwhile."""
        if recreating:
            self.view.unanswered_create(self.clock.now() + self.options.renew_deadline)

    def end(self, tenure: Tenure, reason: str, cause: BaseException | None = None, *, lost: bool = True) -> None:
        """End ``tenure`` (cancelling its guarded scopes) and say so: a loss at WARNING, an end
        we chose (stepping down, exiting) at INFO."""
        if not tenure.end(reason, cause):
            return
        logger.log(
            logging.WARNING if lost else logging.INFO,
            "%s: stopped leading (term %d): %s",
            self.where,
            tenure.term,
            reason,
        )
        self.hub.publish(LeadershipEvent(EventKind.STOPPED_LEADING, self.view.leader, tenure.term, reason))
        self.changed.fire()

    async def renew(self, tenure: Tenure) -> float:
        """One renewal attempt; returns when the next attempt is due."""
        current = self.view.record
        # Seeing the Lease deleted ends the tenure (LeaseView.tenure_end), and hold() renews
        # only a tenure that has not ended, with no await in between.
        assert current is not None
        spec = self._spec(term=tenure.term, acquire_time=tenure.acquire_time)
        sent_at = self.clock.now()
        retry_at = sent_at + self.options.retry_period
        changes = self.view.changes
        try:
            tenure.renewal_failure = None
            record = await self._write(current, spec)
        except LeaseConflict:
            # Someone wrote since our last read: perhaps our own earlier write whose answer we
            # never saw, perhaps a new holder. The fresh state decides.
            await self._reread()
            return self.clock.now() if self.view.record is not current else retry_at
        except LeaseNotFound:
            self.see(None)
            return retry_at
        except StoreUnavailable as exc:
            tenure.renewal_failure = exc
            logger.warning("%s: renewal failed, will retry: %s", self.where, exc)
            return sent_at + min(self.options.retry_period, exc.retry_after or self.options.retry_period)
        except PermissionDenied as exc:
            # Retried like an outage; the deadline still ends the tenure if it persists.
            tenure.renewal_failure = exc
            if not self._refusal_is_transient("update", exc):
                self.end(tenure, f"renewal failed: {exc}", exc)
            return retry_at
        except LeaseStoreError as exc:
            self.end(tenure, f"renewal failed: {exc}", exc)
            return retry_at
        if self.view.superseded(record, changes):
            return self.clock.now()  # the watch has newer news, already taken in: decide on it
        self.see(record)
        for observe in self.renewal_observers:
            observe(self.clock.now() - sent_at)
        if not tenure.extend(sent_at):
            self.end(
                tenure,
                f"the renewal's answer arrived after the deadline (renew_deadline {self.options.renew_deadline:g}s)",
            )
        return retry_at

    async def hold(self, tenure: Tenure) -> None:
        """Renew ``tenure`` every retry_period until it ends; returns once it has."""
        next_attempt = tenure.sent_at + self.options.retry_period
        while tenure.end_reason is None:
            with trio.move_on_at(self.clock.at(min(next_attempt, tenure.deadline))):
                await tenure.ended.wait()
            if tenure.end_reason is not None:
                return
            if self.clock.now() >= tenure.deadline:
                self.end(tenure, tenure.expired_reason, tenure.renewal_failure)
                return
            with trio.move_on_at(self.clock.at(tenure.deadline)):
                next_attempt = await self.renew(tenure)

    async def release(self) -> None:
        """Hand the Lease over, if it is still ours: clear the holder, with the release proof.

        Called by :meth:`wind_down` only, once every guarded scope of the tenure has exited
        (the proof tells followers they may start at once), inside its shield from
        cancellation. Bounded by retry_period; never raises: if the API server cannot be reached in time, the Lease
        simply expires after lease_duration. A conflict is re-read once: a renewal cancelled
        in flight may have taken effect after the version we hold was read, and that newer
        version is still ours to release.
        """
        current = self.view.record
        if not self.view.holding(current):
            return
        assert current is not None  # holding() says so; for the type checker
        with trio.move_on_after(self.options.retry_period):
            try:
                try:
                    record = await self._write(current, self._release_spec(current))
                except LeaseConflict:
                    reread = await self.store.get(self.namespace, self.options.lease)
                    self.see(reread)
                    if not self.view.holding(reread):
                        logger.info("%s: not ours any more; nothing to release", self.where)
                        return
                    assert reread is not None
                    record = await self._write(reread, self._release_spec(reread))
                self.see(record)
            except LeaseStoreError as exc:
                logger.warning("%s: release failed: %s", self.where, exc)
                return
            logger.info("%s: released by %s", self.where, self.options.identity)
            return
        logger.warning(
            "%s: release timed out after %gs; the lease expires by itself", self.where, self.options.retry_period
        )

    def _release_spec(self, current: LeaseRecord) -> LeaseSpec:
        now = micro_time()
        return LeaseSpec(
            holder="",
            # As client-go's release writes it, so its followers too take over promptly.
            lease_duration_seconds=1,
            acquire_time=now,
            renew_time=now,
            lease_transitions=current.spec.lease_transitions,
            released_by=self.options.identity,
        )

    async def wind_down(self, tenure: Tenure, *, release: bool) -> None:
        """After ``tenure`` ended: wait for its guarded scopes to exit (at most until its
        deadline), then release the Lease if asked and if they did. Shielded: it runs on
        exit paths that are being cancelled."""
        with trio.CancelScope(shield=True):
            exited = await tenure.guards_exited()
            if not exited:
                logger.error(
                    "%s: guarded code of term %d is still running past its deadline (it does not reach a trio "
                    "checkpoint); not releasing, so the Lease expires after lease_duration instead",
                    self.where,
                    tenure.term,
                )
            elif release:
                await self.release()

    # -- the Elector's loop ---------------------------------------------------------------

    def step_down(self) -> None:
        """End the current tenure; once its guarded scopes have exited, :meth:`run` releases
        the Lease and stays away from it for lease_duration."""
        tenure = self.leading
        if tenure is not None:
            self._stepped_down = tenure
            self.end(tenure, "stepped down", lost=False)

    async def run(self) -> None:
        """Campaign until cancelled: wait for a chance, acquire, hold, and again.

        Transient failures to acquire are retried with jittered backoff; refusals as
        :meth:`_refusal_is_transient` says; other store errors end the campaign.
        """
        outage = OutageLog(f"{self.where}: taking the Lease")
        while True:
            # Every round passes a checkpoint, so cancellation always ends this loop, even with
            # a store whose requests are shielded.
            await trio.lowlevel.checkpoint()
            previous = self.tenure
            if previous is not None and previous.guarding:
                # A new tenure must not start while guarded code of the last one still unwinds.
                # Not shielded: cancelled here, the campaign ends, and the Elector's exit winds
                # the tenure down (waiting for the same scopes) before it releases anything.
                await previous.guards_exited()
            await self.wait_for_chance()
            try:
                tenure = await self.acquire()
            except StoreUnavailable as exc:
                outage.failed(self.clock.now(), exc)
                self.pause_until = self.clock.now() + self._backoff.next(exc.retry_after)
                continue
            except PermissionDenied as exc:
                verb = "create" if self.view.record is None else "update"
                if not self._refusal_is_transient(verb, exc):
                    raise
                self.pause_until = self.clock.now() + self.options.retry_period
                continue
            outage.succeeded(self.clock.now())
            self._backoff.reset()
            if tenure is None:
                continue
            await self.hold(tenure)
            if self._stepped_down is tenure:
                await self.wind_down(tenure, release=True)
                self.pause_until = self.clock.now() + self.options.lease_duration
