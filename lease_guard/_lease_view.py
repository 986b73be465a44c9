"""What one candidate has seen of a Lease, and the rules decided from that alone.

Everything here is pure and synchronous: times are the candidate's own monotonic clock,
passed in by the caller, and nothing waits or talks to a store. That keeps each safety
rule in one place, readable in one screen and tested from tables (tests/test_lease_view.py):

- :meth:`LeaseView.takeable_at`: when this candidate may try to take the Lease;
- :meth:`LeaseView.tenure_end`: whether a newly observed state ends our own tenure;
- :meth:`LeaseView.is_ours`: whether a state is one this candidate wrote;
- :meth:`LeaseView.superseded`: whether the answer to our write is older than the news.

When a Lease becomes takeable
-----------------------------

A candidate may write itself in as holder only once the previous holder's guarded code
has certainly ended. It knows that in three ways, and no other:

1. **Silence.** A holder's guarded code ends at the latest ``renew_deadline`` after its
   last successful renewal was *sent*, and we *received* every state we saw after it was
   sent. So ``leaseDurationSeconds`` after we observed a holder's last change, its code
   has ended (within the clock-rate drift bound, see ``_campaign``).
   A Lease cleared or deleted by someone other than its holder (``kubectl delete``,
   client-go's release, ``lease-guard release --force``, perhaps while the holder was cut
   off from the API server) counts its silence the same way, from the last change we saw:
   every holder's last renewal came before that change, also holders a watch skipped, so
   the last holder we did see proves nothing. The wait is the longer of our
   lease_duration and the last holder's stated one.
2. **The holder's own release.** A lease_guard holder releases only after all its guarded
   scopes have exited, and writes its identity into ``released_by`` in the same
   resourceVersion-conditioned write that clears the holder. A free Lease carrying that
   proof is taken at once (the millisecond handover). Our own tenure cleared by someone
   else is no exception: others may have held the Lease since, unseen (after a deletion
   even the term starts again at 0).
3. **Nothing to wait for.** The first state we ever saw is "no Lease", and no candidate of
   this process has seen it exist (``seen_before``): the first candidate of a new
   deployment leads at once. (A Lease created and deleted before this process first looked,
   while its holder was cut off, is the one case we cannot see; the holder's fencing token
   still protects downstream systems. See docs/concepts.md.)

A state we wrote ourselves is takeable at once (renewing it is how we lead), except one a
re-create of ours may have made when its answer never came: that one only renew_deadline
after we stopped waiting for the answer, as if the create had been answered then.
"""

from __future__ import annotations

import collections
import math

from ._record import INT32_MAX, LeaseRecord, LeaseSpec

#: How many of our own recent writes we remember, to recognise their echoes on the watch.
REMEMBERED_WRITES = 32


class LeaseView:
    """One candidate's knowledge of one Lease: the last state, when it was seen, what we wrote.

    >>> view = LeaseView("me", lease_duration=15.0)
    >>> view.observe(None, now=0.0)
    True
    >>> view.takeable_at()        # no Lease, nobody seen: take it now
    -inf
    """

    def __init__(self, identity: str, lease_duration: float, *, seen_before: bool = False) -> None:
        self.identity = identity
        self.lease_duration = lease_duration
        self.seen_before = seen_before
        """Another candidate of this process has seen the Lease exist (so "absent" is news)."""
        self.read = False
        self.record: LeaseRecord | None = None
        self.changed_at = -math.inf
        self.held_for = 0.0
        """The stated leaseDurationSeconds of the last holder we saw, until its own release."""
        self.first_state_absent = False
        self.changes = 0
        """How many new states have been observed: tells a write's answer from later news."""
        self.ours_takeable_from = -math.inf
        """When a state of ours may be taken: a re-create whose answer never came may have
        made one, to be led only renew_deadline after it (see ``Campaign.acquire``)."""
        self._written_versions: collections.deque[str] = collections.deque(maxlen=REMEMBERED_WRITES)
        self._sent_specs: collections.deque[LeaseSpec] = collections.deque(maxlen=REMEMBERED_WRITES)

    # -- what we wrote ---------------------------------------------------------------------

    def sending(self, spec: LeaseSpec) -> None:
        """Remember a write before it is sent: its echo may arrive before its answer."""
        self._sent_specs.append(spec)

    def written(self, record: LeaseRecord) -> None:
        """Remember the version a write of ours produced."""
        self._written_versions.append(record.resource_version)

    def unanswered_create(self, takeable_from: float) -> None:
        """A create of ours went unanswered: a state of ours is takeable from ``takeable_from``."""
        self.ours_takeable_from = max(self.ours_takeable_from, takeable_from)

    def is_ours(self, record: LeaseRecord | None) -> bool:
        """The state is one this candidate wrote (not merely one naming our identity)."""
        return record is not None and (
            record.resource_version in self._written_versions or record.spec in self._sent_specs
        )

    def holding(self, record: LeaseRecord | None) -> bool:
        """The state names us as holder, and we wrote it (a duplicate identity does not count)."""
        return record is not None and record.holder == self.identity and self.is_ours(record)

    # -- what we saw -----------------------------------------------------------------------

    @property
    def leader(self) -> str | None:
        """The holder in the last state seen; None when free or absent."""
        return self.record.holder if self.record is not None else None

    def duration(self, record: LeaseRecord) -> float:
        """The silence after which ``record``'s holder has certainly stopped: its own stated
        leaseDurationSeconds, or ours when it states none (or nonsense, from other stores)."""
        seconds = record.spec.lease_duration_seconds
        return float(seconds) if seconds is not None and seconds > 0 else self.lease_duration

    def observe(self, record: LeaseRecord | None, now: float) -> bool:
        """Take in a state of the Lease seen at ``now``; False when it is the one we already had."""
        version = record.resource_version if record is not None else None
        if self.read and version == (self.record.resource_version if self.record is not None else None):
            return False
        if not self.read:
            self.first_state_absent = record is None and not self.seen_before
        self.read = True
        self.changes += 1
        self.record = record
        self.changed_at = now
        if record is not None and record.holder is not None:
            self.held_for = self.duration(record)
        elif record is not None and record.spec.released_by:
            self.held_for = 0.0  # the holder's own release: its guarded code has ended
        if record is not None:
            self.first_state_absent = False
        return True

    def superseded(self, answer: LeaseRecord, changes_when_sent: int) -> bool:
        """Whether the answer to our successful write is already old news.

        Our write was conditioned on the state we had seen, so nothing was written between
        that state and ours: any state observed since the write was sent that is not our
        write itself came *after* it (the watch delivers in order). Taking in the answer
        then would put an older state over a newer one, say our acquire over the steal
        that followed it.
        """
        return self.changes != changes_when_sent and (
            self.record is None or self.record.resource_version != answer.resource_version
        )

    # -- the rules -------------------------------------------------------------------------

    def takeable_at(self) -> float:
        """When this candidate may next try to take the Lease, on its clock: ``-inf`` for now,
        ``inf`` for never (until the Lease changes). See the module docstring."""
        record = self.record
        if record is not None and record.transitions >= INT32_MAX:
            return math.inf  # no larger fencing token exists
        if record is not None and record.holder is not None:
            if self.holding(record):
                return self.ours_takeable_from
            return self.changed_at + self.duration(record)
        if record is not None and record.spec.released_by:
            return -math.inf
        if record is None and self.first_state_absent:
            return -math.inf
        return self.changed_at + max(self.lease_duration, self.held_for)

    def tenure_end(self, record: LeaseRecord | None) -> str | None:
        """Why ``record``, newly seen while we lead, ends our tenure; None if it does not."""
        if record is None:
            return "the Lease was deleted"
        if record.holder != self.identity:
            return f"{record.holder!r} took the lease" if record.holder else "someone else cleared the holder"
        if not self.is_ours(record):
            return f"another process is writing the lease as {self.identity!r} (duplicate identity)"
        return None
