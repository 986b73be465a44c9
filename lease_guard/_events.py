"""Leadership events: what they say, their fan-out to subscribers, and Kubernetes Events.

The campaign publishes each change once, synchronously, to an :class:`EventHub`; nothing
it publishes to can block it. Subscribers are plain callbacks: an :class:`EventStream`
(what :meth:`Elector.events` returns) buffers them for an ``async for``; the
:class:`KubernetesEventRecorder` records them on the Lease off the campaign's path.
"""

from __future__ import annotations

import collections
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from ._errors import LeaseGuardError, LeaseStoreError
from .stores._protocol import EventRecorder

logger = logging.getLogger("lease_guard")


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


Listener = Callable[[LeadershipEvent], None]


class EventHub:
    """Fan-out of one campaign's events to its listeners, in order."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._closers: list[Callable[[], None]] = []

    def publish(self, event: LeadershipEvent) -> None:
        for listener in list(self._listeners):
            listener(event)

    def listen(self, listener: Listener, on_close: Callable[[], None] = lambda: None) -> Callable[[], None]:
        """Call ``listener`` with every event from now on; returns the function that stops it."""
        self._listeners.append(listener)
        self._closers.append(on_close)

        def stop() -> None:
            if listener in self._listeners:
                index = self._listeners.index(listener)
                del self._listeners[index]
                del self._closers[index]

        return stop

    def close(self) -> None:
        """The campaign is over: tell every listener, and forget them."""
        closers = self._closers
        self._listeners, self._closers = [], []
        for close in closers:
            close()


class EventStream:
    """The async iterator returned by :meth:`Elector.events`: a bounded buffer of events.

    A reader that falls more than ``max_buffer`` events behind is told so by a
    LeaseGuardError once it has read what was buffered: no event is dropped silently.
    """

    def __init__(self, hub: EventHub, first: LeadershipEvent, max_buffer: int) -> None:
        self._send, self._receive = trio.open_memory_channel[LeadershipEvent](max_buffer)
        self._overflowed = False
        self._max_buffer = max_buffer
        self._send.send_nowait(first)
        self._stop = hub.listen(self._offer, self._send.close)

    def _offer(self, event: LeadershipEvent) -> None:
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self._overflowed = True
            self._stop()
            self._send.close()
        except trio.ClosedResourceError:
            pass

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> LeadershipEvent:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            self._stop()
            if self._overflowed:
                self._overflowed = False
                raise LeaseGuardError(
                    f"events(): this reader fell more than {self._max_buffer} events behind, so it was "
                    "unsubscribed; read faster, or pass a larger max_buffer"
                ) from None
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Stop following: unsubscribe and drop what is buffered."""
        self._stop()
        self._send.close()
        await self._receive.aclose()


class KubernetesEventRecorder:
    """Records STARTED_LEADING and STOPPED_LEADING as Kubernetes Events on the Lease, in order,
    off the campaign's path (as client-go's leader election does, reason ``LeaderElection``).

    A failure to record is logged once and never affects leadership.
    """

    def __init__(self, store: EventRecorder, namespace: str, lease: str, identity: str, timeout: float) -> None:
        self._store, self._namespace, self._lease, self._identity = store, namespace, lease, identity
        self._timeout = timeout
        self._backlog: collections.deque[LeadershipEvent] = collections.deque()
        self._filled = trio.Event()
        self._failure_logged = False

    def __call__(self, event: LeadershipEvent) -> None:
        if event.kind is not EventKind.NEW_LEADER:
            self._backlog.append(event)
            self._filled.set()

    async def run(self) -> None:
        """Record events as they come, until cancelled."""
        while True:
            await self._filled.wait()
            self._filled = trio.Event()
            await self.flush()

    async def flush(self) -> None:
        """Record what is buffered, each event bounded by the timeout."""
        while self._backlog:
            event = self._backlog[0]
            if event.kind is EventKind.STARTED_LEADING:
                message = f"{self._identity} became leader"
            else:
                message = f"{self._identity} stopped leading: {event.reason}"
            try:
                with trio.move_on_after(self._timeout):
                    await self._store.record_event(
                        self._namespace, self._lease, reason="LeaderElection", message=message, identity=self._identity
                    )
            except LeaseStoreError as exc:
                if not self._failure_logged:
                    self._failure_logged = True
                    logger.warning("lease %s/%s: %s", self._namespace, self._lease, exc)
            self._backlog.popleft()


#: The default bound of an :meth:`Elector.events` reader's buffer.
DEFAULT_MAX_BUFFER = 1024
