"""The exception hierarchy: everything lease_guard raises derives from LeaseGuardError."""

from __future__ import annotations


class LeaseGuardError(Exception):
    """Base class of every error lease_guard raises on purpose."""


class ConfigurationError(LeaseGuardError, ValueError):
    """An option is invalid; the message says which one and what to change."""


class LeadershipLost(LeaseGuardError):
    """The guarded code was cancelled because leadership could no longer be trusted.

    Raised by the ``async with`` of :func:`~lease_guard.leadership` (and by a call of an
    :func:`~lease_guard.only_when_leading` function) when the lease was taken by someone
    else, could not be renewed before the renew deadline, was deleted, or was
    given up with :meth:`~lease_guard.Elector.step_down`.

    Attributes:
        lease: the Lease's name.
        namespace: the Lease's namespace.
        identity: our holder identity during the lost tenure.
        term: the fencing token of the lost tenure.
        reason: a sentence saying why leadership ended.
    """

    def __init__(self, *, lease: str, namespace: str, identity: str, term: int, reason: str) -> None:
        super().__init__(f"lost leadership of lease {namespace}/{lease} (term {term}) as {identity!r}: {reason}")
        self.lease = lease
        self.namespace = namespace
        self.identity = identity
        self.term = term
        self.reason = reason


class NoActiveElector(LeaseGuardError, RuntimeError):
    """A bare ``@only_when_leading`` function was called outside any running Elector."""


class LeaseStoreError(LeaseGuardError):
    """A lease store could not carry out a request."""


class LeaseConflict(LeaseStoreError):
    """An optimistic write lost: the Lease changed since it was read (HTTP 409).

    Stores raise it for a create of a Lease that exists and for an update whose
    resourceVersion is stale. The campaign re-reads and decides again; it never
    takes a conflict for success.
    """


class LeaseNotFound(LeaseStoreError):
    """The Lease was deleted between a read and a write (HTTP 404 on update)."""


class NamespaceNotFound(LeaseStoreError):
    """The namespace the Lease should live in does not exist (HTTP 404 on create)."""


class PermissionDenied(LeaseStoreError):
    """The API server refused a request (HTTP 401 or 403); the message names the RBAC rule to add."""


class StoreUnavailable(LeaseStoreError):
    """A transient failure: the server is unreachable, overloaded (429) or failing (5xx).

    The campaign retries these within its timing budget.

    Attributes:
        retry_after: seconds the server asked us to wait (``Retry-After``), if it said.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
