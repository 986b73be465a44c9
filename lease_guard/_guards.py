"""The guards: ``leadership()`` for a block, ``only_when_leading`` for a function.

Both reuse a running :class:`Elector` for the same Lease when nothing they were given
explicitly conflicts with it (:func:`reusable_elector`); otherwise they campaign on their
own, as a separate candidate.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar, overload

from ._elector import Elector, Leadership, running_electors
from ._errors import ConfigurationError, NoActiveElector
from ._job import Job, call_in_elector
from ._options import LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD, ElectionOptions, check_store, default_identity
from .stores._protocol import LeaseStore

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class Given:
    """What a guard was given explicitly (None: left to the default, or to a reused Elector)."""

    lease: str
    namespace: str | None
    identity: str | None
    store: LeaseStore | None
    lease_duration: float | None
    renew_deadline: float | None
    retry_period: float | None


def reusable_elector(given: Given) -> Elector | None:
    """The innermost running Elector for the Lease that nothing given explicitly contradicts.

    An option left as None is not explicit and matches anything. ``store`` must be the very
    store the Elector uses; ``namespace`` (or, when None, the default namespace of the
    store that would be used) must be the Elector's; ``identity`` and the timings equal.
    """
    for elector in running_electors():
        campaign = elector._running()
        if elector.lease != given.lease or (given.store is not None and given.store is not campaign.store):
            continue
        if (given.namespace or campaign.store.default_namespace) != campaign.namespace:
            continue
        if given.identity is not None and given.identity != elector.identity:
            continue
        options = elector.options
        if any(
            wanted is not None and wanted != used
            for wanted, used in (
                (given.lease_duration, options.lease_duration),
                (given.renew_deadline, options.renew_deadline),
                (given.retry_period, options.retry_period),
            )
        ):
            continue
        return elector
    return None


@contextlib.asynccontextmanager
async def leadership(
    lease: str,
    *,
    namespace: str | None = None,
    identity: str | None = None,
    lease_duration: float | None = None,
    renew_deadline: float | None = None,
    retry_period: float | None = None,
    store: LeaseStore | None = None,
    release_on_exit: bool = True,
    record_events: bool = False,
) -> AsyncIterator[Leadership]:
    """Wait until this candidate holds the Lease, then run the block as guarded code.

    Waits for as long as it takes until the Lease is free, expired or released, takes it,
    and runs the block while a background task renews it every ``retry_period``. Transient
    store failures (unreachable, 429, 5xx, timeouts) are part of that wait: retried with
    jittered backoff and logged at WARNING, never raised. Bound the wait the trio way::

        with trio.move_on_after(60):
            async with leadership("my-operator"):
                ...

    - Loss: when another holder takes the Lease, it is cleared or deleted, or it can no
      longer be renewed, the block is cancelled at its next checkpoint and the
      ``async with`` raises :class:`LeadershipLost`.
    - Hard deadline: the block's cancel scope expires ``renew_deadline`` seconds after
      the last successful renewal was *sent*, on trio's clock, even when the renewing
      request never returns; a late answer cannot extend it.
    - An exception raised in the block propagates unchanged (also an ExceptionGroup of
      your own); a KeyboardInterrupt wins over a loss that happened at the same time.
    - However the block ends (normally, by an exception, cancelled from outside), the
      tenure ends, every task's guarded code under it exits, and then the Lease is
      released if ``release_on_exit``, so a follower takes over at once. The release is
      bounded by ``retry_period``.

    Inside a running :class:`Elector` for the same Lease, the Elector's campaign is reused
    (nothing is released on exit; the Elector decides) unless an option given here
    explicitly differs from the Elector's: ``identity``, ``store``, ``namespace`` or a
    timing. Then this is a separate candidate with its own campaign, as if in another
    replica. Timings left as None are client-go's defaults (15, 10 and 2 s), or the reused
    Elector's.

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
    options = ElectionOptions.build(
        lease,
        namespace=namespace,
        identity=identity,
        lease_duration=LEASE_DURATION if lease_duration is None else lease_duration,
        renew_deadline=RENEW_DEADLINE if renew_deadline is None else renew_deadline,
        retry_period=RETRY_PERIOD if retry_period is None else retry_period,
        release_on_exit=release_on_exit,
    )
    check_store(store)
    elector = reusable_elector(
        Given(options.lease, namespace, identity, store, lease_duration, renew_deadline, retry_period)
    )
    if elector is not None:
        async with elector.leading() as lead:
            yield lead
        return
    candidate = Elector(
        options.lease,
        namespace=options.namespace,
        identity=options.identity,
        lease_duration=options.lease_duration,
        renew_deadline=options.renew_deadline,
        retry_period=options.retry_period,
        store=store,
        release_on_exit=release_on_exit,
        record_events=record_events,
    )
    async with candidate, candidate.leading() as lead:
        yield lead


@overload
def only_when_leading(fn: Callable[P, Awaitable[R]], /) -> Callable[P, Awaitable[R | None]]: ...


@overload
def only_when_leading(
    *,
    lease: str | None = None,
    namespace: str | None = None,
    identity: str | None = None,
    lease_duration: float | None = None,
    renew_deadline: float | None = None,
    retry_period: float | None = None,
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
    lease_duration: float | None = None,
    renew_deadline: float | None = None,
    retry_period: float | None = None,
    store: LeaseStore | None = None,
    release_on_exit: bool = False,
) -> Callable[P, Awaitable[R | None]] | Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R | None]]]:
    """Run an async function only on the leader; on every other replica the call returns None.

    For periodic jobs scheduled on every replica. Two forms:

    ``@only_when_leading(lease="nightly-cleanup", ...)`` decides per call, promptly: it
    reads the Lease and, when another candidate holds it and it has not expired, returns
    None at once without waiting. Otherwise it takes the Lease and runs the function
    guarded exactly like a :func:`leadership` block: renewed in the background, cancelled
    on loss, which raises :class:`LeadershipLost`. Every call returns None, a result, or
    raises within ``renew_deadline + retry_period`` plus the function's run time.

    - **No overlapping calls**: while a call of the function runs in this process, another
      call returns None at once, as on a follower. A scheduler that fires the next tick
      while the last one still runs does not run the job twice (and the running call's
      fencing token stays current).
    - The function keeps one identity across its calls (generated once, at decoration).
    - ``release_on_exit`` defaults to **False** here (unlike :func:`leadership`): the
      leader keeps the Lease between calls and takes it again on its next call without
      waiting. Were it released after each call, a replica whose schedule is offset by a
      few seconds would find it free and run the same tick a second time. Pass
      ``release_on_exit=True`` for jobs where that is harmless and a fast takeover matters.
    - A holder that crashed does not block the job forever: each replica remembers, across
      calls, since when it has seen the Lease unchanged (on its monotonic clock), and takes
      it over at the first call after lease_duration of silence. With calls every T
      seconds that is within lease_duration + T of the crash.
    - A running :class:`Elector` for the same Lease is reused (no API call per call) unless
      an option given here explicitly differs from it, as for :func:`leadership`.

    Bare ``@only_when_leading`` (or with ``lease`` omitted) follows the innermost running
    :class:`Elector` in the calling context (the one entered last, in this task or the task
    that started it), making no API call per invocation: it runs the function guarded if
    that Elector leads, else returns None. Called outside any running Elector, it raises
    :class:`NoActiveElector`.

    Example::

        @only_when_leading(lease="nightly-cleanup")
        async def cleanup() -> int:
            return await delete_expired_rows()

        removed = await cleanup()   # None on replicas that don't lead

    Raises:
        LeadershipLost: leadership ended while the function ran.
        StoreUnavailable: the API server could not be reached to decide (lease form).
        NoActiveElector: the bare form was called outside any Elector.
        ConfigurationError: an option is invalid (raised at decoration).
    """
    if fn is not None:
        return _follow_elector(fn)
    if lease is None:
        if any(
            value is not None for value in (namespace, identity, store, lease_duration, renew_deadline, retry_period)
        ):
            raise ConfigurationError(
                "only_when_leading: options were given without lease=...; name the lease, or use the bare "
                "@only_when_leading, which follows a running Elector and takes its options"
            )
        return _follow_elector
    options = ElectionOptions.build(
        lease,
        namespace=namespace,
        identity=default_identity() if identity is None else identity,
        lease_duration=LEASE_DURATION if lease_duration is None else lease_duration,
        renew_deadline=RENEW_DEADLINE if renew_deadline is None else renew_deadline,
        retry_period=RETRY_PERIOD if retry_period is None else retry_period,
        release_on_exit=release_on_exit,
    )
    job = Job(options, check_store(store))
    given = Given(options.lease, namespace, identity, store, lease_duration, renew_deadline, retry_period)

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R | None]]:
        @functools.wraps(fn)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R | None:
            return await job.call(reusable_elector(given), fn, *args, **kwargs)

        guarded.identity = options.identity  # type: ignore[attr-defined]
        return guarded

    return decorate


def _follow_elector(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R | None]]:
    @functools.wraps(fn)
    async def guarded(*args: P.args, **kwargs: P.kwargs) -> R | None:
        electors = running_electors()
        if not electors:
            raise NoActiveElector(
                f"{fn.__qualname__} is decorated with a bare @only_when_leading, which follows a running "
                "Elector, but none runs here. Call it inside `async with Elector(lease=...)` (in that "
                'task or a task started inside it), or name a lease: @only_when_leading(lease="my-job").'
            )
        return await call_in_elector(electors[0], guarded, fn, *args, **kwargs)

    return guarded
