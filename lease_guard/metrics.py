"""Prometheus metrics for an Elector (optional extra: ``pip install lease-guard[metrics]``).

Names follow client-go where it has one:

- ``leader_election_master_status{name, namespace}``: 1 while this process leads the Lease,
  else 0 (client-go's gauge of the same name, which labels only ``name``);
- ``lease_guard_leadership_transitions_total{name, namespace, kind}``: tenures started and
  stopped; a tenure already held when :func:`instrument` starts counts as started, so
  while it runs ``started - stopped`` equals the gauge;
- ``lease_guard_renewal_seconds{name, namespace}``: round-trip time of successful renewals.

Every series carries the Lease's namespace as well as its name: one process may lead
Leases of the same name in several namespaces.

Run :func:`instrument` beside the Elector::

    async with Elector("my-operator") as elector, trio.open_nursery() as nursery:
        nursery.start_soon(instrument, elector)
        prometheus_client.start_http_server(9100)
"""

from __future__ import annotations

import trio
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from ._elector import Elector
from ._events import EventKind


class Metrics:
    """The collectors, registered once per registry."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.master_status = Gauge(
            "leader_election_master_status",
            "1 while this process leads the lease, else 0.",
            ["name", "namespace"],
            registry=registry,
        )
        self.transitions = Counter(
            "lease_guard_leadership_transitions",
            "Tenures started and stopped by this process.",
            ["name", "namespace", "kind"],
            registry=registry,
        )
        self.renewal_seconds = Histogram(
            "lease_guard_renewal_seconds",
            "Round-trip time of successful lease renewals.",
            ["name", "namespace"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )


_default: Metrics | None = None


async def instrument(elector: Elector, metrics: Metrics | None = None) -> None:
    """Keep the metrics of ``elector`` current until cancelled or the Elector stops.

    Example::

        nursery.start_soon(instrument, elector)
    """
    global _default
    if metrics is None:
        if _default is None:
            _default = Metrics()
        metrics = _default
    series = {"name": elector.lease, "namespace": elector.namespace}
    status = metrics.master_status.labels(**series)
    latency = metrics.renewal_seconds.labels(**series)
    started = metrics.transitions.labels(**series, kind="started")
    stopped = metrics.transitions.labels(**series, kind="stopped")
    stop_observing = elector._observe_renewals(latency.observe)
    events = elector.events()
    try:
        # The first event is the state now: a tenure already under way counts as started,
        # so that its end, counted as stopped, leaves started - stopped equal to the gauge.
        async for event in events:
            if event.kind is EventKind.STARTED_LEADING:
                status.set(1)
                started.inc()
            elif event.kind is EventKind.STOPPED_LEADING:
                status.set(0)
                stopped.inc()
            elif not elector.is_leader:
                status.set(0)
    finally:
        stop_observing()
        with trio.CancelScope(shield=True):
            await events.aclose()
        status.set(0)
