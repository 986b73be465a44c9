"""The candidate's clock: trio's monotonic clock, read in one place.

Every time a campaign keeps (observations, deadlines, pauses) is read from a ``Clock``;
``at`` turns such a time into a trio deadline. Production uses :class:`TrioClock`. The
reliability tests give each candidate a clock that runs at another rate, to check the
clock-rate drift bound; that is why the campaign takes a clock instead of calling
``trio.current_time()`` itself.
"""

from __future__ import annotations

from typing import Protocol

import trio


class Clock(Protocol):
    def now(self) -> float:
        """The candidate's local monotonic time, in seconds."""
        ...

    def at(self, local: float) -> float:
        """The trio time at which :meth:`now` reaches ``local`` (never earlier)."""
        ...


class TrioClock:
    """trio's own clock: ``now()`` is ``trio.current_time()``, and ``at`` the identity."""

    def now(self) -> float:
        return trio.current_time()

    def at(self, local: float) -> float:
        return local
