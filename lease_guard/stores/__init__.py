"""Where Leases live: the LeaseStore protocol and its two implementations."""

from __future__ import annotations

from ._protocol import EventRecorder, LeaseStore
from .kubernetes import KubernetesLeaseStore
from .memory import MemoryLeaseStore

__all__ = ["EventRecorder", "KubernetesLeaseStore", "LeaseStore", "MemoryLeaseStore"]
