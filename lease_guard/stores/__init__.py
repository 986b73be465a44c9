"""Where Leases live: the LeaseStore protocol and its two implementations.

``KubernetesLeaseStore`` is imported lazily, so code that only uses the in-memory store
(users' tests) does not pay for lightkube's import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._protocol import LeaseStore
from .memory import MemoryLeaseStore

if TYPE_CHECKING:
    from .kubernetes import KubernetesLeaseStore

__all__ = ["KubernetesLeaseStore", "LeaseStore", "MemoryLeaseStore"]


def __getattr__(name: str) -> Any:
    if name == "KubernetesLeaseStore":
        from .kubernetes import KubernetesLeaseStore

        return KubernetesLeaseStore
    raise AttributeError(name)
