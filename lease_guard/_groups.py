"""Unwrap the ExceptionGroup a nursery puts around the one exception that matters."""

from __future__ import annotations

from collections.abc import Iterator

import trio


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc


def single_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The exception to raise in place of ``group``, or None to keep the group.

    A nursery wraps whatever crosses it, so the user's own exception from a guarded
    block (or our LeadershipLost) arrives in a group, often beside the Cancelled of the
    tasks it stopped. When exactly one leaf is not a Cancelled, that leaf is what
    happened; the Cancelled beside it is only its echo. Likewise a store error beside
    the LeadershipLost it caused is already told by that LeadershipLost.
    """
    leaves = list(_leaves(group))
    causes = {id(exc.__cause__) for exc in leaves if exc.__cause__ is not None}
    meaningful = [exc for exc in leaves if not isinstance(exc, trio.Cancelled) and id(exc) not in causes]
    if len(meaningful) == 1:
        return meaningful[0]
    if not meaningful and leaves:
        return leaves[0]
    return None


def reraise(exc: BaseException) -> None:
    """Raise ``exc`` from inside an ``except`` clause without chaining it to the group."""
    context, cause, suppress = exc.__context__, exc.__cause__, exc.__suppress_context__
    try:
        raise exc
    finally:
        exc.__context__, exc.__cause__, exc.__suppress_context__ = context, cause, suppress
        del exc
