"""LeaseRecord and LeaseSpec: what a store reads and writes, independent of any client library.

The wall-clock times in a Lease are for people and for other clients. lease_guard writes
them in the exact format the API server's MicroTime accepts and never reads them back to
make a decision: expiry is judged on the local monotonic clock (see ``_campaign``).
They are kept as the strings the server returned, so a value another client wrote in an
unusual format can never break a campaign.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

#: The largest value of an int32 field such as leaseTransitions and leaseDurationSeconds.
INT32_MAX = 2**31 - 1


def micro_time(moment: datetime.datetime | None = None) -> str:
    """Format a time as the API server's MicroTime: RFC 3339, UTC, always six fraction digits.

    The six digits matter: the server parses MicroTime with a fixed ``.000000`` layout, and
    encoders that drop a zero fraction (``...T10:00:00Z``) produce a Lease it rejects.

    >>> micro_time(datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc))
    '2026-01-02T03:04:05.000000Z'
    """
    moment = moment or datetime.datetime.now(datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> datetime.datetime | None:
    """Parse a Lease time for display; None when absent or unparseable (never raises).

    >>> parse_time("2026-01-02T03:04:05.5Z").second
    5
    >>> parse_time("yesterday") is None
    True
    """
    if not text:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed


@dataclass(frozen=True)
class LeaseSpec:
    """The fields lease_guard writes; ``None`` leaves a field out.

    ``released_by`` is the release proof: a holder that gives the Lease up itself, after
    all of its guarded code has exited, writes its own identity here (under the
    resourceVersion precondition, like every write) together with an empty holder. A
    follower takes a released Lease at once only with this proof; a holder cleared by
    anyone else (``kubectl delete``, client-go's release, ``lease-guard release --force``)
    is taken only after lease_duration of silence since that change was seen, since
    the old holder's guarded code may still be running. On Kubernetes it is the
    annotation ``lease-guard.io/released-by``; every acquisition and renewal removes it.
    """

    holder: str | None
    lease_duration_seconds: int | None
    acquire_time: str | None
    renew_time: str | None
    lease_transitions: int | None
    released_by: str | None = None


@dataclass(frozen=True)
class LeaseRecord:
    """A Lease as read from a store, with the spec fields exactly as they were found.

    Attributes:
        namespace, name: where the Lease lives.
        resource_version: the opaque version every optimistic write is conditioned on.
        spec: the spec fields; any may be None when the Lease was written by another
            client that left them out.
        source: the store's own object for this version (opaque to the campaign).
    """

    namespace: str
    name: str
    resource_version: str
    spec: LeaseSpec
    source: Any = field(default=None, compare=False, repr=False)
    """The object as the store read it (for Kubernetes, the Lease), so that an update edits
    it and keeps what lease_guard does not own: labels, annotations, ownerReferences,
    finalizers, other spec fields."""

    @property
    def holder(self) -> str | None:
        """The holder identity; an empty string counts as no holder."""
        return self.spec.holder or None

    @property
    def transitions(self) -> int:
        """leaseTransitions, with an absent or negative value read as 0."""
        value = self.spec.lease_transitions
        return value if value is not None and value > 0 else 0
