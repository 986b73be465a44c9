"""Where Leases live: the LeaseStore protocol and its two implementations."""

from __future__ import annotations

from ._protocol import AcquisitionGate, EventRecorder, LeaseStore
from .kubernetes import KubernetesLeaseStore, shared_store
from .memory import MemoryLeaseStore

__all__ = ["AcquisitionGate", "EventRecorder", "KubernetesLeaseStore", "LeaseStore", "MemoryLeaseStore", "shared_store"]
