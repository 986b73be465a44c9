"""A tenure: one continuous period of leadership, its hard deadline, and the scopes it guards.

Every guarded scope (a ``leadership()`` block, an ``Elector.leading()`` block, a decorated
call) is a trio cancel scope attached to the tenure it runs under. The tenure decides
when they stop, in one of two ways and nowhere else:

- its deadline: the send time of the last successful write plus ``renew_deadline``, set as
  every scope's cancel-scope deadline, so trio ends the scopes by itself even when the
  task renewing the Lease is stuck in a request that never returns;
- :meth:`Tenure.end`: the campaign saw the Lease taken, cleared or deleted, a renewal
  failed for good, we stepped down, or the Elector is exiting. Every scope is cancelled
  at once.

A tenure that has ended never starts again: a new one has a new term.
"""

from __future__ import annotations

import trio

from ._clock import Clock
from ._errors import LeadershipLost


class Tenure:
    """One period of leadership under one term (fencing token)."""

    def __init__(
        self,
        *,
        lease: str,
        namespace: str,
        identity: str,
        term: int,
        acquire_time: str,
        sent_at: float,
        renew_deadline: float,
        clock: Clock,
    ) -> None:
        self.lease, self.namespace, self.identity = lease, namespace, identity
        self.term = term
        self.acquire_time = acquire_time
        self.renew_deadline = renew_deadline
        self.clock = clock
        self.sent_at = sent_at
        self.deadline = sent_at + renew_deadline
        self.end_reason: str | None = None
        self.end_cause: BaseException | None = None
        self.renewal_failure: BaseException | None = None
        """Why the last renewal attempt failed, if it did: the cause of a loss at the deadline."""
        self.ended = trio.Event()
        self._scopes: set[trio.CancelScope] = set()
        self._no_scopes = trio.Event()
        self._no_scopes.set()

    @property
    def over(self) -> bool:
        """Ended, or past its deadline (which the campaign may not have noticed yet)."""
        return self.end_reason is not None or self.clock.now() >= self.deadline

    def extend(self, sent_at: float) -> bool:
        """A write sent at ``sent_at`` succeeded: move the deadline to ``sent_at + renew_deadline``.

        False, and nothing moves, when the tenure is already over: an answer that arrives
        after the deadline cannot revive it.
        """
        if self.over:
            return False
        self.sent_at = max(self.sent_at, sent_at)
        self.deadline = self.sent_at + self.renew_deadline
        for scope in self._scopes:
            scope.deadline = self.clock.at(self.deadline)
        return True

    def end(self, reason: str, cause: BaseException | None = None) -> bool:
        """End the tenure and cancel every guarded scope now; False if it had ended already."""
        if self.end_reason is not None:
            return False
        self.end_reason = reason
        self.end_cause = cause
        for scope in self._scopes:
            scope.cancel()
        self.ended.set()
        return True

    def attach(self, scope: trio.CancelScope) -> None:
        """Guard ``scope`` by this tenure: its deadline, and cancelled if the tenure is over."""
        scope.deadline = self.clock.at(self.deadline)
        if self.end_reason is not None:
            scope.cancel()
        self._scopes.add(scope)
        self._no_scopes = trio.Event()

    def detach(self, scope: trio.CancelScope) -> None:
        self._scopes.discard(scope)
        if not self._scopes:
            self._no_scopes.set()

    @property
    def guarding(self) -> bool:
        """Some guarded scope is still attached (its code has not exited yet)."""
        return bool(self._scopes)

    async def guards_exited(self) -> bool:
        """Wait until every guarded scope has exited, at most until the deadline; True if
        they all exited.

        Past the deadline trio has cancelled them all; a scope still running then is stuck
        in code that never reaches a checkpoint, and the caller must not hand the Lease
        over by releasing it (it expires instead).
        """
        with trio.move_on_at(self.clock.at(self.deadline)):
            await self._no_scopes.wait()
        return not self._scopes

    @property
    def expired_reason(self) -> str:
        """Why the tenure ended when its deadline passed."""
        return f"no renewal succeeded within renew_deadline ({self.renew_deadline:g}s) of the last one sent"

    def error(self) -> LeadershipLost:
        """The LeadershipLost raised from a guarded scope this tenure stopped (trio may
        cancel a scope at the deadline before the campaign has noticed that it passed)."""
        reason = self.end_reason or self.expired_reason
        error = LeadershipLost(
            lease=self.lease, namespace=self.namespace, identity=self.identity, term=self.term, reason=reason
        )
        error.__cause__ = self.end_cause or (self.renewal_failure if self.end_reason is None else None)
        return error
