"""Waiting out transient store failures: jittered backoff, and logs that neither flood nor hide.

Small on purpose, to keep the core's dependencies to trio and lightkube.
"""

from __future__ import annotations

import logging
import random

logger = logging.getLogger("lease_guard")


class Backoff:
    """Exponential backoff with jitter: ``initial * 2**n``, capped, times a factor in [0.5, 1].

    The jitter spreads out replicas that failed together (an API-server restart), so they
    do not all come back in the same instant. A ``Retry-After`` the server sent is honoured
    as a lower bound.

    >>> backoff = Backoff(initial=1.0, cap=8.0)
    >>> all(0.5 <= backoff.next() <= 1.0 for _ in range(1))
    True
    >>> [backoff.next() <= 8.0 for _ in range(10)][-1]
    True
    """

    def __init__(self, *, initial: float, cap: float) -> None:
        self.initial = initial
        self.cap = cap
        self._attempt = 0

    def next(self, retry_after: float | None = None) -> float:
        """The pause before the next attempt."""
        delay = min(self.cap, self.initial * 2**self._attempt) * random.uniform(0.5, 1.0)
        self._attempt = min(self._attempt + 1, 32)
        return float(max(delay, retry_after or 0.0))

    def reset(self) -> None:
        self._attempt = 0


class OutageLog:
    """Logs a stretch of failures at WARNING: the first with its cause, then one every
    ``every`` seconds with how long it has lasted, and at INFO when it is over."""

    def __init__(self, what: str, *, every: float = 60.0) -> None:
        self.what = what
        self.every = every
        self._since: float | None = None
        self._logged_at = 0.0
        self._failures = 0

    def failed(self, now: float, cause: BaseException) -> None:
        self._failures += 1
        if self._since is None:
            self._since = self._logged_at = now
            logger.warning("%s failed, retrying: %s", self.what, cause)
        elif now - self._logged_at >= self.every:
            self._logged_at = now
            logger.warning(
                "%s still failing after %.0fs (%d attempts), retrying: %s",
                self.what,
                now - self._since,
                self._failures,
                cause,
            )

    def succeeded(self, now: float) -> None:
        if self._since is not None:
            logger.info("%s succeeded again after %.1fs of failures", self.what, now - self._since)
        self._since = None
        self._failures = 0
