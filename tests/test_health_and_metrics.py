"""Liveness health and Prometheus metrics of an Elector."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest
import trio
import trio.testing
from prometheus_client import CollectorRegistry

from lease_guard import Elector, EventKind, LeadershipEvent, MemoryLeaseStore, PermissionDenied
from lease_guard.health import health_status, serve_health
from lease_guard.metrics import Metrics, instrument

from .faults import FaultyStore

LEASE = "jobs"


async def test_health_is_ok_while_following_and_while_renewing(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryLeaseStore()
    store.steal(LEASE, "other")
    async with Elector(LEASE, store=store) as elector:
        assert health_status(elector) == (200, "ok: following\n")
        await elector.wait_leading()
        await trio.sleep(100)
        assert health_status(elector) == (200, "ok: leading\n")


async def test_health_fails_once_a_permanent_error_has_stopped_the_elector(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = FaultyStore(MemoryLeaseStore())
    elector = Elector(LEASE, identity="a", store=store)
    with pytest.raises(PermissionDenied):  # the application catches it and carries on
        async with elector:
            await elector.wait_leading()
            assert health_status(elector)[0] == 200
            store.errors.extend(PermissionDenied("403: RBAC rule removed") for _ in range(100))
            await trio.sleep_forever()
    assert health_status(elector) == (503, "unhealthy: the Elector for lease default/jobs is not running\n")


async def test_health_endpoint_answers_http() -> None:
    async with Elector(LEASE, store=MemoryLeaseStore()) as elector, trio.open_nursery() as nursery:
        await elector.wait_leading()
        listeners = await nursery.start(serve_health, elector, 0, "127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        while chunk := await stream.receive_some():
            reply += chunk
        assert reply.startswith(b"HTTP/1.1 200 OK")
        assert reply.endswith(b"ok: leading\n")
        nursery.cancel_scope.cancel()


async def test_metrics_follow_leadership(autojump_clock: trio.testing.MockClock) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    store = MemoryLeaseStore()
    store.steal(LEASE, "previous")  # held for 15 s: leadership starts after instrument does

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"name": LEASE, "namespace": "default", **labels})

    async with Elector(LEASE, store=store) as elector, trio.open_nursery() as nursery:
        nursery.start_soon(instrument, elector, metrics)
        await trio.sleep(1)
        assert sample("leader_election_master_status") == 0
        await elector.wait_leading()
        await trio.sleep(5)
        assert sample("leader_election_master_status") == 1
        assert sample("lease_guard_leadership_transitions_total", kind="started") == 1
        assert sample("lease_guard_renewal_seconds_count") == 2
        store.steal(LEASE, "other")
        await trio.sleep(1)
        assert sample("leader_election_master_status") == 0
        assert sample("lease_guard_leadership_transitions_total", kind="stopped") == 1
        nursery.cancel_scope.cancel()


async def test_a_tenure_held_when_instrument_starts_is_counted(autojump_clock: trio.testing.MockClock) -> None:
    registry = CollectorRegistry()
    store = MemoryLeaseStore()

    def sample(name: str, **labels: str) -> float:
        value = registry.get_sample_value(name, {"name": LEASE, "namespace": "default", **labels})
        assert value is not None
        return value

    async with Elector(LEASE, store=store) as elector, trio.open_nursery() as nursery:
        await elector.wait_leading()
        nursery.start_soon(instrument, elector, Metrics(registry))
        await trio.sleep(1)
        assert sample("leader_election_master_status") == 1
        assert sample("lease_guard_leadership_transitions_total", kind="started") == 1
        store.steal(LEASE, "other")
        await trio.sleep(1)
        started = sample("lease_guard_leadership_transitions_total", kind="started")
        stopped = sample("lease_guard_leadership_transitions_total", kind="stopped")
        assert (started, stopped, sample("leader_election_master_status")) == (1, 1, 0)
        nursery.cancel_scope.cancel()


async def test_leases_of_one_name_in_two_namespaces_have_their_own_series(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    store = MemoryLeaseStore()
    store.steal(LEASE, "other", namespace="b")
    async with (
        Elector(LEASE, namespace="a", store=store) as in_a,
        Elector(LEASE, namespace="b", store=store) as in_b,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(instrument, in_a, metrics)
        nursery.start_soon(instrument, in_b, metrics)
        await in_a.wait_leading()
        await trio.sleep(1)
        status = "leader_election_master_status"
        assert registry.get_sample_value(status, {"name": LEASE, "namespace": "a"}) == 1
        assert registry.get_sample_value(status, {"name": LEASE, "namespace": "b"}) == 0
        nursery.cancel_scope.cancel()


class FakeEvents:
    def __init__(self) -> None:
        self.send, self.receive = trio.open_memory_channel[LeadershipEvent](10)
        self.closed = False

    def __aiter__(self) -> FakeEvents:
        return self

    async def __anext__(self) -> LeadershipEvent:
        return await self.receive.receive()

    async def aclose(self) -> None:
        self.closed = True


class FakeElector:
    """The interfaces instrument() uses, and nothing else."""

    lease, namespace, is_leader = LEASE, "ops", False

    def __init__(self) -> None:
        self.stream = FakeEvents()
        self.observers: list[Callable[[float], None]] = []

    def events(self) -> FakeEvents:
        return self.stream

    def _observe_renewals(self, observer: Callable[[float], None]) -> Callable[[], None]:
        self.observers.append(observer)
        return lambda: self.observers.remove(observer)


async def test_instrument_closes_its_subscription_and_stops_observing() -> None:
    elector = FakeElector()
    registry = CollectorRegistry()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(instrument, cast(Elector, elector), Metrics(registry))
        elector.stream.send.send_nowait(LeadershipEvent(EventKind.STARTED_LEADING, "me", 3))
        await trio.testing.wait_all_tasks_blocked()
        elector.observers[0](0.02)
        nursery.cancel_scope.cancel()
    assert elector.stream.closed
    assert elector.observers == []
    labels = {"name": LEASE, "namespace": "ops"}
    assert registry.get_sample_value("lease_guard_renewal_seconds_count", labels) == 1
    assert registry.get_sample_value("leader_election_master_status", labels) == 0
