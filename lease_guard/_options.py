"""Election options: the timing defaults, their validation, and the default identity.

This module is the one source of truth for the timing defaults (client-go's) and for the
DNS-1123 checks of lease and namespace names.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._errors import ConfigurationError
from ._record import INT32_MAX

if TYPE_CHECKING:
    from .stores._protocol import LeaseStore

LEASE_DURATION = 15.0
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0

#: client-go's JitterFactor: retry_period * 1.2 must fit inside renew_deadline.
RETRY_JITTER = 1.2

#: The shortest retry_period accepted: a shorter one would flood the API server with writes.
MIN_RETRY_PERIOD = 0.01

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*")
_DNS1123_LABEL_RE = re.compile(_DNS1123_LABEL)


def check_lease_name(name: object) -> str:
    """Return ``name`` if it is a valid Lease name (a DNS-1123 subdomain), else raise.

    >>> check_lease_name("my-operator")
    'my-operator'
    """
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"lease must be a non-empty string, got {name!r}")
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(name):
        raise ConfigurationError(
            f"lease {name!r} is not a valid Lease name: use at most 253 lower-case letters, digits, "
            "'-' and '.', starting and ending with a letter or digit (a DNS-1123 subdomain), "
            "for example 'my-operator'"
        )
    return name


def check_namespace(namespace: object) -> str:
    """Return ``namespace`` if it is a valid namespace name (a DNS-1123 label), else raise."""
    if not isinstance(namespace, str) or len(namespace) > 63 or not _DNS1123_LABEL_RE.fullmatch(namespace):
        raise ConfigurationError(
            f"namespace {namespace!r} is not a valid namespace name: use at most 63 lower-case "
            "letters, digits and '-', starting and ending with a letter or digit"
        )
    return namespace


def default_identity() -> str:
    """A holder identity unique to this campaign: the pod (or host) name plus a random suffix.

    The suffix keeps two campaigns from sharing an identity by accident, which would let
    both believe they lead.

    >>> default_identity() != default_identity()
    True
    """
    host = os.environ.get("POD_NAME") or os.environ.get("HOSTNAME") or socket.gethostname() or "lease-guard"
    return f"{host}_{secrets.token_hex(4)}"


def check_store(store: object) -> LeaseStore | None:
    """Return ``store`` if it is None (the default store) or implements the LeaseStore protocol."""
    from .stores._protocol import LeaseStore

    if store is not None and not isinstance(store, LeaseStore):
        raise ConfigurationError(
            f"store must implement the LeaseStore protocol (default_namespace, get, create, update, watch), "
            f"got {type(store).__name__}: pass a KubernetesLeaseStore, a MemoryLeaseStore, or leave it out "
            "for the default Kubernetes store"
        )
    return store


@dataclass(frozen=True)
class ElectionOptions:
    """Validated options shared by leadership(), only_when_leading and Elector."""

    lease: str
    namespace: str | None
    identity: str
    lease_duration: float
    renew_deadline: float
    retry_period: float
    release_on_exit: bool

    @classmethod
    def build(
        cls,
        lease: object,
        *,
        namespace: object = None,
        identity: object = None,
        lease_duration: object = LEASE_DURATION,
        renew_deadline: object = RENEW_DEADLINE,
        retry_period: object = RETRY_PERIOD,
        release_on_exit: bool = True,
    ) -> ElectionOptions:
        """Validate the user's options; raise ConfigurationError naming what to change."""
        lease = check_lease_name(lease)
        if namespace is not None:
            namespace = check_namespace(namespace)
        if identity is None:
            identity = default_identity()
        if not isinstance(identity, str) or not identity.strip():
            raise ConfigurationError(
                f"identity must be a non-empty string, got {identity!r}: pass a name unique to this replica, "
                "or leave it out for the pod or host name plus a random suffix"
            )
        if len(identity) > 1024 or identity != identity.strip():
            raise ConfigurationError(
                f"identity {identity!r} must be at most 1024 characters without leading or trailing spaces"
            )
        timings = {}
        for option, value in (
            ("lease_duration", lease_duration),
            ("renew_deadline", renew_deadline),
            ("retry_period", retry_period),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ConfigurationError(f"{option} must be a positive number of seconds, got {value!r}")
            timings[option] = float(value)
        if timings["retry_period"] < MIN_RETRY_PERIOD:
            raise ConfigurationError(
                f"retry_period must be at least {MIN_RETRY_PERIOD:g} seconds, got {timings['retry_period']!r}: "
                "every candidate writes the Lease once per retry_period, so a shorter one floods the API server"
            )
        if timings["lease_duration"] > INT32_MAX:
            raise ConfigurationError(f"lease_duration must be at most {INT32_MAX} seconds")
        if not timings["renew_deadline"] < timings["lease_duration"]:
            raise ConfigurationError(
                f"renew_deadline ({timings['renew_deadline']:g}s) must be less than lease_duration "
                f"({timings['lease_duration']:g}s): lower renew_deadline or raise lease_duration. "
                "The gap is the margin that keeps two leaders from overlapping."
            )
        if not timings["retry_period"] * RETRY_JITTER < timings["renew_deadline"]:
            raise ConfigurationError(
                f"retry_period * {RETRY_JITTER} ({timings['retry_period'] * RETRY_JITTER:g}s) must be less "
                f"than renew_deadline ({timings['renew_deadline']:g}s): lower retry_period or raise "
                "renew_deadline, so a failed renewal can be retried before the deadline"
            )
        return cls(
            lease=lease,
            namespace=namespace,
            identity=identity,
            release_on_exit=bool(release_on_exit),
            **timings,
        )

    @property
    def lease_duration_seconds(self) -> int:
        """The whole seconds written to the Lease, rounded up so followers never wait too little."""
        return math.ceil(self.lease_duration)
