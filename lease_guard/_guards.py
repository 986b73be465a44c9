"""The guards: ``leadership()`` for a block, ``only_when_leading`` for a function."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import ParamSpec, TypeVar, overload

from ._campaign import Memory
from ._elector import Elector, Leadership, find_elector
from ._errors import NoActiveElector
from ._options import LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD, ElectionOptions, default_identity
from .stores._protocol import LeaseStore

P = ParamSpec("P")
R = TypeVar("R")


@contextlib.asynccontextmanager
async def leadership(
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
) -> AsyncIterator[Leadership]:
    """Wait until this candidate holds the Lease, then run the block as guarded code.

    Waits (for as long as it takes) until the Lease is free, expired or released, takes
    it, and runs the block while a background task renews it every ``retry_period``.

    - Loss: when another holder takes the Lease, it is deleted, or it can no longer be
      renewed, the block is cancelled at its next checkpoint and the ``async with``
      raises :class:`LeadershipLost`.
    - Hard deadline: the block's cancel scope expires ``renew_deadline`` seconds after
      the last successful renewal was *sent*, on trio's clock, even when the renewing
      request never returns; a late answer cannot extend it.
    - An exception raised in the block propagates unchanged (not wrapped in an
      ExceptionGroup).
    - However the block ends (normally, by an exception, cancelled from outside,
      KeyboardInterrupt) the Lease is released if ``release_on_exit``, so a follower
      takes over at once. The release is bounded by ``retry_period``.

    Inside a running :class:`Elector` for the same lease, the Elector's campaign is
    reused (its options apply) and nothing is released on exit.

    Options are those of :class:`Elector`.

    Example::

        async with leadership("my-operator") as lead:
            log.info("leading as %s, term %d", lead.identity, lead.term)
            await run_controller()

    Raises:
        LeadershipLost: leadership ended while the block ran.
        ConfigurationError: an option is invalid.
        PermissionDenied, NamespaceNotFound: the store refused.
    """
    elector = find_elector(lease, namespace)
    if elector is not None:
        async with elector.leading() as lead:
            yield lead
        return
    async with (
        Elector(
            lease,
            namespace=namespace,
            identity=identity,
            lease_duration=lease_duration,
            renew_deadline=renew_deadline,
            retry_period=retry_period,
            store=store,
            release_on_exit=release_on_exit,
            record_events=record_events,
        ) as elector,
        elector.leading() as lead,
    ):
        yield lead


class _JobCandidate:
    """One decorated function's candidacy: its identity and memory persist across calls."""

    def __init__(self, options: ElectionOptions, store: LeaseStore | None) -> None:
        self.options = options
        self.store = store
        self.memory = Memory()

    async def call(self, fn: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs) -> R | None:
        elector = find_elector(self.options.lease, self.options.namespace)
        if elector is not None:
            return await _call_if_leading(elector, fn, *args, **kwargs)
        elector = Elector._one_shot(self.options, self.store, self.memory)
        async with elector:
            campaign = elector._running()
            await campaign.decided.wait()
            if campaign.declined:
                return None
            async with elector.leading():
                return await fn(*args, **kwargs)


async def _call_if_leading(
    elector: Elector, fn: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs
) -> R | None:
    if not elector.is_leader:
        return None
    async with elector.leading():
        return await fn(*args, **kwargs)


@overload
def only_when_leading(fn: Callable[P, Awaitable[R]], /) -> Callable[P, Awaitable[R | None]]: ...


@overload
def only_when_leading(
    *,
    lease: str | None = None,
    namespace: str | None = None,
    identity: str | None = None,
    lease_duration: float = LEASE_DURATION,
    renew_deadline: float = RENEW_DEADLINE,
    retry_period: float = RETRY_PERIOD,
    store: LeaseStore | None = None,
    release_on_exit: bool = False,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R | None]]]: ...


def only_when_leading(
    fn: Callable[P, Awaitable[R]] | None = None,
    /,
    *,
    lease: str | None = None,
    namespace: str | None = None,
    identity: str | None = None,
    lease_duration: float = LEASE_DURATION,
    renew_deadline: float = RENEW_DEADLINE,
    retry_period: float = RETRY_PERIOD,
    store: LeaseStore | None = None,
    release_on_exit: bool = False,
) -> Callable[P, Awaitable[R | None]] | Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R | None]]]:
    """Run an async function only on the leader; on every other replica the call returns None.

    For periodic jobs scheduled on every replica. Two forms:

    ``@only_when_leading(lease="nightly-cleanup", ...)`` campaigns per call, promptly:
    it reads the Lease and, when another candidate holds it and it has not expired, returns
    None at once without waiting. Otherwise it takes the Lease and runs the function
    guarded exactly like a :func:`leadership` block: renewed in the background, cancelled
    on loss, which raises :class:`LeadershipLost`. Between calls:

    - The function keeps one identity across its calls (generated once, at decoration).
    - ``release_on_exit`` defaults to **False** here (unlike :func:`leadership`): the
      leader keeps the Lease between calls and takes it again on its next call without
      waiting. Were it released after each call, a replica whose schedule is offset by a
      few seconds would find it free and run the same tick a second time. Pass
      ``release_on_exit=True`` for jobs where that is harmless and a fast takeover matters.
    - A holder that crashed does not block the job forever: each replica remembers, across
      calls, since when it has seen the Lease unchanged (on its monotonic clock), and takes
      it over at the first call after lease_duration of silence. With calls every T
      seconds that is within lease_duration + T of the crash. Set lease_duration shorter
      than the job's period if the leader should survive only while it keeps calling.

    Bare ``@only_when_leading`` (or with ``lease`` omitted) follows the innermost running
    :class:`Elector` in the calling context, making no API call per invocation: it runs the
    function guarded if that Elector leads, else returns None. Called outside any Elector,
    it raises :class:`NoActiveElector`. The lease form also reuses a running Elector for
    the same lease.

    Example::

        @only_when_leading(lease="nightly-cleanup")
        async def cleanup() -> int:
            return await delete_expired_rows()

        removed = await cleanup()   # None on replicas that don't lead

    Raises:
        LeadershipLost: leadership ended while the function ran.
        StoreUnavailable: the API server could not be reached to decide (lease form).
        NoActiveElector: the bare form was called outside any Elector.
    """
    if fn is not None:
        return _follow_elector(fn)
    if lease is None:
        return _follow_elector
    options = ElectionOptions.build(
        lease,
        namespace=namespace,
        identity=identity or default_identity(),
        lease_duration=lease_duration,
        renew_deadline=renew_deadline,
        retry_period=retry_period,
        release_on_exit=release_on_exit,
    )

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R | None]]:
        candidate = _JobCandidate(options, store)

        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R | None:
            return await candidate.call(fn, *args, **kwargs)

        guarded.identity = options.identity  # type: ignore[attr-defined]
        return guarded

    return decorate


def _follow_elector(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R | None]]:
    @functools.wraps(fn)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R | None:
        elector = find_elector(None, None)
        if elector is None:
            raise NoActiveElector(
                f"{fn.__qualname__} is decorated with a bare @only_when_leading, which follows a running "
                "Elector, but none runs here. Call it inside `async with Elector(lease=...)` (in that "
                'task or a task started inside it), or name a lease: @only_when_leading(lease="my-job").'
            )
        return await _call_if_leading(elector, fn, *args, **kwargs)

    return guarded
