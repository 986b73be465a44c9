"""Unwrap the ExceptionGroup a nursery puts around the one exception that matters.

An Elector runs its campaign in a nursery around the user's block, so whatever leaves
the block crosses that nursery and arrives wrapped in an ExceptionGroup. Users of an
``async with`` expect the block's own exception back, unchanged: only the nursery's one
layer is removed, never a group the user raised.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import NoReturn

import trio

logger = logging.getLogger("lease_guard")


def single_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The exception to raise in place of the nursery's ``group``, or None to keep the group.

    - A KeyboardInterrupt (or SystemExit) wins over everything else: the user asked to stop.
    - A Cancelled is only the echo of what cancelled the nursery; a store error that is the
      ``__cause__`` of another exception (LeadershipLost) is already told by it.
    - If exactly one exception remains, it is what happened, and is returned as it is,
      even when it is itself an ExceptionGroup the user's code raised.

    >>> single_exception(BaseExceptionGroup("", [ValueError("x")]))
    ValueError('x')
    >>> inner = ExceptionGroup("mine", [ValueError("a"), KeyError("b")])
    >>> single_exception(BaseExceptionGroup("", [inner])) is inner
    True
    """
    direct = list(group.exceptions)
    for exc in direct:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            return exc
    causes = {id(exc.__cause__) for exc in direct if exc.__cause__ is not None}
    meaningful = [exc for exc in direct if not isinstance(exc, trio.Cancelled) and id(exc) not in causes]
    if len(meaningful) == 1:
        return meaningful[0]
    if not meaningful and direct:
        return direct[0]
    return None


def raise_single(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Raise what :func:`single_exception` finds in ``group`` (else the group itself), keeping
    its own context and cause instead of chaining it to the group."""
    exc = single_exception(group)
    if exc is None:
        raise group
    context, cause, suppress = exc.__context__, exc.__cause__, exc.__suppress_context__
    try:
        raise exc
    finally:
        exc.__context__, exc.__cause__, exc.__suppress_context__ = context, cause, suppress
        del exc


def note_campaign_failure(body_error: BaseException, group: BaseExceptionGroup[BaseException], where: str) -> None:
    """The campaign failed as well as the block: keep the block's exception, and do not lose
    the campaign's. A LeadershipLost with no cause of its own gets the campaign's failure as
    its cause (the loss and the failure are one story); anything else is logged."""
    from ._errors import LeadershipLost

    failure = single_exception(group) or group
    if isinstance(body_error, LeadershipLost) and body_error.__cause__ is None:
        body_error.__cause__ = failure
    elif failure is not body_error.__cause__:
        logger.error("%s: the campaign failed too, while the block was raising %r: %r", where, body_error, failure)


class Background:
    """Stops a nursery's background tasks without cancelling the nursery itself.

    Cancelling ``nursery.cancel_scope`` while the block's own exception leaves would make
    that exception cross a cancelled scope, which rebuilds any ExceptionGroup it is (trio
    splits out the Cancelled), so a user's group would come back as a copy. Each
    background task runs in a scope of its own from :meth:`scope` instead.
    """

    def __init__(self) -> None:
        self._scopes: list[trio.CancelScope] = []
        self._cancelled = False

    def scope(self) -> trio.CancelScope:
        scope = trio.CancelScope()
        if self._cancelled:
            scope.cancel()
        self._scopes.append(scope)
        return scope

    async def run(self, task: Callable[[], Awaitable[object]]) -> None:
        """Run ``task`` until it returns or :meth:`cancel` is called."""
        with self.scope():
            await task()

    def cancel(self) -> None:
        self._cancelled = True
        for scope in self._scopes:
            scope.cancel()
