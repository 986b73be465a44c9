"""Elector: a long-lived campaign in the background, and the guarded scopes built on it.

Lifecycle of an Elector (``async with Elector(...)``):

1. Entry reads the Lease (waiting through transient outages; a refusal or a missing
   namespace raises at once) and starts the campaign.
2. Inside, guarded scopes attach to the current tenure, from any task.
3. However the campaign ends (the block exits, a permanent store error, cancellation from
   outside), the tenure ends first: every attached scope is cancelled, *wherever its task
   runs*, and the exit waits until they have all exited (at most until the tenure's
   deadline, when trio has cancelled them anyway). Only then is the Lease released, so a
   follower never starts while our guarded code still runs.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from types import TracebackType

import trio

from ._campaign import Campaign, seen_leases
from ._clock import Clock, TrioClock
from ._errors import LeaseStoreError, NoActiveElector
from ._events import DEFAULT_MAX_BUFFER, EventHub, EventKind, EventStream, KubernetesEventRecorder, LeadershipEvent
from ._groups import Background, note_campaign_failure, raise_single
from ._lease_view import LeaseView
from ._options import LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD, ElectionOptions, check_store
from ._tenure import Tenure
from .stores._protocol import EventRecorder, LeaseStore

logger = logging.getLogger("lease_guard")

#: The Electors entered in this context, innermost last; guards may reuse them.
_active: contextvars.ContextVar[tuple[Elector, ...]] = contextvars.ContextVar("lease_guard_electors", default=())


def running_electors() -> list[Elector]:
    """The Electors running in this context, innermost first (exited ones are skipped:
    a task started inside an Elector's block keeps that context after the Elector exits)."""
    return [elector for elector in reversed(_active.get()) if elector._live]


class Leadership:
    """The handle of one tenure, yielded by :func:`leadership` and :meth:`Elector.leading`.

    Attributes:
        identity: our holder identity.
        term: the fencing token: the Lease's leaseTransitions for this tenure. It strictly
            increases from one tenure to the next, across holders, so a downstream store
            can reject writes that carry a smaller term than one it has seen.
        lease, namespace: the Lease.
    """

    def __init__(self, tenure: Tenure) -> None:
        self._tenure = tenure
        self.identity = tenure.identity
        self.term = tenure.term
        self.lease = tenure.lease
        self.namespace = tenure.namespace

    @property
    def deadline(self) -> float:
        """The guarded scope's current hard deadline, on trio's clock (``trio.current_time()``).

        It is when the last successful renewal was sent, plus renew_deadline; each
        renewal moves it forward.
        """
        return self._tenure.clock.at(self._tenure.deadline)

    def __repr__(self) -> str:
        return f"<Leadership {self.namespace}/{self.lease} identity={self.identity!r} term={self.term}>"


@contextlib.contextmanager
def _store_failure_ends_tenure(campaign: Campaign, reason: str) -> Iterator[None]:
    """A store error that ends one of the campaign's loops ends the tenure first, so guarded
    code learns it as LeadershipLost caused by that error."""
    try:
        yield
    except LeaseStoreError as exc:
        if campaign.tenure is not None:
            campaign.end(campaign.tenure, f"{reason}: {exc}", exc)
        raise


@contextlib.asynccontextmanager
async def guard(tenure: Tenure) -> AsyncIterator[Leadership]:
    """Run the block as guarded code of ``tenure``; raise LeadershipLost if the tenure stopped it.

    The loss is raised even when the block swallowed the Cancelled. An exception of the
    block's own propagates unchanged.
    """
    with trio.CancelScope() as scope:
        tenure.attach(scope)
        try:
            yield Leadership(tenure)
        finally:
            tenure.detach(scope)
    if scope.cancel_called:
        raise tenure.error()


class Elector:
    """Campaign for a Lease in the background for as long as the ``async with`` block runs.

    For apps whose leadership persists across many guarded calls. Entering starts the
    campaign and waits until the Lease's current state has been read: through transient
    outages (429, 5xx, unreachable: retried with jittered backoff and logged), but a
    misconfiguration (a refusal, a missing namespace) raises here, not later. It does not
    wait for leadership.

    Leaving (normally, by an exception, or cancelled) ends the tenure: every guarded
    scope attached to it, in any task, is cancelled, and the exit waits until they have
    exited (at most until the tenure's hard deadline). Then, if ``release_on_exit``, the
    Lease is released with the release proof so a follower takes over at once (bounded by
    retry_period; never hangs).

    Inside the block, :func:`leadership` and :func:`only_when_leading` reuse this Elector
    when nothing they were given explicitly conflicts with it (see :func:`leadership`),
    and a bare ``@only_when_leading`` follows the innermost running Elector.

    Example::

        async with Elector("my-operator") as elector:
            async for event in elector.events():
                print(event.kind, event.leader)

    Args:
        lease: the Lease's name, a DNS-1123 subdomain.
        namespace: the Lease's namespace; by default the store's (for Kubernetes: the
            in-cluster service account's, else the kubeconfig context's, else "default").
        identity: our holder identity; by default the pod or host name plus a random suffix.
        lease_duration: seconds a follower waits, from the last change it saw, before it
            takes the Lease over (written as leaseDurationSeconds, rounded up).
        renew_deadline: seconds after a renewal was sent by which the next must succeed;
            the hard deadline of guarded code.
        retry_period: seconds between renewals, and between retries of a failed one.
        store: where the Lease lives; by default the process's shared
            :class:`KubernetesLeaseStore` made from the environment (in-cluster config or
            kubeconfig).
        release_on_exit: release the Lease when the block is left.
        record_events: also record Kubernetes Events on the Lease when this candidate
            starts and stops leading (reason ``LeaderElection``, as client-go does). Needs
            RBAC on events; a failure to record is logged once and never affects leadership.

    Raises:
        ConfigurationError: an option is invalid (a ValueError naming what to change).
        PermissionDenied, NamespaceNotFound: the store refused the first read.
    """

    def __init__(
        self,
        lease: str,
        *,
        namespace: str | None = None,
        identity: str | None = None,
        lease_duration: float = LEASE_DURATION,
        renew_deadline: float = RENEW_DEADLINE,
        retry_period: float = RETRY_PERIOD,
        store: LeaseStore | None = None,
        release_on_exit: bool = True,
        record_events: bool = False,
    ) -> None:
        self.options = ElectionOptions.build(
            lease,
            namespace=namespace,
            identity=identity,
            lease_duration=lease_duration,
            renew_deadline=renew_deadline,
            retry_period=retry_period,
            release_on_exit=release_on_exit,
        )
        self.store = check_store(store)
        """The store given, or None for the shared default; the one in use once running."""
        self.record_events = record_events
        self._clock: Clock = TrioClock()
        self._campaign: Campaign | None = None
        self._live = False
        self._stopped = False
        self._scope: contextlib.AbstractAsyncContextManager[Elector] | None = None
        self._jobs_running: set[object] = set()

    @property
    def lease(self) -> str:
        """The Lease's name."""
        return self.options.lease

    @property
    def identity(self) -> str:
        """Our holder identity."""
        return self.options.identity

    @property
    def namespace(self) -> str:
        """The Lease's namespace (resolved from the store once the Elector runs)."""
        if self._campaign is not None:
            return self._campaign.namespace
        return self.options.namespace or "default"

    @property
    def running(self) -> bool:
        """True from entry until the Elector starts to exit (its campaign is going on)."""
        return self._live

    @property
    def is_leader(self) -> bool:
        """True while we hold a tenure that has not ended and is within its deadline."""
        return self._running().leading is not None

    @property
    def leader(self) -> str | None:
        """The holder identity as last observed, or None when nobody holds the Lease."""
        return self._running().view.leader

    @property
    def term(self) -> int | None:
        """The fencing token of our current tenure, or None when we don't lead."""
        tenure = self._running().leading
        return tenure.term if tenure is not None else None

    async def wait_leading(self) -> None:
        """Wait until we lead (returns at once if we do).

        Example::

            await elector.wait_leading()
            assert elector.is_leader

        Raises:
            NoActiveElector: the Elector stopped while we waited.
        """
        campaign = self._running()
        while campaign.leading is None:
            if self._stopped:
                raise NoActiveElector(
                    f"the Elector for lease {self.namespace}/{self.lease} stopped while waiting to lead"
                )
            await campaign.changed.wait()

    def step_down(self) -> None:
        """Give up leadership now: guarded scopes are cancelled (raising LeadershipLost),
        and once they have exited the Lease is released so another candidate takes over.

        The Elector stays a candidate, but does not try to lead again for lease_duration.
        Does nothing when we don't lead.

        Example::

            if elector.is_leader and draining:
                elector.step_down()
        """
        self._running().step_down()

    def events(self, *, max_buffer: int = DEFAULT_MAX_BUFFER) -> EventStream:
        """Follow leadership changes: started leading, stopped leading, new leader observed.

        The first event describes the state when ``events()`` was called: STARTED_LEADING
        if we lead, else NEW_LEADER with the current holder (None when nobody holds it).
        Nothing that happens after the call is missed, however late the iteration begins,
        up to ``max_buffer`` unread events; a reader further behind gets a LeaseGuardError
        once it has read those (nothing is dropped silently). The iteration ends when the
        Elector stops; ``await stream.aclose()`` stops following earlier.

        Example::

            async for event in elector.events():
                if event.kind is EventKind.STOPPED_LEADING:
                    log.warning("lost: %s", event.reason)
        """
        campaign = self._running()
        if max_buffer < 1:
            raise ValueError(f"max_buffer must be at least 1, got {max_buffer!r}")
        tenure = campaign.leading
        if tenure is not None:
            first = LeadershipEvent(EventKind.STARTED_LEADING, self.identity, tenure.term)
        else:
            first = LeadershipEvent(EventKind.NEW_LEADER, campaign.view.leader)
        stream = EventStream(campaign.hub, first, max_buffer)
        if self._stopped:
            campaign.hub.close()
        return stream

    @contextlib.asynccontextmanager
    async def leading(self) -> AsyncIterator[Leadership]:
        """Wait until we lead, then run the block as guarded code.

        The block is cancelled at once when the tenure ends (the Lease was taken, cleared
        or deleted, we stepped down, the Elector is exiting), and at the latest at the hard
        deadline: when the last successful renewal was sent, plus renew_deadline. The
        ``async with`` then raises LeadershipLost. Other exceptions from the block
        propagate unchanged. May be used from any task, also one outside the Elector's
        block: the Elector's exit waits for the block to exit.

        Example::

            async with elector.leading() as lead:
                await write_with_fencing_token(lead.term)

        Raises:
            LeadershipLost: the tenure ended while the block ran.
            NoActiveElector: the Elector stopped before we led.
        """
        campaign = self._running()
        await self.wait_leading()
        tenure = campaign.leading
        assert tenure is not None  # wait_leading returned in this same step
        async with guard(tenure) as lead:
            yield lead

    def _observe_renewals(self, observer: Callable[[float], None]) -> Callable[[], None]:
        """Call ``observer`` with the round-trip time of each successful renewal (for metrics);
        returns the function that stops it."""
        observers = self._running().renewal_observers
        observers.append(observer)
        return lambda: observers.remove(observer) if observer in observers else None

    def _running(self) -> Campaign:
        if self._campaign is None:
            raise RuntimeError("this Elector is not running: use it inside `async with Elector(...) as elector:`")
        return self._campaign

    async def _follow(
        self,
        campaign: Campaign,
        background: Background,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with background.scope(), _store_failure_ends_tenure(campaign, "the Lease can no longer be watched"):
            await campaign.follow(task_status=task_status)

    async def _campaign_loop(self, campaign: Campaign) -> None:
        with _store_failure_ends_tenure(campaign, "the campaign failed"):
            await campaign.run()

    @contextlib.asynccontextmanager
    async def _run(self) -> AsyncIterator[Elector]:
        async with contextlib.AsyncExitStack() as resources:
            store: LeaseStore
            if self.store is None:
                from .stores.kubernetes import shared_store

                store = await resources.enter_async_context(shared_store())
            else:
                store = self.store
            options = self.options
            namespace = options.namespace or store.default_namespace
            campaign = Campaign(
                store,
                options,
                namespace,
                view=LeaseView(
                    options.identity,
                    options.lease_duration,
                    seen_before=seen_leases.seen(store, namespace, options.lease),
                ),
                clock=self._clock,
                hub=EventHub(),
            )
            recorder: KubernetesEventRecorder | None = None
            if self.record_events:
                if isinstance(store, EventRecorder):
                    recorder = KubernetesEventRecorder(
                        store, namespace, options.lease, options.identity, options.renew_deadline
                    )
                    campaign.hub.listen(recorder)
                else:
                    logger.warning(
                        "%s: record_events: %s cannot record events; ignored", campaign.where, type(store).__name__
                    )
            self._campaign = campaign
            token = _active.set((*_active.get(), self))
            # The block's own exception is held outside the nursery and raised after it, so an
            # ExceptionGroup the user raised comes back as the very object (a nursery would wrap
            # it, and a cancelled scope would rebuild it).
            body_error: Exception | None = None
            try:
                background = Background()
                async with trio.open_nursery() as nursery:
                    if recorder is not None:
                        nursery.start_soon(background.run, recorder.run)
                    await nursery.start(self._follow, campaign, background)
                    nursery.start_soon(background.run, functools.partial(self._campaign_loop, campaign))
                    self._live = True
                    try:
                        yield self
                    except Exception as exc:
                        body_error = exc
                    finally:
                        self._live = False
                        if campaign.tenure is not None:
                            campaign.end(campaign.tenure, "the Elector exited", lost=False)
                        background.cancel()
            except BaseExceptionGroup as group:
                if body_error is None:
                    raise_single(group)
                note_campaign_failure(body_error, group, campaign.where)
            finally:
                self._live = False
                self._stopped = True
                tenure = campaign.tenure
                if tenure is not None:
                    campaign.end(tenure, "the Elector exited", lost=False)
                    await campaign.wind_down(tenure, release=options.release_on_exit)
                campaign.changed.fire()
                if recorder is not None:
                    with trio.move_on_after(options.retry_period) as flush:
                        flush.shield = True
                        await recorder.flush()
                campaign.hub.close()
                _active.reset(token)
            if body_error is not None:
                raise body_error

    async def __aenter__(self) -> Elector:
        if self._scope is not None:
            raise RuntimeError("an Elector can be entered only once; make a new one")
        self._scope = self._run()
        return await self._scope.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        assert self._scope is not None
        return await self._scope.__aexit__(exc_type, exc, traceback)
