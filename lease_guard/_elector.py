"""Elector: a long-lived campaign in the background, and the guarded scopes built on it."""

from __future__ import annotations

import collections
import contextlib
import contextvars
import logging
import math
from collections.abc import AsyncIterator, Callable
from types import TracebackType

import trio

from ._campaign import Campaign, Clock, EventKind, LeadershipEvent, Memory, Tenure
from ._errors import LeaseStoreError
from ._groups import reraise, single_exception
from ._options import LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD, ElectionOptions
from .stores._protocol import EventRecorder, LeaseStore

logger = logging.getLogger("lease_guard")

#: The Electors running in this context, innermost last; guards reuse them.
_active: contextvars.ContextVar[tuple[Elector, ...]] = contextvars.ContextVar("lease_guard_electors", default=())


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
        campaign = tenure.campaign
        self.identity = campaign.options.identity
        self.term = tenure.term
        self.lease = campaign.options.lease
        self.namespace = campaign.namespace

    @property
    def deadline(self) -> float:
        """The guarded scope's current hard deadline, on trio's clock (``trio.current_time()``).

        It is when the last successful renewal was sent, plus renew_deadline; each
        renewal moves it forward.
        """
        return self._tenure.campaign.clock.at(self._tenure.deadline)

    def __repr__(self) -> str:
        return f"<Leadership {self.namespace}/{self.lease} identity={self.identity!r} term={self.term}>"


def find_elector(lease: str | None, namespace: str | None) -> Elector | None:
    """The innermost running Elector for ``lease`` (any lease when None) in this context."""
    for elector in reversed(_active.get()):
        if lease is None or (elector.lease == lease and (namespace is None or namespace == elector.namespace)):
            return elector
    return None


class _EventStream:
    """The async iterator returned by :meth:`Elector.events`."""

    def __init__(self, receive: trio.MemoryReceiveChannel[LeadershipEvent], unsubscribe: Callable[[], None]) -> None:
        self._receive = receive
        self._unsubscribe = unsubscribe

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> LeadershipEvent:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            self._unsubscribe()
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Stop following: unsubscribe and drop what is buffered."""
        self._unsubscribe()
        await self._receive.aclose()


class Elector:
    """Campaign for a Lease in the background for as long as the ``async with`` block runs.

    For apps whose leadership persists across many guarded calls. Entering starts the
    campaign and waits only until the Lease's current state has been read (so a
    misconfiguration raises here, not later); it does not wait for leadership. Leaving
    stops the campaign and, if we lead and ``release_on_exit`` is true, releases the Lease
    so a follower takes over at once (bounded by retry_period; never hangs).

    Inside the block, :func:`leadership` and :func:`only_when_leading` for the same lease
    reuse this Elector instead of campaigning a second time, and a bare
    ``@only_when_leading`` follows it with no API call per invocation.

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
        store: where the Lease lives; by default a :class:`KubernetesLeaseStore` made
            from the environment (in-cluster config or kubeconfig).
        release_on_exit: clear the holder when the block is left.
        record_events: also record Kubernetes Events on the Lease when this candidate
            starts and stops leading (reason ``LeaderElection``, as client-go does). Needs
            RBAC on events; a failure to record is logged once and never affects leadership.

    Raises:
        ConfigurationError: an option is invalid (a ValueError naming what to change).
        PermissionDenied, NamespaceNotFound: the store refused the first read.
        StoreUnavailable: the first read kept failing transiently (429, 5xx, unreachable)
            for renew_deadline; later failures are retried for as long as the Elector runs.
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
        options = ElectionOptions.build(
            lease,
            namespace=namespace,
            identity=identity,
            lease_duration=lease_duration,
            renew_deadline=renew_deadline,
            retry_period=retry_period,
            release_on_exit=release_on_exit,
        )
        self._setup(options, store, record_events=record_events)

    def _setup(self, options: ElectionOptions, store: LeaseStore | None, *, record_events: bool) -> None:
        self.options = options
        self.record_events = record_events
        self._event_backlog: collections.deque[LeadershipEvent] = collections.deque()
        self._backlog_filled = trio.Event()
        self._event_failure_logged = False
        self._store = store
        self._campaign: Campaign | None = None
        self._subscribers: set[trio.MemorySendChannel[LeadershipEvent]] = set()
        self._scope: contextlib.AbstractAsyncContextManager[Elector] | None = None
        self._patient = True
        self._memory: Memory | None = None
        self._clock: Clock | None = None

    @classmethod
    def _one_shot(cls, options: ElectionOptions, store: LeaseStore | None, memory: Memory) -> Elector:
        """An Elector that decides once (lead now, or decline), for ``only_when_leading``."""
        elector = cls.__new__(cls)
        elector._setup(options, store, record_events=False)
        elector._patient = False
        elector._memory = memory
        return elector

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
    def is_leader(self) -> bool:
        """True while we hold a tenure that has not ended."""
        tenure = self._running().tenure
        return tenure is not None and tenure.active

    @property
    def leader(self) -> str | None:
        """The holder identity as last observed, or None when nobody holds the Lease."""
        return self._running().leader

    @property
    def term(self) -> int | None:
        """The fencing token of our current tenure, or None when we don't lead."""
        tenure = self._running().tenure
        return tenure.term if tenure is not None and tenure.active else None

    def healthy(self, tolerance: float = 10.0) -> bool:
        """False when we believe we lead but the last renewal was sent over
        ``lease_duration + tolerance`` seconds ago: the campaign is wedged. For liveness probes.

        With a working event loop the hard deadline ends such a tenure first, so this
        only fails when the process is stuck; client-go's HealthzAdaptor checks the same.

        Example::

            if not elector.healthy():
                sys.exit("leader election is stuck")
        """
        tenure = self._running().tenure
        if tenure is None or not tenure.active:
            return True
        return self._running().clock.now() - tenure.sent_at <= self.options.lease_duration + tolerance

    async def wait_leading(self) -> None:
        """Wait until we lead (returns at once if we do).

        Example::

            await elector.wait_leading()
            assert elector.is_leader
        """
        campaign = self._running()
        while not self.is_leader:
            await campaign._changed.wait()

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

    def events(self) -> AsyncIterator[LeadershipEvent]:
        """Follow leadership changes: started leading, stopped leading, new leader observed.

        The first event describes the state when ``events()`` was called: STARTED_LEADING
        if we lead, else NEW_LEADER with the current holder (None when nobody holds it).
        Nothing that happens after the call is missed, however late the iteration begins;
        events are buffered without bound. The iteration ends when the Elector stops.

        Example::

            async for event in elector.events():
                if event.kind is EventKind.STOPPED_LEADING:
                    log.warning("lost: %s", event.reason)
        """
        self._running()
        send, receive = trio.open_memory_channel[LeadershipEvent](math.inf)
        if self.is_leader:
            send.send_nowait(LeadershipEvent(EventKind.STARTED_LEADING, self.identity, self.term))
        else:
            send.send_nowait(LeadershipEvent(EventKind.NEW_LEADER, self.leader))
        self._subscribers.add(send)
        return _EventStream(receive, lambda: self._subscribers.discard(send))

    @contextlib.asynccontextmanager
    async def leading(self) -> AsyncIterator[Leadership]:
        """Wait until we lead, then run the block as guarded code.

        The block is cancelled at once when the tenure ends (the Lease was taken, deleted,
        or we stepped down), and at the latest at the hard deadline: when the last
        successful renewal was sent, plus renew_deadline. The ``async with`` then raises
        LeadershipLost. Other exceptions from the block propagate unchanged.

        Example::

            async with elector.leading() as lead:
                await write_with_fencing_token(lead.term)
        """
        campaign = self._running()
        await self.wait_leading()
        tenure = campaign.tenure
        assert tenure is not None
        with trio.CancelScope() as scope:
            tenure.attach(scope)
            try:
                yield Leadership(tenure)
            finally:
                tenure.detach(scope)
        if scope.cancel_called:
            raise tenure.error()

    async def _record_events(self, store: LeaseStore, namespace: str) -> None:
        """Record leadership changes as Kubernetes Events, in order, off the campaign's path."""
        if not isinstance(store, EventRecorder):
            logger.warning("record_events: %s cannot record events; ignored", type(store).__name__)
            self.record_events = False
            return
        while True:
            await self._backlog_filled.wait()
            self._backlog_filled = trio.Event()
            await self._record_backlog(store, namespace)

    async def _record_backlog(self, store: LeaseStore, namespace: str) -> None:
        assert isinstance(store, EventRecorder)
        while self._event_backlog:
            event = self._event_backlog[0]
            if event.kind is EventKind.STARTED_LEADING:
                message = f"{self.identity} became leader"
            else:
                message = f"{self.identity} stopped leading: {event.reason}"
            try:
                with trio.move_on_after(self.options.renew_deadline):
                    await store.record_event(
                        namespace, self.lease, reason="LeaderElection", message=message, identity=self.identity
                    )
            except LeaseStoreError as exc:
                if not self._event_failure_logged:
                    self._event_failure_logged = True
                    logger.warning("lease %s/%s: %s", namespace, self.lease, exc)
            self._event_backlog.popleft()

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

    def _publish(self, event: LeadershipEvent) -> None:
        if self.record_events and event.kind is not EventKind.NEW_LEADER:
            self._event_backlog.append(event)
            self._backlog_filled.set()
        for send in self._subscribers:
            send.send_nowait(event)

    @contextlib.asynccontextmanager
    async def _run(self) -> AsyncIterator[Elector]:
        owned_store = self._store is None
        store: LeaseStore
        if self._store is None:
            from .stores.kubernetes import KubernetesLeaseStore

            store = KubernetesLeaseStore()
        else:
            store = self._store
        namespace = self.options.namespace or store.default_namespace
        campaign = Campaign(
            store,
            self.options,
            namespace,
            memory=self._memory,
            patient=self._patient,
            on_event=self._publish,
            clock=self._clock,
        )
        token = _active.set((*_active.get(), self))
        try:
            try:
                async with trio.open_nursery() as nursery:
                    if self.record_events:
                        nursery.start_soon(self._record_events, store, namespace)
                    await nursery.start(campaign.run)
                    self._campaign = campaign
                    try:
                        yield self
                    finally:
                        nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                single = single_exception(group)
                if single is None:
                    raise
                reraise(single)
            finally:
                if self.options.release_on_exit:
                    await campaign.release()
                if self._event_backlog:
                    # Record what is left (the stop of our last tenure), bounded like a release.
                    with trio.move_on_after(self.options.retry_period) as flush:
                        flush.shield = True
                        await self._record_backlog(store, namespace)
                for send in self._subscribers:
                    send.close()
                if owned_store:
                    await store.aclose()  # type: ignore[attr-defined]
        finally:
            _active.reset(token)

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
